"""Which GPUs a measure job runs on: chosen, pinned before anything touches CUDA, and recorded.

A job needs `count` GPUs: its `gpu` resource, or more where the backend itself spreads over
several (vLLM's `tensor_parallel_size`). It takes the first `count` of the GPUs it may use —
those CUDA_VISIBLE_DEVICES names (integer indices or UUIDs, set by the user or by SLURM),
else every GPU NVML lists — and pins itself to them: CUDA_VISIBLE_DEVICES becomes their NVML
indices and CUDA_DEVICE_ORDER becomes PCI_BUS_ID (NVML's order), so CUDA device i, Zeus's
GPU index i and the i-th pinned NVML index are the same chip. Zeus's `ZeusMonitor` reads
CUDA_VISIBLE_DEVICES the same way (its gpu_indices count inside that list), so the meter
then reads exactly these GPUs and no idle neighbour.

profiles/default runs one GPU job at a time, so taking the first GPUs is safe there; to run
on another GPU, export CUDA_VISIBLE_DEVICES before `snakemake`. On SLURM the allocation
sets it per job.

MIG slices cannot be metered by NVML: such a job is left unpinned and its energy is
`unavailable` with that reason. Any other name that does not resolve, or fewer GPUs than
the job needs, is refused with one line before the model loads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from .backend_specs import typed_settings

logger = logging.getLogger(__name__)


class GpuPinError(RuntimeError):
    """The job cannot be given the GPUs it needs (one line: what is wrong, what to do)."""


@dataclass(frozen=True)
class JobGpus:
    """The GPUs of one job, by NVML index; empty with a reason where none can be metered."""

    nvml_indices: tuple[int, ...]
    unmeterable_reason: str | None = None

    @property
    def zeus_indices(self) -> list[int]:
        """Zeus's GPU indices for these GPUs: positions in the pinned CUDA_VISIBLE_DEVICES."""
        return list(range(len(self.nvml_indices)))

    @property
    def label(self) -> str | None:
        """The NVML indices as recorded on every row, e.g. "1" or "0,1"."""
        return ",".join(map(str, self.nvml_indices)) or None


def gpus_needed(backend: str, settings: Any, resource_gpus: int | None) -> int:
    """GPUs one job uses: its `gpu` resource, or the backend's own spread where larger.
    `settings`: the backend's settings (an instance, or a mapping parsed by typed_settings)."""
    backend_gpus = (typed_settings("vllm", settings).tensor_parallel_size or 1) if backend == "vllm" else 1
    return max(int(resource_gpus or 0), backend_gpus, 1)


def _as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _resolve(nvml: Any, names: list[str]) -> list[int]:
    """NVML indices of CUDA_VISIBLE_DEVICES names (indices or unique UUID prefixes)."""
    count = nvml.nvmlDeviceGetCount()
    uuids = {i: _as_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)}
    indices: list[int] = []
    for name in names:
        if name.isdigit():
            if int(name) >= count:
                raise GpuPinError(
                    f"CUDA_VISIBLE_DEVICES: GPU {name} does not exist (NVML lists {count}: 0-{count - 1}); fix or unset it"
                )
            found = [int(name)]
        else:
            found = [i for i, uuid in uuids.items() if uuid.startswith(name)]
            if len(found) != 1:
                raise GpuPinError(
                    f"CUDA_VISIBLE_DEVICES: {name!r} names {len(found)} GPUs, not one; "
                    "give NVML indices or full UUIDs (nvidia-smi -L)"
                )
        if found[0] not in indices:
            indices.append(found[0])
    return indices


def pin_job_gpus(count: int, environ: MutableMapping[str, str] | None = None, nvml: Any = None) -> JobGpus:
    """Choose the job's `count` GPUs and pin this process to them (see the module docstring).

    Call before any CUDA library initialises a device in this process."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    names = None if visible is None else [part.strip() for part in visible.split(",") if part.strip()]
    if names is not None and any(name.upper().startswith("MIG") for name in names):
        return JobGpus((), f"CUDA_VISIBLE_DEVICES={visible}: NVML cannot meter MIG slices")
    if names is not None and not names:
        raise GpuPinError("CUDA_VISIBLE_DEVICES is empty (no GPU): unset it, or use device cpu")
    if nvml is None:
        import pynvml as nvml
    nvml.nvmlInit()
    try:
        candidates = list(range(nvml.nvmlDeviceGetCount())) if names is None else _resolve(nvml, names)
    finally:
        nvml.nvmlShutdown()
    if len(candidates) < count:
        raise GpuPinError(
            f"this job needs {count} GPU(s) but only {len(candidates)} may be used "
            f"(CUDA_VISIBLE_DEVICES={visible!r}); free more GPUs or lower the job's gpu resource"
        )
    chosen = tuple(candidates[:count])
    order = environ.get("CUDA_DEVICE_ORDER")
    if order not in (None, "PCI_BUS_ID"):
        logger.warning("CUDA_DEVICE_ORDER=%s replaced by PCI_BUS_ID so that CUDA and NVML indices agree", order)
    environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, chosen))
    logger.info("pinned to GPU(s) %s (of %s)", environ["CUDA_VISIBLE_DEVICES"], candidates)
    return JobGpus(chosen)


__all__ = ["GpuPinError", "JobGpus", "gpus_needed", "pin_job_gpus"]
