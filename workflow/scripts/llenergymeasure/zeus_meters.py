"""Zeus meters: NVML energy counters on exactly a job's pinned GPUs (with the host's RAPL
package and DRAM counters read in the same window, kept apart), and RAPL on CPU packages.

`energy.select_meter` chooses among these and the other sources (see energy.py).
"""

from __future__ import annotations

import logging
from typing import Any

from .energy import SOURCE_ZEUS_NVML, SOURCE_ZEUS_RAPL, EnergyMeter, EnergyReading, EnergySourceError
from .job_gpus import JobGpus

logger = logging.getLogger(__name__)

# NVML's total-energy counter is refreshed about every 100 ms, so either end of a window can be
# stale by up to one period: the window's uncertainty is the mean power x this period.
NVML_COUNTER_PERIOD_S = 0.1
# RAPL energy status registers update about every 1 ms.
RAPL_COUNTER_PERIOD_S = 0.001


def _total(counters: dict[Any, float] | None) -> float | None:
    """Sum of counter deltas; None when there are none or one did not advance (not 0 J)."""
    if not counters or any(j <= 0.0 for j in counters.values()):
        return None
    return float(sum(counters.values()))


class ZeusMeter(EnergyMeter):
    """Energy counters through Zeus: NVML on the job's GPUs (with RAPL host counters where
    readable), or RAPL on CPU packages.

    `monitor` is a `zeus.monitor.ZeusMonitor` (tests may pass an object with the same
    `begin_window`/`end_window` methods beside the real path). `gpus` names the NVML indices
    behind the monitor's GPU indices, in order."""

    _WINDOW = "llenergymeasure"

    def __init__(
        self, monitor: Any, kind: str, counter_period_s: float, method: str, gpus: JobGpus | None = None
    ) -> None:
        super().__init__()
        if kind not in ("nvml", "rapl"):
            raise ValueError(f"ZeusMeter kind must be 'nvml' or 'rapl', got {kind!r}")
        self.monitor = monitor
        self.kind = kind
        self.source = SOURCE_ZEUS_NVML if kind == "nvml" else SOURCE_ZEUS_RAPL
        self.counter_period_s = counter_period_s
        self.method = method
        self.gpus = gpus
        if kind == "nvml" and (gpus is None or len(gpus.nvml_indices) != len(monitor.gpu_indices)):
            raise ValueError(
                f"ZeusMeter nvml: name the NVML index of each of Zeus's GPUs {monitor.gpu_indices}, got {gpus}"
            )

    @property
    def gpu_label(self) -> str | None:
        return self.gpus.label if self.kind == "nvml" and self.gpus else None

    def _start_counters(self) -> None:
        # The caller synchronises the device; Zeus need not (it would import torch.cuda).
        self.monitor.begin_window(self._WINDOW, sync_execution=False)

    def _cancel_counters(self) -> None:
        self.monitor.end_window(self._WINDOW, sync_execution=False, cancel=True)

    def _read(self, elapsed: float) -> EnergyReading:
        measurement = self.monitor.end_window(self._WINDOW, sync_execution=False)
        cpu_j = _total(measurement.cpu_energy)
        dram_j = _total(measurement.dram_energy)
        if self.kind == "nvml":
            nvml_of = dict(zip(self.monitor.gpu_indices, self.gpus.nvml_indices, strict=True))
            counted = {f"gpu{nvml_of[index]}": float(j) for index, j in (measurement.gpu_energy or {}).items()}
        else:
            counted = {f"cpu{index}": float(j) for index, j in (measurement.cpu_energy or {}).items()}
        joules = _total(counted)
        if joules is None:
            # A counter that did not advance read nothing: not a measurement of 0 J.
            logger.warning("%s: a counter did not advance over a %.3f s window (%s)", self.source, elapsed, counted)
            return self._unread(
                elapsed, f"{self.source} counter did not advance over a {elapsed:.3f} s window", cpu_j, dram_j
            )
        uncertainty = joules / elapsed * self.counter_period_s if elapsed > 0 else None
        return EnergyReading(joules, counted, elapsed, uncertainty, self.source, False, cpu_j, dram_j)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "library": "zeus",
            "method": self.method,
            "zeus_gpu_indices": list(self.monitor.gpu_indices),
            "rapl_packages": list(self.monitor.cpu_indices),
            "counter_period_s": self.counter_period_s,
            "uncertainty": "mean power x counter update period per window",
        }


def rapl_packages() -> tuple[int, str | None]:
    """(RAPL packages Zeus can read, why none when 0)."""
    from zeus.device import get_cpus
    from zeus.device.cpu.common import ZeusCPUInitError, ZeusCPUNoPermissionError

    try:
        count = len(get_cpus())
    except ZeusCPUNoPermissionError:
        return 0, "RAPL exists but is not readable (grant read access to /sys/class/powercap/intel-rapl or run zeusd)"
    except ZeusCPUInitError as exc:
        return 0, f"this machine exposes no RAPL ({exc})"
    return count, None if count else "Zeus found no RAPL package"


def zeus_gpu_meter(gpus: JobGpus) -> ZeusMeter:
    """Zeus on the job's (pinned) GPUs, plus RAPL host counters where readable; raises
    EnergySourceError (one line) when Zeus cannot read them."""
    from zeus.device import get_gpus
    from zeus.device.gpu.common import ZeusGPUInitError
    from zeus.monitor import ZeusMonitor

    if gpus.unmeterable_reason:
        raise EnergySourceError(f"energy source zeus: {gpus.unmeterable_reason}")
    if not gpus.nvml_indices:
        raise EnergySourceError("energy source zeus: the job was given no GPU")
    try:
        found = len(get_gpus())
    except (ZeusGPUInitError, ValueError) as exc:
        raise EnergySourceError(f"energy source zeus: Zeus found no GPU ({exc}); use energy_source auto") from None
    if found != len(gpus.nvml_indices):
        raise EnergySourceError(
            f"energy source zeus: Zeus sees {found} GPU(s) but the job was pinned to {gpus.label}; "
            "pin before Zeus first looks (job_gpus.pin_job_gpus)"
        )
    packages, why_not = rapl_packages()
    if why_not:
        logger.info("host energy (energy_cpu_j, energy_dram_j) not recorded: %s", why_not)
    monitor = ZeusMonitor(gpu_indices=gpus.zeus_indices, cpu_indices=list(range(packages)))
    counter = all(monitor.gpus.supports_get_total_energy_consumption(i) for i in monitor.gpu_indices)
    method = "NVML total-energy counter" if counter else "NVML power polling integrated by Zeus (pre-Volta GPU)"
    return ZeusMeter(monitor, "nvml", NVML_COUNTER_PERIOD_S, method, gpus)


def zeus_rapl_meter() -> ZeusMeter:
    """Zeus on RAPL CPU packages; raises EnergySourceError (one line) when not readable."""
    from zeus.monitor import ZeusMonitor

    packages, why_not = rapl_packages()
    if why_not:
        raise EnergySourceError(f"energy source rapl: {why_not}; use energy_source auto")
    monitor = ZeusMonitor(gpu_indices=[], cpu_indices=list(range(packages)))
    return ZeusMeter(monitor, "rapl", RAPL_COUNTER_PERIOD_S, "RAPL package energy counter")


__all__ = [
    "NVML_COUNTER_PERIOD_S",
    "RAPL_COUNTER_PERIOD_S",
    "ZeusMeter",
    "rapl_packages",
    "zeus_gpu_meter",
    "zeus_rapl_meter",
]
