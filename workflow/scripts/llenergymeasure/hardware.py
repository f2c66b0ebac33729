"""Accelerator peaks (config/hardware.yaml) and the MFU / MBU ratios built on them.

MFU = FLOPs / seconds / peak dense FLOP/s of the compute dtype; MBU = bytes moved / seconds /
peak memory bandwidth. A device or dtype the table does not list gives None, never a guess.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .paths import REPO_ROOT

DEFAULT_TABLE = REPO_ROOT / "config" / "hardware.yaml"

DTYPE_ALIASES = {
    "fp32": "float32",
    "float": "float32",
    "torch.float32": "float32",
    "fp16": "float16",
    "half": "float16",
    "torch.float16": "float16",
    "bf16": "bfloat16",
    "torch.bfloat16": "bfloat16",
    "fp8": "float8",
    "float8_e4m3fn": "float8",
    "float8_e5m2": "float8",
    "torch.int8": "int8",
}


class HardwareTableError(ConfigError):
    """config/hardware.yaml (or an override) is malformed; the message names entry and field."""


def _normalise_name(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip()).casefold()


def _check_entry(entry: Any, index: int, path: Path) -> dict[str, Any]:
    where = f"{path}: devices[{index}]"
    if not isinstance(entry, dict):
        raise HardwareTableError(f"{where} must be a mapping")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise HardwareTableError(f"{where}.name must be a non-empty string")
    where = f"{path}: devices[{index}] ({name})"
    names = entry.get("nvml_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise HardwareTableError(f"{where}.nvml_names must be a non-empty list of device names")
    peaks = entry.get("peak_tflops")
    if not isinstance(peaks, dict) or not peaks:
        raise HardwareTableError(f"{where}.peak_tflops must map dtypes to dense TFLOP/s")
    for dtype, value in peaks.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise HardwareTableError(f"{where}.peak_tflops.{dtype} must be a positive number, got {value!r}")
    bandwidth = entry.get("memory_bandwidth_gb_s")
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or bandwidth <= 0:
        raise HardwareTableError(f"{where}.memory_bandwidth_gb_s must be a positive number, got {bandwidth!r}")
    source = entry.get("source")
    if not isinstance(source, dict) or not source.get("url") or not source.get("document"):
        raise HardwareTableError(f"{where}.source needs both 'document' and 'url'")
    return {
        **entry,
        "peak_flops_per_s": {str(d): float(v) * 1e12 for d, v in peaks.items()},
        "memory_bandwidth_bytes_per_s": float(bandwidth) * 1e9,
    }


@functools.lru_cache(maxsize=8)
def _load_cached(path: str) -> tuple[dict[str, Any], ...]:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise HardwareTableError(f"hardware table not found: {file}")
    data = yaml.safe_load(file.read_text())
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, list) or not devices:
        raise HardwareTableError(f"{file}: 'devices' must be a non-empty list")
    entries = tuple(_check_entry(entry, i, file) for i, entry in enumerate(devices))
    seen: dict[str, str] = {}
    for entry in entries:
        for nvml in entry["nvml_names"]:
            key = _normalise_name(nvml)
            if key in seen:
                raise HardwareTableError(
                    f"{file}: device name '{nvml}' is listed by both {seen[key]} and {entry['name']}"
                )
            seen[key] = entry["name"]
    return entries


def load_table(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The hardware table: one dict per device, with `peak_flops_per_s` (dtype -> FLOP/s) and
    `memory_bandwidth_bytes_per_s` added to the YAML fields. `path` overrides the default."""
    resolved = Path(path).resolve() if path is not None else DEFAULT_TABLE
    return [dict(entry) for entry in _load_cached(str(resolved))]


def lookup(device_name: str | None, path: str | Path | None = None) -> dict[str, Any] | None:
    """The table entry whose NVML name matches `device_name` exactly (case/space-insensitive)."""
    if not isinstance(device_name, str) or not device_name.strip():
        return None
    wanted = _normalise_name(device_name)
    for entry in load_table(path):
        if wanted in (_normalise_name(n) for n in entry["nvml_names"]):
            return entry
    return None


def peak_flops(device_name: str | None, dtype: str | None, path: str | Path | None = None) -> float | None:
    """Peak dense FLOP/s (ops/s for int8) of the device at `dtype`, or None if not listed."""
    entry = lookup(device_name, path)
    if entry is None or not isinstance(dtype, str):
        return None
    key = DTYPE_ALIASES.get(dtype.strip().lower(), dtype.strip().lower())
    return entry["peak_flops_per_s"].get(key)


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def mfu(
    flops: float, seconds: float, device_name: str | None, dtype: str | None, path: str | Path | None = None
) -> float | None:
    """Model FLOPs utilisation: flops / seconds / peak(dtype). None if anything is unknown."""
    peak = peak_flops(device_name, dtype, path)
    work, time = _positive(flops), _positive(seconds)
    if peak is None or work is None or time is None:
        return None
    return work / time / peak


def mbu(bytes_moved: float, seconds: float, device_name: str | None, path: str | Path | None = None) -> float | None:
    """Model bandwidth utilisation: bytes / seconds / peak memory bandwidth, or None."""
    entry = lookup(device_name, path)
    moved, time = _positive(bytes_moved), _positive(seconds)
    if entry is None or moved is None or time is None:
        return None
    return moved / time / entry["memory_bandwidth_bytes_per_s"]
