"""Energy meters: where a joule comes from, and how sure we are of it.

`select_meter(device)` picks the best source this machine offers, in this order:

1. ``zeus-nvml``  (device ``cuda``): Zeus `ZeusMonitor` on the GPUs, reading NVML's
   total-energy counter (Volta and newer; Zeus integrates polled power on older GPUs).
   Per-GPU joules and their sum.
2. ``zeus-rapl``  (device ``cpu``): CPU package energy from RAPL through Zeus.
3. ``estimate-cpu-tdp`` (device ``cpu``): this process's CPU time x the processor's TDP per
   logical CPU. This is CodeCarbon's ``cpu_load`` model in its per-process form
   (power = TDP x process CPU-time share of the package), re-implemented here so that the
   TDP can be looked up per *thread* (robust in VMs and containers that see a slice of a
   package). Labelled ``is_estimate=True`` with a stated relative uncertainty.
4. ``unavailable``: no energy; ``joules is None``.

A GPU job never falls back to CPU-side sources: a CPU package joule is not a GPU joule.
A sensor that read nothing (counter did not advance, no CPU time accrued) gives
``joules=None`` and ``source="unavailable"`` for that window, never 0 J.
"""

from __future__ import annotations

import abc
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

SOURCE_ZEUS_NVML = "zeus-nvml"
SOURCE_ZEUS_RAPL = "zeus-rapl"
SOURCE_ESTIMATE = "estimate-cpu-tdp"
SOURCE_UNAVAILABLE = "unavailable"

# `measurement.energy_source` values (config schema) accepted by `select_meter(prefer=...)`.
PREFER_CHOICES = ("auto", "zeus", "rapl", "estimate", "none")

# NVML's total-energy counter is refreshed about every 100 ms, so either end of a window can be
# stale by up to one period: the window's uncertainty is the mean power x this period.
NVML_COUNTER_PERIOD_S = 0.1
# RAPL energy status registers update about every 1 ms.
RAPL_COUNTER_PERIOD_S = 0.001

# Relative uncertainty of the CPU-time x TDP estimate: TDP is a rated sustained power, while
# a loaded package draws roughly 0.5-1.5x of it (turbo, AVX frequency licences, idle cores).
ESTIMATE_REL_UNCERTAINTY = 0.5
# With no TDP known for this processor: CodeCarbon's generic 85 W constant, far less certain.
GENERIC_TDP_W = 85.0
GENERIC_REL_UNCERTAINTY = 1.0

# TDP (or Intel "processor base power") and hardware threads per package, from the vendors'
# product specification pages (Intel ARK, AMD product pages). Keyed by a normalised model
# name fragment; matched as a whole word in the normalised `/proc/cpuinfo` model name.
CPU_TDP_TABLE: dict[str, tuple[float, int]] = {
    "amd epyc 7742": (225.0, 128),
    "amd epyc 7h12": (280.0, 128),
    "amd epyc 7763": (280.0, 128),
    "amd epyc 9554": (360.0, 128),
    "amd epyc 9654": (360.0, 192),
    "amd ryzen 9 5950x": (105.0, 32),
    "xeon gold 6338": (205.0, 64),
    "xeon platinum 8358": (250.0, 64),
    "xeon platinum 8380": (270.0, 80),
    "xeon platinum 8468": (350.0, 96),
    "xeon platinum 8480": (350.0, 112),
    "core i9-13900k": (125.0, 32),
}
CPU_TDP_TABLE_SOURCE = "vendor product specifications (Intel ARK / AMD product pages)"


class EnergySourceError(RuntimeError):
    """A requested energy source cannot be used on this machine (one line, says what to do)."""


@dataclass(frozen=True)
class EnergyReading:
    """Energy of one measured window."""

    joules: float | None  # total over the devices; None when nothing was read
    per_device: dict[str, float]  # e.g. {"gpu0": 812.3, "gpu1": 799.0} or {"cpu0": ...}
    elapsed_s: float
    uncertainty_j: float | None
    source: str
    is_estimate: bool


@dataclass(frozen=True)
class IdleReading:
    """Mean power while the device does nothing."""

    watts: float | None
    seconds: float
    source: str
    is_estimate: bool = False
    uncertainty_w: float | None = None


class EnergyMeter(abc.ABC):
    """One energy source. `begin()`/`end()` bracket a window; windows do not nest."""

    source: str = SOURCE_UNAVAILABLE
    is_estimate: bool = False

    def __init__(self) -> None:
        self._started: float | None = None

    def begin(self) -> None:
        """Start a window (call after the device has finished queued work)."""
        self._start_counters()
        self._started = time.perf_counter()

    def end(self) -> EnergyReading:
        """End the window (call after the device has finished the window's work)."""
        if self._started is None:
            raise RuntimeError("EnergyMeter.end() called without begin()")
        elapsed = time.perf_counter() - self._started
        self._started = None
        return self._read(elapsed)

    def cancel(self) -> None:
        """Abandon an open window (the work inside it failed); no-op when none is open."""
        if self._started is not None:
            self._started = None
            self._cancel_counters()

    def _cancel_counters(self) -> None:
        """Release whatever `_start_counters` holds open."""

    def idle_power(self, seconds: float) -> IdleReading:
        """Mean power over `seconds` of sleeping (the idle baseline)."""
        self.begin()
        time.sleep(max(seconds, 0.0))
        reading = self.end()
        if reading.joules is None or reading.elapsed_s <= 0:
            return IdleReading(None, reading.elapsed_s, reading.source, False)
        uncertainty = None if reading.uncertainty_j is None else reading.uncertainty_j / reading.elapsed_s
        return IdleReading(
            reading.joules / reading.elapsed_s, reading.elapsed_s, reading.source, reading.is_estimate, uncertainty
        )

    def describe(self) -> dict[str, Any]:
        """Source, whether it is an estimate, and how it works (recorded with every job)."""
        return {"source": self.source, "is_estimate": self.is_estimate}

    def _unread(self, elapsed: float) -> EnergyReading:
        return EnergyReading(None, {}, elapsed, None, SOURCE_UNAVAILABLE, False)

    @abc.abstractmethod
    def _start_counters(self) -> None: ...

    @abc.abstractmethod
    def _read(self, elapsed: float) -> EnergyReading: ...


class UnavailableMeter(EnergyMeter):
    """No energy source: every window reads None."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def _start_counters(self) -> None:
        pass

    def _read(self, elapsed: float) -> EnergyReading:
        return self._unread(elapsed)

    def idle_power(self, seconds: float) -> IdleReading:
        return IdleReading(None, 0.0, SOURCE_UNAVAILABLE)  # nothing to wait for

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reason": self.reason}


class ZeusMeter(EnergyMeter):
    """Energy counters through Zeus: NVML on GPUs or RAPL on CPU packages.

    `monitor` is a `zeus.monitor.ZeusMonitor` (tests may pass an object with the same
    `begin_window`/`end_window` methods beside the real no-device path)."""

    _WINDOW = "llenergymeasure"

    def __init__(self, monitor: Any, kind: str, counter_period_s: float, method: str) -> None:
        super().__init__()
        if kind not in ("nvml", "rapl"):
            raise ValueError(f"ZeusMeter kind must be 'nvml' or 'rapl', got {kind!r}")
        self.monitor = monitor
        self.kind = kind
        self.source = SOURCE_ZEUS_NVML if kind == "nvml" else SOURCE_ZEUS_RAPL
        self.counter_period_s = counter_period_s
        self.method = method

    def _start_counters(self) -> None:
        # The caller synchronises the device; Zeus need not (it would import torch.cuda).
        self.monitor.begin_window(self._WINDOW, sync_execution=False)

    def _cancel_counters(self) -> None:
        self.monitor.end_window(self._WINDOW, sync_execution=False, cancel=True)

    def _read(self, elapsed: float) -> EnergyReading:
        measurement = self.monitor.end_window(self._WINDOW, sync_execution=False)
        if self.kind == "nvml":
            counted = {f"gpu{index}": float(j) for index, j in (measurement.gpu_energy or {}).items()}
            extra: dict[str, float] = {}
        else:
            counted = {f"cpu{index}": float(j) for index, j in (measurement.cpu_energy or {}).items()}
            # DRAM is kept for the record but not added: the source is "CPU package energy".
            extra = {f"dram{index}": float(j) for index, j in (measurement.dram_energy or {}).items()}
        if not counted or any(j <= 0.0 for j in counted.values()):
            # A counter that did not advance read nothing: not a measurement of 0 J.
            logger.warning("%s: a counter did not advance over a %.3f s window (%s)", self.source, elapsed, counted)
            return self._unread(elapsed)
        joules = sum(counted.values())
        uncertainty = joules / elapsed * self.counter_period_s if elapsed > 0 else None
        return EnergyReading(joules, {**counted, **extra}, elapsed, uncertainty, self.source, False)

    def describe(self) -> dict[str, Any]:
        indices = self.monitor.gpu_indices if self.kind == "nvml" else self.monitor.cpu_indices
        return {
            **super().describe(),
            "library": "zeus",
            "method": self.method,
            "indices": list(indices),
            "counter_period_s": self.counter_period_s,
            "uncertainty": "mean power x counter update period per window",
        }


class CpuTdpEstimateMeter(EnergyMeter):
    """Process CPU time x TDP per logical CPU (CodeCarbon's cpu_load model, per process).

    energy = tdp_w / tdp_threads x (CPU seconds of this process and its children)."""

    source = SOURCE_ESTIMATE
    is_estimate = True

    def __init__(self, tdp_w: float, tdp_threads: int, tdp_source: str, rel_uncertainty: float) -> None:
        super().__init__()
        if tdp_w <= 0 or tdp_threads <= 0:
            raise ValueError(f"CPU TDP estimate needs tdp_w > 0 and tdp_threads > 0, got {tdp_w}, {tdp_threads}")
        self.tdp_w = tdp_w
        self.tdp_threads = tdp_threads
        self.tdp_source = tdp_source
        self.rel_uncertainty = rel_uncertainty
        self._cpu_start = 0.0

    @property
    def watts_per_cpu_second(self) -> float:
        return self.tdp_w / self.tdp_threads

    def _start_counters(self) -> None:
        children = children_cpu_seconds()  # read first: its own cost stays outside the window
        self._cpu_start = time.process_time() + children

    def _read(self, elapsed: float) -> EnergyReading:
        own = time.process_time()  # read first: the children scan stays outside the window
        cpu_seconds = own + children_cpu_seconds() - self._cpu_start
        if cpu_seconds <= 0.0:
            return self._unread(elapsed)
        joules = self.watts_per_cpu_second * cpu_seconds
        return EnergyReading(
            joules, {"cpu": joules}, elapsed, joules * self.rel_uncertainty, self.source, True
        )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "method": "process CPU seconds x TDP / threads (CodeCarbon cpu_load model, process mode)",
            "tdp_w": self.tdp_w,
            "tdp_threads": self.tdp_threads,
            "tdp_source": self.tdp_source,
            "relative_uncertainty": self.rel_uncertainty,
            "covers": "CPU package share of this process only (no DRAM, no idle share of other cores)",
        }


def children_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process's reaped and live child processes."""
    reaped = os.times()
    total = reaped.children_user + reaped.children_system
    try:
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                times = child.cpu_times()
                total += times.user + times.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
    except ImportError:
        pass
    return total


def process_cpu_seconds() -> float:
    """CPU seconds of this process (all threads, nanosecond clock) and its children."""
    return time.process_time() + children_cpu_seconds()


def cpu_model_name() -> str | None:
    """The processor's model name from /proc/cpuinfo, else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or None


def _normalise_cpu_name(name: str) -> str:
    name = re.sub(r"\((r|tm)\)", " ", name.lower())
    name = re.sub(r"@.*$", " ", name)
    name = re.sub(r"\b(cpu|processor|\d+-core)\b", " ", name)
    return re.sub(r"\s+", " ", name).strip()


def lookup_cpu_tdp(model_name: str | None) -> tuple[float, int, str] | None:
    """(TDP watts, threads per package, provenance) for a known processor, else None."""
    if not model_name:
        return None
    normalised = _normalise_cpu_name(model_name)
    for key, (tdp_w, threads) in CPU_TDP_TABLE.items():
        if re.search(rf"(^|\s){re.escape(key)}[a-z+]?(\s|$)", normalised):
            return tdp_w, threads, f"{CPU_TDP_TABLE_SOURCE}: {key}"
    return None


def _positive_env(name: str, kind: type) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value <= 0:
        raise EnergySourceError(f"{name}={raw!r}: expected a positive {kind.__name__}; unset it or fix the value")
    return value


def cpu_tdp_meter() -> CpuTdpEstimateMeter:
    """The CPU-time x TDP estimate, with TDP from `LLEM_CPU_TDP_W` (and `LLEM_CPU_TDP_THREADS`,
    the logical CPUs that TDP covers; default: the CPUs this OS sees), else the table, else
    CodeCarbon's generic 85 W over the visible CPUs (flagged, with a larger uncertainty)."""
    visible = os.cpu_count() or 1
    tdp_env = _positive_env("LLEM_CPU_TDP_W", float)
    threads_env = _positive_env("LLEM_CPU_TDP_THREADS", int)
    if tdp_env is not None:
        return CpuTdpEstimateMeter(
            tdp_env, threads_env or visible, "LLEM_CPU_TDP_W environment variable", ESTIMATE_REL_UNCERTAINTY
        )
    model = cpu_model_name()
    found = lookup_cpu_tdp(model)
    if found is not None:
        tdp_w, threads, provenance = found
        return CpuTdpEstimateMeter(tdp_w, threads_env or threads, provenance, ESTIMATE_REL_UNCERTAINTY)
    logger.warning(
        "no TDP known for CPU %r: using CodeCarbon's generic %.0f W over %d visible CPUs "
        "(set LLEM_CPU_TDP_W and LLEM_CPU_TDP_THREADS for a better estimate)",
        model, GENERIC_TDP_W, threads_env or visible,
    )
    return CpuTdpEstimateMeter(
        GENERIC_TDP_W, threads_env or visible,
        f"generic {GENERIC_TDP_W:.0f} W (CodeCarbon default) for unknown CPU {model!r}",
        GENERIC_REL_UNCERTAINTY,
    )


def zeus_gpu_meter(gpu_indices: list[int] | None = None) -> ZeusMeter:
    """Zeus on NVIDIA GPUs; raises EnergySourceError (one line) when Zeus finds none."""
    from zeus.device import get_gpus
    from zeus.device.gpu.common import ZeusGPUInitError
    from zeus.monitor import ZeusMonitor

    try:
        gpus = get_gpus()
    except ZeusGPUInitError as exc:
        raise EnergySourceError(f"energy source zeus: Zeus found no GPU ({exc}); use energy_source auto") from None
    if len(gpus) == 0:
        raise EnergySourceError("energy source zeus: Zeus found no GPU; use energy_source auto")
    try:
        monitor = ZeusMonitor(gpu_indices=gpu_indices, cpu_indices=[])
    except ValueError as exc:
        raise EnergySourceError(f"energy source zeus: GPU indices {gpu_indices} not usable ({exc})") from None
    counter = all(monitor.gpus.supports_get_total_energy_consumption(i) for i in monitor.gpu_indices)
    method = "NVML total-energy counter" if counter else "NVML power polling integrated by Zeus (pre-Volta GPU)"
    return ZeusMeter(monitor, "nvml", NVML_COUNTER_PERIOD_S, method)


def zeus_rapl_meter() -> ZeusMeter:
    """Zeus on RAPL CPU packages; raises EnergySourceError (one line) when not readable."""
    from zeus.device import get_cpus
    from zeus.device.cpu.common import ZeusCPUInitError, ZeusCPUNoPermissionError
    from zeus.monitor import ZeusMonitor

    try:
        cpus = get_cpus()
    except ZeusCPUNoPermissionError:
        raise EnergySourceError(
            "energy source rapl: RAPL exists but is not readable; grant read access to "
            "/sys/class/powercap/intel-rapl (or run zeusd) or use energy_source estimate"
        ) from None
    except ZeusCPUInitError as exc:
        raise EnergySourceError(f"energy source rapl: this machine exposes no RAPL ({exc}); use energy_source estimate") from None
    if len(cpus) == 0:
        raise EnergySourceError("energy source rapl: Zeus found no RAPL package; use energy_source estimate")
    monitor = ZeusMonitor(gpu_indices=[], cpu_indices=list(range(len(cpus))))
    return ZeusMeter(monitor, "rapl", RAPL_COUNTER_PERIOD_S, "RAPL package energy counter")


def select_meter(device: str, gpu_indices: list[int] | None = None, prefer: str = "auto") -> EnergyMeter:
    """The best energy meter for `device` ("cuda" or "cpu").

    prefer: "auto" (best available), or force "zeus" (NVML), "rapl", "estimate", "none".
    A forced source that is not available raises EnergySourceError."""
    if prefer not in PREFER_CHOICES:
        raise EnergySourceError(f"measurement.energy_source: {prefer!r} is not a source; allowed: {', '.join(PREFER_CHOICES)}")
    if device not in ("cuda", "cpu"):
        raise EnergySourceError(f"device: {device!r} is not measurable; allowed: cuda, cpu")
    if prefer == "none":
        return UnavailableMeter("energy_source none requested")
    if prefer == "zeus":
        return zeus_gpu_meter(gpu_indices)
    if prefer == "rapl":
        return zeus_rapl_meter()
    if prefer == "estimate":
        return cpu_tdp_meter()

    if device == "cuda":
        try:
            return zeus_gpu_meter(gpu_indices)
        except EnergySourceError as exc:
            logger.warning("no GPU energy source: %s", exc)
            return UnavailableMeter(str(exc))
    try:
        return zeus_rapl_meter()
    except EnergySourceError as exc:
        logger.info("RAPL not used: %s", exc)
    return cpu_tdp_meter()  # always possible on CPU; a malformed LLEM_CPU_TDP_W raises


__all__ = [
    "CPU_TDP_TABLE",
    "CpuTdpEstimateMeter",
    "EnergyMeter",
    "EnergyReading",
    "EnergySourceError",
    "IdleReading",
    "UnavailableMeter",
    "ZeusMeter",
    "cpu_model_name",
    "cpu_tdp_meter",
    "lookup_cpu_tdp",
    "children_cpu_seconds",
    "process_cpu_seconds",
    "select_meter",
    "zeus_gpu_meter",
    "zeus_rapl_meter",
]
