"""The `llamacpp` backend: llama.cpp through llama-cpp-python's low-level (llama.h) API.

Batches are real batches: every prompt of a batch is prefilled in one `llama_decode` call,
and each decode step decodes one token of every sequence in one `llama_decode` call, each
sequence with its own KV stream (`n_seq_max = batch size`), as llama.cpp's `batched`
example does. (llama-cpp-python's high-level `Llama` object holds one sequence; running its
sequences one after another would not be a batched run, so it is not used.)

Generation is greedy (argmax of the logits on the host) and never stops at EOS: exactly
`new_tokens` tokens per sequence.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..manifest import VariantManifest
from .base import Backend, LoadInfo, process_peak_rss_bytes, reset_process_peak_rss
from .pytorch_compiled import kv_room_tokens

log = logging.getLogger(__name__)

# ggml's CPU kernels quantise the activations to this type for the dot product with each
# weight type (ggml-cpu type_traits `vec_dot_type`); recorded so that "weight-only" is not
# mistaken for float activations.
CPU_ACTIVATION_TYPE = {
    "F32": "f32",
    "F16": "f16",
    "BF16": "bf16",
    "Q8_0": "q8_0",
    "Q4_0": "q8_0",
    "Q4_1": "q8_1",
    "Q5_0": "q8_0",
    "Q5_1": "q8_1",
    "Q2_K": "q8_K",
    "Q3_K": "q8_K",
    "Q4_K": "q8_K",
    "Q5_K": "q8_K",
    "Q6_K": "q8_K",
}
# llama.cpp's AMX matmul (an "extra buffer type" of the CPU backend) segfaults in
# ggml_backend_amx_mul_mat on Sapphire-Rapids-class CPUs for q8_0 and K-quant weights
# (observed here with 0.3.36; upstream ggml-org/llama.cpp#20824, closed stale unfixed).
AMX_CRASH_REFERENCE = "ggml-org/llama.cpp#20824"
# llama.cpp's constant for each word `backend_settings.llamacpp.flash_attn` accepts
# (backend_specs.FLASH_ATTN_CHOICES)
FLASH_ATTN_TYPES = {
    "auto": "LLAMA_FLASH_ATTN_TYPE_AUTO",
    "on": "LLAMA_FLASH_ATTN_TYPE_ENABLED",
    "off": "LLAMA_FLASH_ATTN_TYPE_DISABLED",
}
DEFAULT_N_UBATCH = 512  # llama.cpp's own default physical micro-batch
# token ids below this are the special tokens (unk, bos, eos) of our tokenizers
FIRST_ORDINARY_TOKEN = 3


_LLAMA_LOG = logging.getLogger("llama.cpp")
# ggml.h's ggml_log_level -> logging level (5, GGML_LOG_LEVEL_CONT, continues the previous line)
_GGML_LOG_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_log_state: dict[str, Any] = {"callback": None, "level": logging.INFO, "pending": "", "min_level": logging.WARNING}


def route_llama_log(min_level: int = logging.WARNING) -> None:
    """Send llama.cpp's own log (model loading, quantisation, errors) to the Python logger
    "llama.cpp" from `min_level` up, so that rule logs hold it instead of the console."""
    import llama_cpp

    _log_state["min_level"] = min_level
    if _log_state["callback"] is not None:
        return

    def forward(level: int, text: bytes, _user_data: Any) -> None:
        if level != 5:
            _log_state["level"] = _GGML_LOG_LEVELS.get(level, logging.INFO)
        if _log_state["level"] < _log_state["min_level"]:
            return
        _log_state["pending"] += text.decode(errors="replace") if text else ""
        if _log_state["pending"].endswith("\n"):
            _LLAMA_LOG.log(_log_state["level"], "%s", _log_state["pending"].rstrip())
            _log_state["pending"] = ""

    _log_state["callback"] = llama_cpp.llama_log_callback(forward)  # kept alive: C holds the pointer
    llama_cpp.llama_log_set(_log_state["callback"], ctypes.c_void_p(0))


class LlamaCppError(RuntimeError):
    """llama.cpp refused a model, a context or a decode call."""


@dataclass
class LlamaCppInputs:
    """Prompt token ids (batch, prompt_tokens) and the batch layout prepared for them."""

    token_ids: np.ndarray  # int32, (batch_size, prompt_tokens)
    seed: int

    @property
    def batch_size(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def prompt_tokens(self) -> int:
        return int(self.token_ids.shape[1])


class _TokenBatch:
    """A `llama_batch` with a fixed layout: `per_sequence` tokens of each of `sequences`
    sequences, sequence-major. Only token ids and positions change between calls."""

    def __init__(self, llama_cpp: Any, sequences: int, per_sequence: int, logits: str):
        self._lib = llama_cpp
        self.size = sequences * per_sequence
        self.batch = llama_cpp.llama_batch_init(self.size, 0, 1)
        self.batch.n_tokens = self.size
        self.tokens = np.ctypeslib.as_array(self.batch.token, shape=(self.size,))
        self.positions = np.ctypeslib.as_array(self.batch.pos, shape=(self.size,))
        np.ctypeslib.as_array(self.batch.n_seq_id, shape=(self.size,))[:] = 1
        wants_logits = np.ctypeslib.as_array(self.batch.logits, shape=(self.size,))
        wants_logits[:] = 0
        for index in range(self.size):
            self.batch.seq_id[index][0] = index // per_sequence
        if logits == "all":
            wants_logits[:] = 1
        else:  # the last token of each sequence
            wants_logits[per_sequence - 1 :: per_sequence] = 1
        self.sequences = sequences
        self.per_sequence = per_sequence

    def free(self) -> None:
        if self.batch is not None:
            self._lib.llama_batch_free(self.batch)
            self.batch = None


class LlamaCppBackend(Backend):
    """llama.cpp on a GGUF variant. Settings (backend_settings.llamacpp in the config):

    threads: CPU threads (default: the cores this process may use);
    max_new_tokens: KV-cache room per sequence beyond the prompt (default 256; set it to the
      workload's new_tokens so the KV cache, and the peak memory, are sized for the workload);
    n_gpu_layers: layers offloaded where llama.cpp was built with a GPU backend (default all);
    flash_attn: auto | on | off (default auto, llama.cpp's choice);
    n_ubatch: physical micro-batch of a prefill (default 512);
    extra_buffer_types: auto | true | false: let llama.cpp repack weights for AMX / CPU_REPACK
      kernels (default auto: off where the build uses AMX, which crashes; see AMX_CRASH_REFERENCE);
    verbose: log llama.cpp's own INFO lines too (default false: its warnings and errors only).
    """

    name = "llamacpp"
    supported_quants = ("gguf-f16", "gguf-q8_0", "gguf-q4_k_m")

    def __init__(self, settings: Any = None, device: str = "cpu"):
        super().__init__(settings, device)
        import llama_cpp

        self._lib = llama_cpp
        self.threads = self.settings.threads or len(os.sched_getaffinity(0))
        self.max_new_tokens = kv_room_tokens(self.settings)
        self.flash_attn = self.settings.flash_attn or "auto"
        self.n_ubatch = self.settings.n_ubatch or DEFAULT_N_UBATCH
        self.system_info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
        self.use_extra_buffer_types, self.extra_buffer_types_reason = self._resolve_extra_buffer_types()
        self.peak_memory_kind = "process-peak-rss" if device == "cpu" else "unavailable-llamacpp-gpu"
        self.model = None
        self.context = None
        self.context_shape: tuple[int, int] | None = None  # (sequences, tokens per sequence)
        self.context_builds = 0
        self.n_vocab = 0
        self.n_ctx_train = 0
        self.variant: VariantManifest | None = None
        self.tensor_types: dict[str, int] = {}
        self._batches: dict[tuple[int, int, str], _TokenBatch] = {}
        self.last_generated: np.ndarray | None = None  # (batch, new_tokens) ids of the last generate()
        route_llama_log(logging.INFO if self.settings.verbose else logging.WARNING)

    def _resolve_extra_buffer_types(self) -> tuple[bool, str]:
        """Whether weights may go to the CPU backend's extra buffer types (AMX, CPU_REPACK)."""
        choice = self.settings.extra_buffer_types
        if choice is None:
            choice = "auto"
        if choice != "auto":
            return bool(choice), "set in backend_settings"
        if self.device == "cpu" and "AMX_INT8 = 1" in self.system_info:
            return False, f"auto: off because this CPU build uses AMX, whose matmul segfaults ({AMX_CRASH_REFERENCE})"
        return True, "auto: on"

    # -- loading -----------------------------------------------------------------
    def load(self, variant: VariantManifest | Mapping[str, Any]) -> LoadInfo:
        lib = self._lib
        variant = VariantManifest.coerce(variant)
        quant = variant.quant
        if quant not in self.supported_quants:
            raise ValueError(f"variant quant {quant!r}: llamacpp runs {', '.join(self.supported_quants)} only")
        path = Path(variant.checkpoint_file or "")
        if not path.is_file():
            raise FileNotFoundError(
                f"variant checkpoint_file {str(path)!r} is not a file; rebuild it with the gguf rule"
            )
        self.close()  # a second load replaces the first model
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        layers = self.settings.n_gpu_layers
        params.n_gpu_layers = (-1 if self.device == "cuda" else 0) if layers is None else layers
        params.use_extra_bufts = self.use_extra_buffer_types
        start = time.perf_counter()
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise LlamaCppError(
                f"llama.cpp could not load {path} (more of llama.cpp's log with backend_settings.llamacpp.verbose: true)"
            )
        load_s = time.perf_counter() - start
        self.n_vocab = int(lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model)))
        self.n_ctx_train = int(lib.llama_model_n_ctx_train(self.model))
        self.variant = variant
        self.tensor_types = dict(variant.settings.get("matrix_tensor_types") or {})
        offloaded = self.device == "cuda" and bool(lib.llama_supports_gpu_offload()) and params.n_gpu_layers != 0
        if self.device == "cuda" and not offloaded:
            raise LlamaCppError(
                "device is cuda but this llama-cpp-python build has no GPU offload; "
                "rebuild it with CMAKE_ARGS=-DGGML_CUDA=on bash install-llamacpp.sh"
            )
        main_types = "+".join(t.lower() for t in self.tensor_types) or self._model_desc().split()[-1].lower()
        activations = sorted({CPU_ACTIVATION_TYPE.get(t, "?") for t in self.tensor_types})
        return LoadInfo(
            kernel_path=f"{'ggml-cuda' if offloaded else 'ggml-cpu'}:{main_types}",
            compute_dtype=str(variant.compute_dtype or "float32"),
            weight_bytes_memory=int(lib.llama_model_size(self.model)),
            decompressed_at_load=False,
            load_s=load_s,
            extra={
                "model_desc": self._model_desc(),
                "n_params": int(lib.llama_model_n_params(self.model)),
                "n_ctx_train": self.n_ctx_train,
                "matrix_tensor_types": self.tensor_types,
                "cpu_activation_types": activations if not offloaded else None,
            },
        )

    def _model_desc(self) -> str:
        buffer = ctypes.create_string_buffer(256)
        self._lib.llama_model_desc(self.model, buffer, len(buffer))
        return buffer.value.decode(errors="replace")

    def _ensure_context(self, sequences: int, per_sequence: int) -> None:
        """A context with one KV stream per sequence and room for `per_sequence` tokens each."""
        if self.context_shape == (sequences, per_sequence):
            return
        lib = self._lib
        self._free_context()
        params = lib.llama_context_default_params()
        params.n_seq_max = sequences
        params.n_ctx = sequences * per_sequence  # split evenly between the streams (kv_unified false)
        params.kv_unified = False
        params.n_batch = max(sequences * per_sequence, 1)
        params.n_ubatch = self.n_ubatch
        params.n_threads = self.threads
        params.n_threads_batch = self.threads
        params.no_perf = True
        params.flash_attn_type = getattr(lib, FLASH_ATTN_TYPES[self.flash_attn])
        self.context = lib.llama_init_from_model(self.model, params)
        if not self.context:
            raise LlamaCppError(
                f"llama.cpp could not create a context for {sequences} sequences x {per_sequence} tokens"
            )
        self.context_shape = (sequences, per_sequence)
        self.context_builds += 1

    def _free_context(self) -> None:
        for batch in self._batches.values():
            batch.free()
        self._batches.clear()
        if self.context:
            self._lib.llama_free(self.context)
        self.context = None
        self.context_shape = None

    def _batch(self, sequences: int, per_sequence: int, logits: str) -> _TokenBatch:
        key = (sequences, per_sequence, logits)
        if key not in self._batches:
            self._batches[key] = _TokenBatch(self._lib, sequences, per_sequence, logits)
        return self._batches[key]

    def _slot_tokens(self, prompt_tokens: int) -> int:
        return prompt_tokens + self.max_new_tokens

    # -- running -----------------------------------------------------------------
    def prepare_inputs(self, batch_size: int, prompt_tokens: int, seed: int) -> LlamaCppInputs:
        if self.model is None:
            raise RuntimeError("load() a variant before prepare_inputs()")
        rng = np.random.default_rng(seed)
        ids = rng.integers(FIRST_ORDINARY_TOKEN, self.n_vocab, size=(batch_size, prompt_tokens), dtype=np.int32)
        inputs = LlamaCppInputs(token_ids=ids, seed=seed)
        self._ensure_context(batch_size, self._slot_tokens(prompt_tokens))
        self._batch(batch_size, prompt_tokens, "last")
        self._batch(batch_size, 1, "last")
        return inputs

    def _decode(self, batch: _TokenBatch) -> None:
        status = self._lib.llama_decode(self.context, batch.batch)
        if status != 0:
            raise LlamaCppError(f"llama_decode returned {status} for {batch.sequences} x {batch.per_sequence} tokens")

    def _output_logits(self, rows: int) -> np.ndarray:
        """Logits of the last decode's output tokens, in batch order: a (rows, n_vocab) view."""
        return np.ctypeslib.as_array(self._lib.llama_get_logits(self.context), shape=(rows, self.n_vocab))

    def generate(self, inputs: LlamaCppInputs, new_tokens: int, on_token: Callable[[], None] | None = None) -> int:
        if new_tokens < 1:
            raise ValueError(f"new_tokens must be at least 1, got {new_tokens}")
        sequences, prompt = inputs.batch_size, inputs.prompt_tokens
        slot = self._slot_tokens(prompt)
        if prompt + new_tokens > slot:
            raise ValueError(
                f"prompt {prompt} + new_tokens {new_tokens} exceed the KV room of {slot} tokens per "
                "sequence; raise backend_settings.llamacpp.max_new_tokens"
            )
        if self.context_shape != (sequences, slot):
            log.warning(
                "llamacpp: rebuilding the context for batch %d inside generate(); call prepare_inputs first", sequences
            )
            self._ensure_context(sequences, slot)
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self.context), True)
        prefill = self._batch(sequences, prompt, "last")
        prefill.tokens[:] = inputs.token_ids.reshape(-1)
        prefill.positions[:] = np.tile(np.arange(prompt, dtype=np.int32), sequences)
        self._decode(prefill)
        generated = np.empty((sequences, new_tokens), dtype=np.int32)
        generated[:, 0] = self._output_logits(sequences).argmax(axis=1)  # the last prompt token of each
        if on_token is not None:
            on_token()
        step = self._batch(sequences, 1, "last")
        for offset in range(1, new_tokens):
            step.tokens[:] = generated[:, offset - 1]
            step.positions[:] = prompt + offset - 1
            self._decode(step)
            generated[:, offset] = self._output_logits(sequences).argmax(axis=1)
            if on_token is not None:
                on_token()
        self.last_generated = generated
        return new_tokens

    def sequence_logits(self, token_ids: np.ndarray) -> np.ndarray:
        """Logits at every position of one sequence (n_tokens, n_vocab), for quality checks."""
        tokens = np.asarray(token_ids, dtype=np.int32).reshape(-1)
        self._ensure_context(1, max(self._slot_tokens(len(tokens)), len(tokens)))
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self.context), True)
        batch = self._batch(1, len(tokens), "all")
        batch.tokens[:] = tokens
        batch.positions[:] = np.arange(len(tokens), dtype=np.int32)
        self._decode(batch)
        return self._output_logits(len(tokens)).copy()

    # -- memory and description --------------------------------------------------------
    def peak_memory_reset(self) -> None:
        if self.device == "cpu":
            reset_process_peak_rss()  # the process's peak RSS (VmHWM)

    def peak_memory_bytes(self) -> int | None:
        if self.device == "cpu":
            return process_peak_rss_bytes()
        return None  # llama.cpp's GPU allocations are not visible to this process's counters

    def describe(self) -> dict[str, Any]:
        lib = self._lib
        params = lib.llama_context_default_params()
        return {
            "name": self.name,
            "version": f"llama-cpp-python {lib.__version__}",
            "settings": {
                **self.set_settings(),
                "threads": self.threads,
                "batching": "one llama_decode per step over all sequences (n_seq_max = batch, one KV stream each)",
                "sampling": "greedy argmax on the host, EOS ignored",
                "max_new_tokens": self.max_new_tokens,  # KV room per sequence: prompt + this
                "kv_cache_type": {1: "f16", 0: "f32"}.get(int(params.type_k), str(int(params.type_k))),
                "n_ubatch": self.n_ubatch,
                "flash_attn": self.flash_attn,
                "extra_buffer_types": self.use_extra_buffer_types,
                "extra_buffer_types_reason": self.extra_buffer_types_reason,
                "system_info": self.system_info,
                "peak_memory_kind": self.peak_memory_kind,
            },
        }

    def close(self) -> None:
        self._free_context()
        if self.model:
            self._lib.llama_model_free(self.model)
        self.model = None
