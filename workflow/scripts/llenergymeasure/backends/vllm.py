"""The `vllm` backend: vLLM's offline `LLM` API (CUDA only). NOT YET VERIFIED ON HARDWARE.

Random-weight models load with `load_format="dummy"` (vLLM initialises the weights itself,
so no checkpoint is read); a pretrained model loads its checkpoint (`load_format="auto"`).
Prompts are token ids; sampling is greedy with `ignore_eos` and `min_tokens = max_tokens`,
so every sequence gets exactly `new_tokens` tokens. Prefix caching is off: the measurement
repeats identical prompts, and cached prefixes would skip the prefill being measured.

What this backend cannot give, it leaves empty rather than estimating:
- per-token times: the offline API returns whole sequences, so `on_token` is never called
  (rows get no time-per-output-token percentiles; latency and throughput are still measured);
- peak memory: vLLM pre-allocates `gpu_memory_utilization` of the GPU for its KV cache in
  an engine process, so no counter in this process says what the workload used.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..manifest import VariantManifest
from ..variants import quants_for_backend
from .base import Backend, LoadInfo
from .pytorch_compiled import kv_room_tokens

FIRST_ORDINARY_TOKEN = 3  # ids below are the special tokens (unk, bos, eos) of our tokenizers


class VllmUnavailable(RuntimeError):
    """vLLM is not installed here, or this machine has no CUDA device."""


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise VllmUnavailable(
            f"the vllm backend needs vLLM, which is not importable here ({exc}); run it in envs/vllm.yaml "
            "(snakemake --sdm conda) on a CUDA machine, or remove vllm from the config's backends"
        ) from None
    return vllm


class VllmBackend(Backend):
    """Settings (backend_settings.vllm): max_new_tokens (KV room beyond the prompt, default 256),
    max_prompt_tokens (default 2048), gpu_memory_utilization (default 0.9), enforce_eager
    (default false: vLLM captures CUDA graphs), load_format (default: dummy for random weights)."""

    name = "vllm"
    supported_quants = tuple(quants_for_backend("vllm"))

    def __init__(self, settings: dict[str, Any] | None = None, device: str = "cuda"):
        super().__init__(settings, device)
        self.llm = None
        self.vocab_size = 0
        self.engine_settings: dict[str, Any] = {}
        self._version: str | None = None

    def load(self, variant: VariantManifest | dict[str, Any]) -> LoadInfo:
        variant = VariantManifest.coerce(variant)
        quant = variant.quant
        if quant not in self.supported_quants:
            raise ValueError(f"variant quant {quant!r}: vllm runs {', '.join(self.supported_quants)} only")
        if self.device != "cuda":
            raise VllmUnavailable(f"the vllm backend runs on CUDA only; this job's device is {self.device!r}")
        model_path = Path(variant.checkpoint_dir or variant.model_dir)
        config = json.loads((model_path / "config.json").read_text())
        self.vocab_size = int(config.get("vocab_size") or config.get("text_config", {})["vocab_size"])
        vllm = _import_vllm()
        self._version = vllm.__version__
        max_len = int(self.settings.get("max_prompt_tokens", 2048)) + kv_room_tokens(self.settings)
        dtype = variant.compute_dtype if variant.quant_method == "none" else "auto"
        self.engine_settings = {
            "model": str(model_path),
            "tokenizer": str(variant.model_dir),
            "dtype": dtype,
            "load_format": self.settings.get("load_format", "dummy" if variant.weights == "random" else "auto"),
            "seed": 0,
            "max_model_len": max_len,
            "gpu_memory_utilization": float(self.settings.get("gpu_memory_utilization", 0.9)),
            "enforce_eager": bool(self.settings.get("enforce_eager", False)),
            "tensor_parallel_size": int(self.settings.get("tensor_parallel_size", 1)),
            "enable_prefix_caching": False,
        }
        start = time.perf_counter()
        self.llm = vllm.LLM(**self.engine_settings)
        load_s = time.perf_counter() - start
        model_config = getattr(self.llm.llm_engine, "model_config", None)
        method = getattr(model_config, "quantization", None) or f"unquantised-{getattr(model_config, 'dtype', dtype)}"
        return LoadInfo(
            kernel_path=f"vllm:{method}",
            compute_dtype=str(variant.compute_dtype or dtype),
            weight_bytes_memory=None,  # not exposed by the offline API
            decompressed_at_load=False,
            load_s=load_s,  # includes vLLM's profiling run and CUDA-graph capture
            extra={"engine_settings": self.engine_settings},
        )

    def prepare_inputs(self, batch_size: int, prompt_tokens: int, seed: int) -> list[dict[str, list[int]]]:
        rng = np.random.default_rng(seed)
        ids = rng.integers(FIRST_ORDINARY_TOKEN, self.vocab_size, size=(batch_size, prompt_tokens))
        return [{"prompt_token_ids": [int(t) for t in row]} for row in ids]

    def generate(self, inputs: list[dict[str, list[int]]], new_tokens: int,
                 on_token: Callable[[], None] | None = None) -> int:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True,
                                detokenize=False)
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        counts = {len(output.outputs[0].token_ids) for output in outputs}
        if counts != {new_tokens} or len(outputs) != len(inputs):
            raise RuntimeError(f"vllm produced {sorted(counts)} tokens for {len(outputs)} sequences, expected {new_tokens}")
        return new_tokens

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": f"vllm {self._version}" if self._version else None,
            "settings": {
                **self.settings,
                **{k: v for k, v in self.engine_settings.items() if k not in ("model", "tokenizer")},
                "api": "offline LLM.generate on token ids, greedy, ignore_eos",
                "per_token_timing": "unavailable (offline API returns whole sequences)",
                "peak_memory_kind": "unavailable (vLLM pre-allocates gpu_memory_utilization)",
                "verified": False,
            },
        }

    def close(self) -> None:
        if self.llm is not None:
            shutdown = getattr(getattr(self.llm.llm_engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
        self.llm = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
