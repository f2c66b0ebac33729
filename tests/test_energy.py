"""Energy meters with the real libraries: Zeus (no GPU, no RAPL here), the CPU-time x TDP
estimate, and the unavailable source. Zeus's window arithmetic is also checked with a
stand-in monitor, beside the real no-device path."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from llenergymeasure import energy


def _zeus_has_gpu() -> bool:
    from zeus.device import get_gpus
    from zeus.device.gpu.common import ZeusGPUInitError

    try:
        return len(get_gpus()) > 0
    except ZeusGPUInitError:
        return False


def _zeus_has_rapl() -> bool:
    from zeus.device import get_cpus
    from zeus.device.cpu.common import ZeusCPUInitError, ZeusCPUNoPermissionError

    try:
        return len(get_cpus()) > 0
    except (ZeusCPUInitError, ZeusCPUNoPermissionError):
        return False


HAS_GPU = _zeus_has_gpu()
HAS_RAPL = _zeus_has_rapl()


def _burn_cpu(seconds: float) -> None:
    end = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < end:
        total += sum(i * i for i in range(2000))


def test_cpu_selection_follows_what_zeus_finds():
    meter = energy.select_meter("cpu")
    if HAS_RAPL:
        assert meter.source == energy.SOURCE_ZEUS_RAPL and not meter.is_estimate
    else:
        assert meter.source == energy.SOURCE_ESTIMATE and meter.is_estimate
        assert isinstance(meter, energy.CpuTdpEstimateMeter)


@pytest.mark.skipif(HAS_GPU, reason="this test covers a machine where Zeus finds no GPU")
def test_cuda_without_gpu_is_unavailable_never_zero():
    meter = energy.select_meter("cuda")
    assert meter.source == energy.SOURCE_UNAVAILABLE
    assert "no GPU" in meter.describe()["reason"]
    meter.begin()
    _burn_cpu(0.02)
    reading = meter.end()
    assert reading.joules is None and reading.uncertainty_j is None
    assert reading.source == energy.SOURCE_UNAVAILABLE and reading.elapsed_s > 0
    idle = meter.idle_power(0.1)
    assert idle.watts is None and idle.source == energy.SOURCE_UNAVAILABLE


@pytest.mark.skipif(HAS_GPU, reason="this test covers a machine where Zeus finds no GPU")
def test_forcing_zeus_without_gpu_is_a_clear_error():
    with pytest.raises(energy.EnergySourceError, match=r"^energy source zeus: Zeus found no GPU.*energy_source auto$"):
        energy.select_meter("cpu", prefer="zeus")


@pytest.mark.skipif(HAS_RAPL, reason="this test covers a machine without readable RAPL")
def test_forcing_rapl_without_rapl_is_a_clear_error():
    with pytest.raises(energy.EnergySourceError, match=r"^energy source rapl: .*energy_source estimate"):
        energy.select_meter("cpu", prefer="rapl")


def test_unknown_preference_names_the_field():
    with pytest.raises(energy.EnergySourceError, match=r"^measurement.energy_source: 'nvml' is not a source; allowed: auto"):
        energy.select_meter("cpu", prefer="nvml")


def test_prefer_none_reads_nothing():
    meter = energy.select_meter("cpu", prefer="none")
    meter.begin()
    _burn_cpu(0.02)
    assert meter.end().joules is None


def test_estimate_is_positive_labelled_and_proportional_to_cpu_time(monkeypatch):
    monkeypatch.setenv("LLEM_CPU_TDP_W", "100")
    monkeypatch.setenv("LLEM_CPU_TDP_THREADS", "4")
    meter = energy.select_meter("cpu", prefer="estimate")
    assert meter.describe()["tdp_source"] == "LLEM_CPU_TDP_W environment variable"
    cpu_before = time.process_time()
    meter.begin()
    _burn_cpu(0.1)
    reading = meter.end()
    cpu_used = time.process_time() - cpu_before
    assert reading.source == energy.SOURCE_ESTIMATE and reading.is_estimate
    assert reading.joules is not None and reading.joules > 0
    # 100 W over 4 threads: 25 J per CPU second of this process (the window lies inside cpu_used)
    assert 0.5 * 25 * cpu_used < reading.joules <= 25 * cpu_used + 1e-9
    assert reading.uncertainty_j == pytest.approx(reading.joules * energy.ESTIMATE_REL_UNCERTAINTY)
    assert reading.per_device == {"cpu": reading.joules}


def test_estimate_idle_power_is_small_next_to_busy_power(monkeypatch):
    monkeypatch.setenv("LLEM_CPU_TDP_W", "100")
    monkeypatch.setenv("LLEM_CPU_TDP_THREADS", "1")
    meter = energy.cpu_tdp_meter()
    idle = meter.idle_power(0.2)
    assert idle.seconds >= 0.2 and idle.source in (energy.SOURCE_ESTIMATE, energy.SOURCE_UNAVAILABLE)
    meter.begin()
    _burn_cpu(0.1)
    busy = meter.end()
    busy_watts = busy.joules / busy.elapsed_s
    assert busy_watts > 30  # one thread busy at 100 W per thread
    assert idle.watts is None or idle.watts < 0.2 * busy_watts


@pytest.mark.parametrize("raw", ["abc", "-5", "0"])
def test_bad_tdp_override_is_a_clear_error(monkeypatch, raw):
    monkeypatch.setenv("LLEM_CPU_TDP_W", raw)
    with pytest.raises(energy.EnergySourceError, match=r"^LLEM_CPU_TDP_W="):
        energy.select_meter("cpu", prefer="estimate")


def test_unknown_cpu_falls_back_to_the_generic_tdp_with_wider_uncertainty(monkeypatch):
    monkeypatch.delenv("LLEM_CPU_TDP_W", raising=False)
    monkeypatch.delenv("LLEM_CPU_TDP_THREADS", raising=False)
    monkeypatch.setattr(energy, "cpu_model_name", lambda: "Imaginary CPU 9000")
    meter = energy.cpu_tdp_meter()
    assert meter.tdp_w == energy.GENERIC_TDP_W
    assert meter.rel_uncertainty == energy.GENERIC_REL_UNCERTAINTY
    assert "Imaginary CPU 9000" in meter.tdp_source


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("AMD EPYC 7763 64-Core Processor", (280.0, 128)),
        ("Intel(R) Xeon(R) Platinum 8480+", (350.0, 112)),
        ("Intel(R) Xeon(R) Platinum 8480C @ 2.00GHz", (350.0, 112)),
        ("Intel(R) Xeon(R) Platinum 84801", None),
        ("Intel(R) Xeon(R) Processor", None),
        (None, None),
    ],
)
def test_tdp_table_matches_whole_model_numbers(name, expected):
    found = energy.lookup_cpu_tdp(name)
    assert (found[:2] if found else None) == expected


class _StandInZeusMonitor:
    """The two ZeusMonitor methods a ZeusMeter uses, returning fixed counter deltas."""

    def __init__(self, gpu=None, cpu=None, dram=None):
        self.result = SimpleNamespace(gpu_energy=gpu or {}, cpu_energy=cpu, dram_energy=dram)
        self.gpu_indices = list((gpu or {}).keys())
        self.cpu_indices = list((cpu or {}).keys())
        self.calls: list[tuple[str, bool]] = []

        self.open: set[str] = set()

    def begin_window(self, key, sync_execution=True):
        if key in self.open:  # as ZeusMonitor does
            raise ValueError(f"Measurement window '{key}' already exists")
        self.open.add(key)
        self.calls.append(("begin", sync_execution))

    def end_window(self, key, sync_execution=True, cancel=False):
        self.open.remove(key)
        self.calls.append(("cancel" if cancel else "end", sync_execution))
        return self.result


def test_zeus_nvml_window_sums_gpus_and_states_counter_uncertainty():
    monitor = _StandInZeusMonitor(gpu={0: 40.0, 1: 60.0})
    meter = energy.ZeusMeter(monitor, "nvml", energy.NVML_COUNTER_PERIOD_S, "NVML total-energy counter")
    meter.begin()
    time.sleep(0.05)
    reading = meter.end()
    assert monitor.calls == [("begin", False), ("end", False)]
    assert reading.joules == 100.0 and reading.per_device == {"gpu0": 40.0, "gpu1": 60.0}
    assert reading.source == energy.SOURCE_ZEUS_NVML and not reading.is_estimate
    assert reading.uncertainty_j == pytest.approx(100.0 / reading.elapsed_s * 0.1)


def test_zeus_counter_that_did_not_advance_is_not_zero_joules():
    meter = energy.ZeusMeter(_StandInZeusMonitor(gpu={0: 0.0}), "nvml", 0.1, "counter")
    meter.begin()
    reading = meter.end()
    assert reading.joules is None and reading.source == energy.SOURCE_UNAVAILABLE


def test_zeus_rapl_counts_packages_and_keeps_dram_apart():
    meter = energy.ZeusMeter(_StandInZeusMonitor(cpu={0: 5.0, 1: 7.0}, dram={0: 1.0}), "rapl", 0.001, "RAPL")
    meter.begin()
    reading = meter.end()
    assert reading.joules == 12.0 and reading.source == energy.SOURCE_ZEUS_RAPL
    assert reading.per_device == {"cpu0": 5.0, "cpu1": 7.0, "dram0": 1.0}


def test_a_cancelled_window_lets_the_next_one_open():
    monitor = _StandInZeusMonitor(gpu={0: 3.0})
    meter = energy.ZeusMeter(monitor, "nvml", 0.1, "counter")
    meter.begin()
    meter.cancel()
    meter.cancel()  # nothing open: no-op
    meter.begin()
    assert meter.end().joules == 3.0
    assert [call for call, _ in monitor.calls] == ["begin", "cancel", "begin", "end"]


def test_end_without_begin_is_an_error():
    with pytest.raises(RuntimeError, match="without begin"):
        energy.UnavailableMeter("none").end()
