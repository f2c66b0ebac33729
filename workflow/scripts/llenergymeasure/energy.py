"""Energy meters: where a joule comes from, and how sure we are of it.

`select_meter(device, gpus)` picks the source for one job, in this order:

1. ``zeus-nvml``  (device ``cuda``): Zeus `ZeusMonitor` on exactly the job's GPUs
   (`job_gpus.JobGpus`, pinned through CUDA_VISIBLE_DEVICES), reading NVML's total-energy
   counter (Volta and newer; Zeus integrates polled power on older GPUs). Where RAPL is
   readable, the same window also reads the host's CPU package and DRAM counters: they go
   to ``energy_cpu_j`` and ``energy_dram_j``, never into the GPU joules.
2. ``zeus-rapl``  (device ``cpu``): CPU package energy from RAPL through Zeus (DRAM apart).
3. ``estimate-cpu-tdp`` (device ``cpu``): only when the user states the processor's power in
   ``LLEM_CPU_TDP_W`` (and optionally ``LLEM_CPU_TDP_THREADS``, the logical CPUs it covers):
   this process's CPU seconds x watts / threads, CodeCarbon's ``cpu_load`` model in its
   per-process form. Labelled ``is_estimate=True``; every row records the assumption.
4. ``unavailable``: no energy; ``joules is None`` and a reason. Nothing is ever invented:
   there is no built-in TDP, no table, no generic wattage.

A GPU job never falls back to CPU-side sources: a CPU package joule is not a GPU joule.
A sensor that read nothing (counter did not advance, no CPU time accrued) gives
``joules=None`` and ``source="unavailable"`` for that window, never 0 J.

The Zeus meters (1, 2) are in zeus_meters.py; the estimate (3) and the unavailable source (4)
are here, with the classes every meter shares.
"""

from __future__ import annotations

import abc
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .job_gpus import JobGpus

logger = logging.getLogger(__name__)

SOURCE_ZEUS_NVML = "zeus-nvml"
SOURCE_ZEUS_RAPL = "zeus-rapl"
SOURCE_ESTIMATE = "estimate-cpu-tdp"
SOURCE_UNAVAILABLE = "unavailable"

# `measurement.energy_source` values (config schema) accepted by `select_meter(prefer=...)`.
PREFER_CHOICES = ("auto", "zeus", "rapl", "estimate", "none")

# Relative uncertainty of the CPU-time x stated-power estimate: a rated power is a sustained
# figure, while a loaded package draws roughly 0.5-1.5x of it (turbo, AVX licences, idle cores).
ESTIMATE_REL_UNCERTAINTY = 0.5

CPU_POWER_ENV = "LLEM_CPU_TDP_W"
CPU_THREADS_ENV = "LLEM_CPU_TDP_THREADS"


class EnergySourceError(ConfigError, RuntimeError):
    """A requested energy source cannot be used on this machine (one line, says what to do)."""


@dataclass(frozen=True)
class EnergyReading:
    """Energy of one measured window."""

    joules: float | None  # the job's device energy (GPU joules, or CPU package joules); None: nothing read
    per_device: dict[str, float]  # e.g. {"gpu1": 812.3} or {"cpu0": ..., "cpu1": ...}
    elapsed_s: float
    uncertainty_j: float | None
    source: str
    is_estimate: bool
    cpu_j: float | None = None  # RAPL CPU package energy of the host (every job where RAPL reads)
    dram_j: float | None = None  # RAPL DRAM energy of the host
    reason: str | None = None  # why `joules` is None


@dataclass(frozen=True)
class IdleReading:
    """Mean power while the device does nothing."""

    watts: float | None
    seconds: float
    source: str
    is_estimate: bool = False
    uncertainty_w: float | None = None


@dataclass(frozen=True)
class StatedCpuPower:
    """The processor's power as the user states it: the only basis of an estimate."""

    watts: float
    threads: int
    threads_stated: bool

    @property
    def watts_per_cpu_second(self) -> float:
        return self.watts / self.threads

    def assumption(self) -> str:
        """The assumption recorded on every estimated row."""
        threads = (
            f"{CPU_THREADS_ENV}={self.threads}"
            if self.threads_stated
            else f"{self.threads} logical CPUs seen by the OS"
        )
        return (
            f"{CPU_POWER_ENV}={self.watts:g} W stated by the user over {threads}: "
            f"energy = process CPU seconds x {self.watts_per_cpu_second:.4g} W, "
            f"relative uncertainty {ESTIMATE_REL_UNCERTAINTY:.0%}"
        )


def _positive_env(environ: Mapping[str, str], name: str, kind: type, meaning: str) -> Any:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not value > 0 or value == float("inf"):
        raise EnergySourceError(
            f"{name}={raw!r}: expected {meaning}, a positive {kind.__name__}; fix it or unset it (energy is then unavailable)"
        )
    return value


def stated_cpu_power(environ: Mapping[str, str] | None = None) -> StatedCpuPower | None:
    """The user's `LLEM_CPU_TDP_W` (and `LLEM_CPU_TDP_THREADS`), checked; None when unset."""
    environ = os.environ if environ is None else environ
    watts = _positive_env(environ, CPU_POWER_ENV, float, "the processor's power in watts")
    threads = _positive_env(environ, CPU_THREADS_ENV, int, "the logical CPUs that power covers")
    if watts is None:
        if threads is not None:
            raise EnergySourceError(f"{CPU_THREADS_ENV} is set but {CPU_POWER_ENV} is not; set both or neither")
        return None
    return StatedCpuPower(watts, threads or os.cpu_count() or 1, threads is not None)


class EnergyMeter(abc.ABC):
    """One energy source. `begin()`/`end()` bracket a window; windows do not nest."""

    source: str = SOURCE_UNAVAILABLE
    is_estimate: bool = False

    def __init__(self) -> None:
        self._started: float | None = None

    @property
    def gpu_label(self) -> str | None:
        """NVML indices of the GPUs this meter reads ("1", "0,1"); None when it reads no GPU."""
        return None

    @property
    def assumption(self) -> str | None:
        """What an estimate assumes (recorded on every row); None for sensors."""
        return None

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
        return {
            "source": self.source,
            "is_estimate": self.is_estimate,
            "gpus": self.gpu_label,
            "assumption": self.assumption,
        }

    def _unread(
        self, elapsed: float, reason: str, cpu_j: float | None = None, dram_j: float | None = None
    ) -> EnergyReading:
        return EnergyReading(None, {}, elapsed, None, SOURCE_UNAVAILABLE, False, cpu_j, dram_j, reason)

    @abc.abstractmethod
    def _start_counters(self) -> None: ...

    @abc.abstractmethod
    def _read(self, elapsed: float) -> EnergyReading: ...


class UnavailableMeter(EnergyMeter):
    """No energy source: every window reads None, with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def _start_counters(self) -> None:
        pass

    def _read(self, elapsed: float) -> EnergyReading:
        return self._unread(elapsed, self.reason)

    def idle_power(self, seconds: float) -> IdleReading:
        return IdleReading(None, 0.0, SOURCE_UNAVAILABLE)  # nothing to wait for

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reason": self.reason}


class CpuTdpEstimateMeter(EnergyMeter):
    """Process CPU time x the user's stated processor power per logical CPU.

    energy = watts / threads x (CPU seconds of this process and its children)."""

    source = SOURCE_ESTIMATE
    is_estimate = True

    def __init__(self, stated: StatedCpuPower) -> None:
        super().__init__()
        self.stated = stated
        self._cpu_start = 0.0

    @property
    def assumption(self) -> str:
        return self.stated.assumption()

    def _start_counters(self) -> None:
        children = children_cpu_seconds()  # read first: its own cost stays outside the window
        self._cpu_start = time.process_time() + children

    def _read(self, elapsed: float) -> EnergyReading:
        own = time.process_time()  # read first: the children scan stays outside the window
        cpu_seconds = own + children_cpu_seconds() - self._cpu_start
        if cpu_seconds <= 0.0:
            return self._unread(elapsed, "no CPU time accrued in the window")
        joules = self.stated.watts_per_cpu_second * cpu_seconds
        return EnergyReading(joules, {"cpu": joules}, elapsed, joules * ESTIMATE_REL_UNCERTAINTY, self.source, True)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "method": "process CPU seconds x stated watts / threads (CodeCarbon cpu_load model, process mode)",
            "watts": self.stated.watts,
            "threads": self.stated.threads,
            "relative_uncertainty": ESTIMATE_REL_UNCERTAINTY,
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


def select_meter(device: str, gpus: JobGpus | None = None, prefer: str = "auto") -> EnergyMeter:
    """The energy meter of a job on `device` ("cuda": its pinned `gpus`; or "cpu").

    prefer: "auto" (the order in the module docstring), or force "zeus" (NVML, cuda jobs),
    "rapl" or "estimate" (cpu jobs), "none". A forced source that cannot be used raises
    EnergySourceError; so does a malformed LLEM_CPU_TDP_W, whatever the source."""
    if prefer not in PREFER_CHOICES:
        raise EnergySourceError(
            f"measurement.energy_source: {prefer!r} is not a source; allowed: {', '.join(PREFER_CHOICES)}"
        )
    if device not in ("cuda", "cpu"):
        raise EnergySourceError(f"device: {device!r} is not measurable; allowed: cuda, cpu")
    from .zeus_meters import rapl_packages, zeus_gpu_meter, zeus_rapl_meter

    stated = stated_cpu_power()
    if prefer == "none":
        return UnavailableMeter("energy_source none requested")

    if device == "cuda":
        if prefer in ("rapl", "estimate"):
            raise EnergySourceError(
                f"measurement.energy_source: {prefer!r} measures cpu jobs; a cuda job's joules are its GPUs' "
                "(RAPL host energy goes to energy_cpu_j and energy_dram_j); use auto or zeus"
            )
        try:
            return zeus_gpu_meter(gpus or JobGpus(()))
        except EnergySourceError as exc:
            if prefer == "zeus":
                raise
            logger.warning("no GPU energy source: %s", exc)
            return UnavailableMeter(str(exc))

    if prefer == "zeus":
        raise EnergySourceError("measurement.energy_source: 'zeus' reads GPUs and this is a cpu job; use auto or rapl")
    if prefer == "rapl":
        return zeus_rapl_meter()
    if prefer == "estimate":
        if stated is None:
            raise EnergySourceError(
                f"measurement.energy_source: 'estimate' needs {CPU_POWER_ENV}, the processor's power in watts; "
                "set it or use auto"
            )
        return CpuTdpEstimateMeter(stated)
    _, why_not = rapl_packages()
    if not why_not:
        return zeus_rapl_meter()
    if stated is not None:
        return CpuTdpEstimateMeter(stated)
    reason = f"no CPU energy sensor: {why_not}; no {CPU_POWER_ENV} stated for an estimate"
    logger.info("energy unavailable: %s", reason)
    return UnavailableMeter(reason)


__all__ = [
    "CpuTdpEstimateMeter",
    "EnergyMeter",
    "EnergyReading",
    "EnergySourceError",
    "IdleReading",
    "StatedCpuPower",
    "UnavailableMeter",
    "children_cpu_seconds",
    "process_cpu_seconds",
    "select_meter",
    "stated_cpu_power",
]

# The Zeus meters live in zeus_meters.py (which builds on the classes above); they are reachable
# here too, imported on first use so that this module never imports Zeus by itself.
_ZEUS_NAMES = (
    "NVML_COUNTER_PERIOD_S",
    "RAPL_COUNTER_PERIOD_S",
    "ZeusMeter",
    "rapl_packages",
    "zeus_gpu_meter",
    "zeus_rapl_meter",
)


def __getattr__(name: str) -> Any:
    if name in _ZEUS_NAMES:
        from . import zeus_meters

        return getattr(zeus_meters, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
