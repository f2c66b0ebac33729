"""A stand-in for NVML (the `pynvml` functions Zeus and llenergymeasure call), for tests only.

It replaces the functions of the real `pynvml` module in place, so the real Zeus code
(`zeus.device.gpu.nvidia`, `ZeusMonitor`) and the real `job_gpus` run on top of it: only the
driver is pretend. Each GPU has an energy counter that advances by a fixed amount of joules
per read, different per GPU, so a reading tells which GPUs were read and how often.
The real path without a stand-in is tested in test_energy.py where a GPU exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StandInGpu:
    uuid: str
    joules_per_read: float
    counter_mj: int = 1_000_000
    reads: int = 0


@dataclass
class StandInNvml:
    gpus: list[StandInGpu]
    calls: list[str] = field(default_factory=list)

    def install(self, monkeypatch: Any) -> StandInNvml:
        """Patch pynvml and reset the caches that remember the real driver's answer."""
        import pynvml
        import zeus.device.gpu as zeus_gpu
        from zeus.device.gpu.nvidia import nvml_is_available

        from llenergymeasure import environment

        def handle(index: int) -> int:
            if not 0 <= index < len(self.gpus):
                raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            return index

        def total_energy(gpu: int) -> int:
            state = self.gpus[gpu]
            state.reads += 1
            state.counter_mj += int(state.joules_per_read * 1000)
            return state.counter_mj

        def not_supported(*args: Any) -> Any:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

        patches = {
            "nvmlInit": lambda: self.calls.append("init"),
            "nvmlShutdown": lambda: self.calls.append("shutdown"),
            "nvmlDeviceGetCount": lambda: len(self.gpus),
            "nvmlDeviceGetHandleByIndex": handle,
            "nvmlDeviceGetUUID": lambda gpu: self.gpus[gpu].uuid,
            "nvmlDeviceGetName": lambda gpu: "Stand-in GPU",
            "nvmlDeviceGetArchitecture": lambda gpu: pynvml.NVML_DEVICE_ARCH_HOPPER,
            "nvmlDeviceGetTotalEnergyConsumption": total_energy,
            "nvmlDeviceGetC2cModeInfoV": not_supported,
            "nvmlDeviceGetComputeRunningProcesses": lambda gpu: [],
            "nvmlDeviceGetGraphicsRunningProcesses": lambda gpu: [],
        }
        for name, function in patches.items():
            monkeypatch.setattr(pynvml, name, function)
        nvml_is_available.cache_clear()
        monkeypatch.setattr(zeus_gpu, "_gpus", None)  # Zeus's singleton: built afresh on the stand-in
        monkeypatch.setitem(environment._nvml_state, "ready", None)
        return self

    @staticmethod
    def uninstall_caches() -> None:
        """Forget the stand-in in Zeus's cache (call after monkeypatch has undone the patches)."""
        from zeus.device.gpu.nvidia import nvml_is_available

        nvml_is_available.cache_clear()


def two_gpus() -> StandInNvml:
    """GPU 0 draws 50 J per counter read, GPU 1 20 J: a sum over both would read 70 J."""
    return StandInNvml([StandInGpu("GPU-aaaa0000-0000", 50.0), StandInGpu("GPU-bbbb1111-1111", 20.0)])
