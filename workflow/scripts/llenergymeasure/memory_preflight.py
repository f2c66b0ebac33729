"""The memory preflight: can each workload shape fit on the device it will run on?

Run by config validation, before any job. For every measured (model, variant, backend) of a
model built from an architecture config, the largest shape of the workload (the largest batch
at the longest prompt plus the new tokens: memory grows with both) is estimated as

* weights: the parameter count (`flops.parameter_counts`) x the variant's storage bits / 8;
* KV cache: 2 x sum over layers of kv_heads x head_dim x min(prompt + new, window) x batch x
  bytes per element (`flops.kv_cache_bytes`, the size a `DynamicCache` reaches);
* activations: one layer's prefill working set, batch x prompt x (2 x hidden + the widest MLP
  output: gate and up of a gated MLP, the routed top-k experts of an MoE) x bytes, plus the
  float32 logits of the last position, batch x vocab x 4.

Each term is a floor, not a ceiling: quantisation scales, unquantised embeddings, the
framework's own buffers and eager attention's score matrices are left out, so a refusal means
the shape cannot fit, never that it might not. Bytes per element are those of the compute dtype
(bnb: `quantisation.bnb_compute_dtype`; llama.cpp: its float16 KV cache; an llm-compressor
checkpoint: 2, the smallest float a cache is held in here).

The device: host RAM on cpu (physical memory, or the cgroup's limit where lower: the whole
machine, not what is free right now), GPU memory on cuda (NVML's total of the smallest visible
GPU, else torch.cuda.mem_get_info) times the GPUs a job spreads over (vLLM tensor parallelism).
Where neither can be read (planning on a submit host without a GPU), nothing is refused.
Models from the hub have no architecture config before they are downloaded and are not checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .flops import (
    FlopsConfigError,
    kv_cache_bytes,
    parameter_counts,
    parse_architecture,
)
from .job_gpus import gpus_needed
from .variants import VARIANTS

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
LOGIT_BYTES = 4  # generate() scores the next token in float32
LLAMACPP_KV_BYTES = 2  # llama.cpp keeps its KV cache in float16 by default
UNKNOWN_FLOAT_BYTES = 2  # a checkpoint dtype not known before it is built: the smallest float


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one shape needs at its peak, by term (see the module docstring)."""

    weights: int
    kv_cache: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations


@dataclass(frozen=True)
class DeviceMemory:
    """The memory a job can use on its device, and where the number was read."""

    bytes: int
    source: str


def element_bytes(quant: str, backend: str, bnb_compute_dtype: str = "float32") -> int:
    """Bytes of one KV-cache or activation element of `quant` on `backend`."""
    if backend == "llamacpp":
        return LLAMACPP_KV_BYTES
    spec = VARIANTS[quant]
    dtype = (
        spec.compute_dtype
        if spec.compute_dtype is not None
        else (bnb_compute_dtype if spec.method.startswith("bnb-") else None)
    )
    return DTYPE_BYTES.get(dtype or "", UNKNOWN_FLOAT_BYTES)


def _widest_mlp(arch: Any) -> int:
    """Elements per token of the widest MLP output of any layer (gate and up both live)."""
    widths = []
    for layer in arch.layers:
        mlp = layer.mlp
        dense = (2 if mlp.gated else 1) * mlp.intermediate
        routed = mlp.top_k * 2 * mlp.expert_intermediate + 2 * mlp.shared_intermediate
        widths.append(dense + routed)
    return max(widths)


def estimate(
    hf_config: dict, quant: str, backend: str, batch: int, prompt: int, new: int, bnb_compute_dtype: str = "float32"
) -> MemoryEstimate:
    """Peak bytes of generating `new` tokens after `prompt` for `batch` sequences."""
    arch = parse_architecture(hf_config)
    elements = element_bytes(quant, backend, bnb_compute_dtype)
    params = parameter_counts(arch)["params_total"]
    weights = -(-params * VARIANTS[quant].weight_bits // 8)
    kv = kv_cache_bytes(hf_config, batch, prompt + new, elements)
    activations = batch * prompt * (2 * arch.hidden + _widest_mlp(arch)) * elements
    activations += batch * arch.vocab * LOGIT_BYTES
    return MemoryEstimate(weights=weights, kv_cache=kv, activations=activations)


def largest_fitting_batch(
    hf_config: dict, quant: str, backend: str, prompt: int, new: int, limit: int, bnb_compute_dtype: str = "float32"
) -> int:
    """The largest batch whose estimate is at most `limit` bytes (0: not even one sequence)."""
    fixed = estimate(hf_config, quant, backend, 0, prompt, new, bnb_compute_dtype).total
    per_sequence = estimate(hf_config, quant, backend, 1, prompt, new, bnb_compute_dtype).total - fixed
    return max(0, (limit - fixed) // per_sequence)  # every term but the weights is linear in batch


# ----------------------------------------------------------------------------- the device


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def host_memory() -> DeviceMemory | None:
    """Physical RAM (os.sysconf), or the cgroup's memory limit where that is lower."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    limit = _cgroup_limit()
    if limit is not None and limit < physical:
        return DeviceMemory(limit, "host RAM, cgroup memory limit")
    return DeviceMemory(physical, "host RAM")


def _nvml_totals() -> list[int]:
    """Total memory of each visible GPU by NVML (no torch import); [] without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        count = pynvml.nvmlDeviceGetCount()
        return [int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).total) for i in range(count)]
    except Exception:
        return []
    finally:
        pynvml.nvmlShutdown()


def _torch_totals() -> list[int]:
    """Total memory of each visible GPU by torch.cuda.mem_get_info; [] without a CUDA build."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [int(torch.cuda.mem_get_info(i)[1]) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def gpu_memory() -> DeviceMemory | None:
    """Total memory of the smallest visible GPU: NVML first, else torch."""
    for totals, source in (
        (_nvml_totals(), "GPU memory, NVML"),
        (_torch_totals(), "GPU memory, torch.cuda.mem_get_info"),
    ):
        if totals:
            return DeviceMemory(min(totals), source)
    return None


def device_memory(device: str) -> DeviceMemory | None:
    return gpu_memory() if device == "cuda" else host_memory()


# ----------------------------------------------------------------------------- the check


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def check_memory(
    config: dict[str, Any], architectures: dict[str, dict], device: str, memory: DeviceMemory | None = None
) -> None:
    """Raise ConfigError (one line) for the first model whose largest shape cannot fit."""
    memory = memory if memory is not None else device_memory(device)
    if memory is None:
        return
    workload = config["workload"]
    batch, prompt, new = max(workload["batch_sizes"]), max(workload["prompt_tokens"]), workload["new_tokens"]
    compute = config.get("quantisation", {}).get("bnb_compute_dtype", "float32")
    for name, arch in architectures.items():
        try:
            parse_architecture(arch)
        except FlopsConfigError:
            continue  # the flops rule reports an architecture it cannot parse, naming the field
        for backend, quants in config["models"][name]["backends"].items():
            settings = (config.get("backend_settings") or {}).get(backend) or {}
            gpus = gpus_needed(backend, settings, 1) if device == "cuda" else 1
            limit = memory.bytes * gpus
            for quant in quants:
                need = estimate(arch, quant, backend, batch, prompt, new, compute)
                if need.total <= limit:
                    continue
                fits = largest_fitting_batch(arch, quant, backend, prompt, new, limit, compute)
                if fits:
                    fix = f"lower workload.batch_sizes to at most {fits} at this prompt length"
                else:
                    fix = "even batch size 1 does not fit: use a smaller variant, a shorter workload or a larger device"
                spread = f" x {gpus} GPUs" if gpus > 1 else ""
                raise ConfigError(
                    f"workload: models.{name} ({quant} on {backend}) at batch size {batch}, prompt {prompt} "
                    f"+ {new} new tokens needs an estimated {_size(need.total)} (weights {_size(need.weights)}, "
                    f"KV cache {_size(need.kv_cache)}, activations {_size(need.activations)}) but the {device} has "
                    f"{_size(memory.bytes)}{spread} ({memory.source}); {fix}"
                )
