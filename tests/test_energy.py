"""Energy meters with the real libraries: Zeus (NVML and RAPL, each where this machine has it),
the user-stated CPU-power estimate, and the unavailable source. GPU attribution runs the real
Zeus code over a two-GPU NVML stand-in (tests/nvml_standin.py), beside the real NVML path,
which runs where a GPU exists and is skipped with the reason elsewhere."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
from nvml_standin import two_gpus

from llenergymeasure import energy, environment, job_gpus
from llenergymeasure.job_gpus import JobGpus


def _zeus_has_gpu() -> bool:
    from zeus.device import get_gpus
    from zeus.device.gpu.common import ZeusGPUInitError

    try:
        return len(get_gpus()) > 0
    except ZeusGPUInitError:
        return False


HAS_GPU = _zeus_has_gpu()
RAPL_PACKAGES, NO_RAPL_REASON = energy.rapl_packages()
HAS_RAPL = RAPL_PACKAGES > 0
print(
    f"this machine: Zeus GPU {'found' if HAS_GPU else 'not found'}; RAPL {RAPL_PACKAGES} package(s) ({NO_RAPL_REASON})"
)


@pytest.fixture(autouse=True)
def _no_stated_power(monkeypatch):
    """Tests start without a stated CPU power, whatever the caller's shell exports."""
    monkeypatch.delenv("LLEM_CPU_TDP_W", raising=False)
    monkeypatch.delenv("LLEM_CPU_TDP_THREADS", raising=False)


@pytest.fixture
def cuda_env():
    """Pinning writes CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER: put both back afterwards."""
    saved = {name: os.environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def two_gpu_machine(monkeypatch, cuda_env):
    """The real Zeus and job_gpus over a two-GPU NVML stand-in, nothing exported."""
    from zeus.device.gpu.nvidia import nvml_is_available

    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        os.environ.pop(name, None)
    nvml = two_gpus().install(monkeypatch)
    yield nvml
    nvml_is_available.cache_clear()


def _burn_cpu(seconds: float) -> None:
    end = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < end:
        total += sum(i * i for i in range(2000))


# -- the real sources on this machine ------------------------------------------------------------


def test_cpu_selection_follows_what_zeus_finds_and_invents_nothing():
    meter = energy.select_meter("cpu")
    if HAS_RAPL:
        assert meter.source == energy.SOURCE_ZEUS_RAPL and not meter.is_estimate
    else:  # no sensor, no stated power: unavailable with the reason, never a built-in wattage
        assert meter.source == energy.SOURCE_UNAVAILABLE and not meter.is_estimate
        assert "RAPL" in meter.describe()["reason"] and "LLEM_CPU_TDP_W" in meter.describe()["reason"]


@pytest.mark.skipif(HAS_RAPL, reason="this machine has readable RAPL, so a CPU job is measured")
@pytest.mark.parametrize("cpu_model", ["AMD EPYC 7763 64-Core Processor", "Imaginary CPU 9000", None])
def test_no_sensor_gives_empty_energy_whatever_the_processor(monkeypatch, cpu_model):
    """The old code took 280 W for an EPYC 7763 from a table and 85 W for an unknown CPU."""
    monkeypatch.setattr(environment, "cpu_model_name", lambda: cpu_model)
    meter = energy.select_meter("cpu")
    meter.begin()
    _burn_cpu(0.05)
    reading = meter.end()
    assert reading.joules is None and reading.uncertainty_j is None and reading.per_device == {}
    assert reading.source == energy.SOURCE_UNAVAILABLE and not reading.is_estimate
    assert reading.cpu_j is None and reading.dram_j is None
    assert "no CPU energy sensor" in reading.reason and "LLEM_CPU_TDP_W" in reading.reason
    assert meter.idle_power(0.1).watts is None


@pytest.mark.skipif(not HAS_RAPL, reason=f"RAPL not readable here: {NO_RAPL_REASON}")
def test_real_rapl_reads_packages_and_keeps_dram_apart():
    meter = energy.select_meter("cpu", prefer="rapl")
    meter.begin()
    _burn_cpu(0.3)
    reading = meter.end()
    assert reading.source == energy.SOURCE_ZEUS_RAPL and reading.joules > 0
    assert reading.cpu_j == reading.joules and set(reading.per_device) == {f"cpu{i}" for i in range(RAPL_PACKAGES)}


@pytest.mark.skipif(not HAS_GPU, reason="no NVIDIA GPU on this machine: the real NVML path cannot run")
def test_real_zeus_monitor_reads_exactly_the_pinned_gpu(monkeypatch, cuda_env):
    import zeus.device.gpu as zeus_gpu

    monkeypatch.setattr(zeus_gpu, "_gpus", None)  # Zeus looked before the pin (HAS_GPU): look again
    gpus = job_gpus.pin_job_gpus(1)
    meter = energy.select_meter("cuda", gpus)
    assert meter.source == energy.SOURCE_ZEUS_NVML and meter.gpu_label == gpus.label
    meter.begin()
    time.sleep(0.5)
    reading = meter.end()
    assert list(reading.per_device) == [f"gpu{gpus.nvml_indices[0]}"]
    assert reading.joules is None or reading.joules > 0  # an idle counter may not tick; never 0 J


@pytest.mark.skipif(HAS_GPU, reason="this test covers a machine where Zeus finds no GPU")
def test_cuda_without_gpu_is_unavailable_never_zero():
    meter = energy.select_meter("cuda", JobGpus((0,)))
    assert meter.source == energy.SOURCE_UNAVAILABLE
    assert "no GPU" in meter.describe()["reason"]
    meter.begin()
    _burn_cpu(0.02)
    reading = meter.end()
    assert reading.joules is None and reading.uncertainty_j is None and "no GPU" in reading.reason
    assert reading.source == energy.SOURCE_UNAVAILABLE and reading.elapsed_s > 0
    idle = meter.idle_power(0.1)
    assert idle.watts is None and idle.source == energy.SOURCE_UNAVAILABLE


@pytest.mark.skipif(HAS_GPU, reason="this test covers a machine where Zeus finds no GPU")
def test_forcing_zeus_without_gpu_is_a_clear_error():
    with pytest.raises(energy.EnergySourceError, match=r"^energy source zeus: Zeus found no GPU.*energy_source auto$"):
        energy.select_meter("cuda", JobGpus((0,)), prefer="zeus")


@pytest.mark.skipif(HAS_RAPL, reason="this test covers a machine without readable RAPL")
def test_forcing_rapl_without_rapl_is_a_clear_error():
    with pytest.raises(energy.EnergySourceError, match=r"^energy source rapl: .*use energy_source auto$"):
        energy.select_meter("cpu", prefer="rapl")


@pytest.mark.parametrize(
    ("device", "prefer", "message"),
    [
        ("cpu", "nvml", r"^measurement.energy_source: 'nvml' is not a source; allowed: auto"),
        ("cpu", "zeus", r"^measurement.energy_source: 'zeus' reads GPUs and this is a cpu job"),
        ("cuda", "rapl", r"^measurement.energy_source: 'rapl' measures cpu jobs.*energy_cpu_j"),
        ("cuda", "estimate", r"^measurement.energy_source: 'estimate' measures cpu jobs"),
        ("cpu", "estimate", r"^measurement.energy_source: 'estimate' needs LLEM_CPU_TDP_W"),
    ],
)
def test_sources_that_do_not_fit_the_job_are_refused_in_one_line(device, prefer, message):
    with pytest.raises(energy.EnergySourceError, match=message) as error:
        energy.select_meter(device, JobGpus((0,)), prefer=prefer)
    assert "\n" not in str(error.value)


def test_prefer_none_reads_nothing():
    meter = energy.select_meter("cpu", prefer="none")
    meter.begin()
    _burn_cpu(0.02)
    reading = meter.end()
    assert reading.joules is None and reading.reason == "energy_source none requested"


# -- the estimate: only from a power the user states ----------------------------------------------


def test_stated_power_gives_a_labelled_estimate_proportional_to_cpu_time(monkeypatch):
    monkeypatch.setenv("LLEM_CPU_TDP_W", "100")
    monkeypatch.setenv("LLEM_CPU_TDP_THREADS", "4")
    meter = energy.select_meter("cpu", prefer="estimate")
    assert meter.assumption.startswith("LLEM_CPU_TDP_W=100 W stated by the user over LLEM_CPU_TDP_THREADS=4")
    assert "process CPU seconds x 25 W" in meter.assumption
    cpu_before = time.process_time()
    meter.begin()
    _burn_cpu(0.1)
    reading = meter.end()
    cpu_used = time.process_time() - cpu_before
    assert reading.source == energy.SOURCE_ESTIMATE and reading.is_estimate
    # 100 W over 4 threads: 25 J per CPU second of this process (the window lies inside cpu_used)
    assert 0.5 * 25 * cpu_used < reading.joules <= 25 * cpu_used + 1e-9
    assert reading.uncertainty_j == pytest.approx(reading.joules * energy.ESTIMATE_REL_UNCERTAINTY)
    assert reading.per_device == {"cpu": reading.joules} and reading.cpu_j is None  # not a RAPL reading


@pytest.mark.skipif(HAS_RAPL, reason="with RAPL readable, auto measures instead of estimating")
def test_auto_estimates_only_when_power_is_stated(monkeypatch):
    monkeypatch.setenv("LLEM_CPU_TDP_W", "64")
    meter = energy.select_meter("cpu")
    assert meter.source == energy.SOURCE_ESTIMATE and meter.is_estimate
    assert f"over {os.cpu_count()} logical CPUs seen by the OS" in meter.assumption


def test_estimate_idle_power_is_small_next_to_busy_power(monkeypatch):
    monkeypatch.setenv("LLEM_CPU_TDP_W", "100")
    monkeypatch.setenv("LLEM_CPU_TDP_THREADS", "1")
    meter = energy.select_meter("cpu", prefer="estimate")
    idle = meter.idle_power(0.2)
    assert idle.seconds >= 0.2 and idle.source in (energy.SOURCE_ESTIMATE, energy.SOURCE_UNAVAILABLE)
    meter.begin()
    _burn_cpu(0.1)
    busy = meter.end()
    busy_watts = busy.joules / busy.elapsed_s
    assert busy_watts > 10  # one thread busy at 100 W per thread (less of the core on a loaded machine)
    assert idle.watts is None or idle.watts < 0.2 * busy_watts


@pytest.mark.parametrize("raw", ["abc", "-5", "0", "nan", "inf", "85W"])
@pytest.mark.parametrize("prefer", ["auto", "none", "estimate"])
def test_bad_stated_power_is_one_line_whatever_the_source(monkeypatch, raw, prefer):
    monkeypatch.setenv("LLEM_CPU_TDP_W", raw)
    with pytest.raises(
        energy.EnergySourceError, match=r"^LLEM_CPU_TDP_W=.*expected the processor's power in watts"
    ) as error:
        energy.select_meter("cpu", prefer=prefer)
    assert "\n" not in str(error.value)


def test_threads_without_power_is_refused(monkeypatch):
    monkeypatch.setenv("LLEM_CPU_TDP_THREADS", "8")
    with pytest.raises(energy.EnergySourceError, match="LLEM_CPU_TDP_THREADS is set but LLEM_CPU_TDP_W is not"):
        energy.stated_cpu_power()


# -- GPU attribution: the real Zeus over a two-GPU stand-in ---------------------------------------


def test_a_job_pinned_to_gpu_1_of_two_meters_gpu_1_only(two_gpu_machine, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    gpus = job_gpus.pin_job_gpus(1)
    assert gpus == JobGpus((1,)) and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    meter = energy.select_meter("cuda", gpus)
    assert meter.source == energy.SOURCE_ZEUS_NVML and meter.gpu_label == "1"
    assert type(meter.monitor).__module__ == "zeus.monitor.energy"  # the real ZeusMonitor, on stand-in NVML
    assert meter.describe()["zeus_gpu_indices"] == [0]  # Zeus counts inside CUDA_VISIBLE_DEVICES
    gpu0_reads = two_gpu_machine.gpus[0].reads
    meter.begin()
    reading = meter.end()
    assert reading.per_device == {"gpu1": 20.0} and reading.joules == 20.0  # GPU 1's counter delta only
    assert two_gpu_machine.gpus[0].reads == gpu0_reads  # GPU 0's counter was never read
    assert reading.uncertainty_j == pytest.approx(20.0 / reading.elapsed_s * energy.NVML_COUNTER_PERIOD_S)


def test_an_unpinned_job_takes_one_gpu_not_the_sum_of_all(two_gpu_machine):
    """The old meter summed every visible GPU: 70 J here for a job that used one."""
    gpus = job_gpus.pin_job_gpus(1)
    assert gpus.nvml_indices == (0,) and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    meter = energy.select_meter("cuda", gpus)
    meter.begin()
    reading = meter.end()
    assert reading.per_device == {"gpu0": 50.0} and two_gpu_machine.gpus[1].reads == 0


def test_a_two_gpu_job_meters_both_and_names_them(two_gpu_machine, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb,0")  # a UUID prefix and an index
    gpus = job_gpus.pin_job_gpus(2)
    assert gpus.nvml_indices == (1, 0) and os.environ["CUDA_VISIBLE_DEVICES"] == "1,0"
    meter = energy.select_meter("cuda", gpus)
    meter.begin()
    reading = meter.end()
    assert reading.per_device == {"gpu1": 20.0, "gpu0": 50.0} and reading.joules == 70.0
    assert meter.gpu_label == "1,0"


@pytest.mark.parametrize(
    ("visible", "count", "message"),
    [
        ("1", 2, r"^this job needs 2 GPU\(s\) but only 1 may be used"),
        ("7", 1, r"^CUDA_VISIBLE_DEVICES: GPU 7 does not exist \(NVML lists 2: 0-1\)"),
        ("GPU-", 1, r"^CUDA_VISIBLE_DEVICES: 'GPU-' names 2 GPUs, not one"),
        ("", 1, r"^CUDA_VISIBLE_DEVICES is empty"),
    ],
)
def test_gpus_that_cannot_be_given_are_refused_in_one_line(two_gpu_machine, monkeypatch, visible, count, message):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(job_gpus.GpuPinError, match=message):
        job_gpus.pin_job_gpus(count)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == visible  # nothing pinned


def test_mig_slices_are_unmeterable_not_misattributed(two_gpu_machine, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-1234abcd")
    gpus = job_gpus.pin_job_gpus(1)
    assert gpus.nvml_indices == () and "MIG" in gpus.unmeterable_reason
    meter = energy.select_meter("cuda", gpus)
    assert meter.source == energy.SOURCE_UNAVAILABLE and "MIG" in meter.describe()["reason"]


@pytest.mark.parametrize(
    ("backend", "settings", "resource", "expected"),
    [
        ("pytorch", {}, 1, 1),
        ("pytorch", {}, 0, 1),
        ("pytorch", {}, 4, 4),
        ("vllm", {"tensor_parallel_size": 2}, 1, 2),
        ("vllm", {}, 1, 1),
        ("llamacpp", {"tensor_parallel_size": 8}, 1, 1),
    ],
)
def test_gpus_needed_is_the_resource_or_the_backends_spread(backend, settings, resource, expected):
    assert job_gpus.gpus_needed(backend, settings, resource) == expected


# -- Zeus window arithmetic, with a stand-in monitor ---------------------------------------------


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


def test_gpu_window_keeps_host_rapl_energy_in_its_own_fields():
    monitor = _StandInZeusMonitor(gpu={0: 40.0, 1: 60.0}, cpu={0: 9.0, 1: 3.0}, dram={0: 1.5})
    meter = energy.ZeusMeter(
        monitor, "nvml", energy.NVML_COUNTER_PERIOD_S, "NVML total-energy counter", JobGpus((2, 3))
    )
    meter.begin()
    time.sleep(0.05)
    reading = meter.end()
    assert monitor.calls == [("begin", False), ("end", False)]
    assert reading.joules == 100.0 and reading.per_device == {"gpu2": 40.0, "gpu3": 60.0}  # NVML indices
    assert reading.cpu_j == 12.0 and reading.dram_j == 1.5  # host energy, not added to the GPUs'
    assert reading.source == energy.SOURCE_ZEUS_NVML and not reading.is_estimate
    assert reading.uncertainty_j == pytest.approx(100.0 / reading.elapsed_s * 0.1)


def test_zeus_counter_that_did_not_advance_is_not_zero_joules():
    meter = energy.ZeusMeter(_StandInZeusMonitor(gpu={0: 0.0}, cpu={0: 0.0}), "nvml", 0.1, "counter", JobGpus((0,)))
    meter.begin()
    reading = meter.end()
    assert reading.joules is None and reading.source == energy.SOURCE_UNAVAILABLE
    assert reading.cpu_j is None and "did not advance" in reading.reason


def test_zeus_rapl_counts_packages_and_keeps_dram_apart():
    meter = energy.ZeusMeter(_StandInZeusMonitor(cpu={0: 5.0, 1: 7.0}, dram={0: 1.0}), "rapl", 0.001, "RAPL")
    meter.begin()
    reading = meter.end()
    assert reading.joules == 12.0 and reading.source == energy.SOURCE_ZEUS_RAPL
    assert reading.per_device == {"cpu0": 5.0, "cpu1": 7.0} and reading.cpu_j == 12.0 and reading.dram_j == 1.0
    assert meter.gpu_label is None


def test_an_nvml_meter_must_name_the_gpus_it_reads():
    with pytest.raises(ValueError, match="name the NVML index of each"):
        energy.ZeusMeter(_StandInZeusMonitor(gpu={0: 1.0, 1: 1.0}), "nvml", 0.1, "counter", JobGpus((1,)))


def test_a_cancelled_window_lets_the_next_one_open():
    monitor = _StandInZeusMonitor(gpu={0: 3.0})
    meter = energy.ZeusMeter(monitor, "nvml", 0.1, "counter", JobGpus((0,)))
    meter.begin()
    meter.cancel()
    meter.cancel()  # nothing open: no-op
    meter.begin()
    assert meter.end().joules == 3.0
    assert [call for call, _ in monitor.calls] == ["begin", "cancel", "begin", "end"]


def test_end_without_begin_is_an_error():
    with pytest.raises(RuntimeError, match="without begin"):
        energy.UnavailableMeter("none").end()
