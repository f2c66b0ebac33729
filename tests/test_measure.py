"""The measurement protocol end to end on a tiny random GPT-2 (1 layer, hidden 32) on CPU.

The model is real (transformers `generate` through the pytorch backend's code); only its
loading is done here, from a directory this test writes, instead of through `quantise`."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llenergymeasure import energy, lora, measure, schema
from llenergymeasure.backends import LoadInfo
from llenergymeasure.backends.pytorch import PyTorchBackend
from llenergymeasure.job_gpus import JobGpus
from llenergymeasure.manifest import VariantManifest

N_POSITIONS = 16  # GPT-2 has learned positions: a longer sequence cannot run


class TinyBackend(PyTorchBackend):
    """The pytorch backend, loading an unquantised checkpoint directly from `model_dir`."""

    def load(self, variant: VariantManifest | dict[str, Any]) -> LoadInfo:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(1)  # a shared 2-core machine
        start = time.perf_counter()
        self.model = AutoModelForCausalLM.from_pretrained(
            VariantManifest.coerce(variant).model_dir, dtype=torch.float32
        ).eval()
        self.vocab_size = int(self.model.config.vocab_size)
        self.pad_token_id = 0
        weight_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return LoadInfo("torch-dense-float32", "float32", weight_bytes, False, time.perf_counter() - start)


@pytest.fixture(scope="module")
def tiny_variant(tmp_path_factory) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=32, n_layer=1, n_head=2, n_positions=N_POSITIONS, vocab_size=64, bos_token_id=1, eos_token_id=2
    )
    GPT2LMHeadModel(config).save_pretrained(root / "model")
    variant = {
        "model": "tiny",
        "quant": "none-float32",
        "quant_method": "none",
        "weight_bits": 32,
        "compute_dtype": "float32",
        "load_dtype": "float32",
        "model_dir": str(root / "model"),
        "checkpoint_dir": None,
        "checkpoint_file": None,
        "weight_bytes_disk": (root / "model" / "model.safetensors").stat().st_size,
        "weights": "random",
        "perplexity": 64.5,
        "settings": {},
    }
    path = root / "variant.json"
    path.write_text(json.dumps(variant))
    return path


def _config(**measurement: Any) -> dict[str, Any]:
    return {
        "seed": 0,
        "device": "cpu",
        "workload": {"batch_sizes": [1, 2], "prompt_tokens": [4, N_POSITIONS + 4], "new_tokens": 4},
        "measurement": {
            "trials": 2,
            "warmup_runs": 1,
            "warmup_min_s": {"cpu": 0.0},
            "warmup_cv_threshold": None,
            "warmup_max_s": 5.0,
            "min_window_s": {"cpu": 0.03},
            "idle_baseline_s": {"cpu": 0.05},
            "energy_source": "auto",
            **measurement,
        },
    }


@pytest.fixture
def tiny_backend(monkeypatch):
    monkeypatch.setattr(measure, "get_backend", lambda name: TinyBackend)


def _run(config, variant_path, out_dir: Path, **job: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    output, env_output = out_dir / "pytorch.parquet", out_dir / "pytorch.env.json"
    measure.run_job(config, "tiny", "none-float32", "pytorch", str(variant_path), str(output), str(env_output), **job)
    return pd.read_parquet(output), json.loads(env_output.read_text())


@pytest.fixture(autouse=True)
def _no_stated_power(monkeypatch):
    monkeypatch.delenv("LLEM_CPU_TDP_W", raising=False)
    monkeypatch.delenv("LLEM_CPU_TDP_THREADS", raising=False)


def test_the_rows_measure_builds_are_exactly_its_schema_columns(tiny_variant, tiny_backend, tmp_path, monkeypatch):
    """Every field a successful row carries is a stage-measure column of the schema, and every
    stage-measure column is a field of it but an adapter's description (write_rows refuses
    the first kind of drift)."""
    built: list[dict[str, Any]] = []
    real_write_rows = measure.write_rows
    monkeypatch.setattr(measure, "write_rows", lambda rows, output: (built.extend(rows), real_write_rows(rows, output)))
    out_dir = tmp_path / "measure"
    out_dir.mkdir()
    rows, _ = _run(_config(), tiny_variant, out_dir)
    ok = [row for row in built if row["status"] == "ok"]
    missing = set(schema.columns("measure")) - set().union(*ok)
    adapter_description = set(lora.ROW_COLUMNS) - set(lora.KEY_COLUMNS)  # filled on adapter jobs' rows only
    assert ok and missing == adapter_description, missing ^ adapter_description
    assert list(rows.columns) == list(schema.columns("measure"))
    with pytest.raises(schema.SchemaError, match=r"not declared with stage: measure.*colour"):
        real_write_rows([{**ok[0], "colour": "blue"}], out_dir / "refused.parquet")


def test_run_job_measures_every_shape_and_records_failures(tiny_variant, tiny_backend, tmp_path, monkeypatch):
    # a stated power, so that the energy arithmetic has numbers to check on a sensorless machine
    monkeypatch.setenv("LLEM_CPU_TDP_W", "120")
    monkeypatch.setenv("LLEM_CPU_TDP_THREADS", "2")
    out_dir = tmp_path / "measure" / "tiny" / "none-float32"
    out_dir.mkdir(parents=True)
    (out_dir / "pytorch.parquet").write_text("stale partial output")  # replaced whole, not appended
    rows, env = _run(_config(warmup_cv_threshold=0.5, warmup_max_s=2.0), tiny_variant, out_dir, replicate=2)

    assert sorted(p.name for p in out_dir.iterdir()) == ["pytorch.env.json", "pytorch.parquet"]  # no temp files left
    assert list(rows.columns) == list(measure.MEASURED_COLUMNS)
    ok = rows[rows["status"] == "ok"]
    failed = rows[rows["status"] == "failed"]
    # 2 batch sizes x 1 runnable prompt length x 2 trials; the too-long prompt fails once per batch size
    assert len(ok) == 4 and len(failed) == 2
    assert sorted(ok["trial"]) == [0, 0, 1, 1]
    assert set(failed["prompt_tokens"]) == {N_POSITIONS + 4} and set(ok["prompt_tokens"]) == {4}
    assert failed["error"].str.len().min() > 0 and failed["latency_s"].isna().all() and failed["energy_j"].isna().all()

    expected_source = energy.select_meter("cpu").source  # RAPL where readable, else the stated-power estimate
    assert (rows["replicate"] == 2).all() and env["job"]["replicate"] == 2
    for row in ok.to_dict("records"):
        assert row["energy_source"] == expected_source and pd.isna(row["error"])
        if expected_source == energy.SOURCE_ESTIMATE:
            assert row["energy_is_estimate"] and row["energy_assumption"].startswith("LLEM_CPU_TDP_W=120 W")
            assert "x 60 W" in row["energy_assumption"]
        assert pd.isna(row["energy_unavailable_reason"]) and pd.isna(row["energy_gpu_indices"])
        assert row["warmup_converged"] in (True, False) and row["warmup_runs"] >= 1
        assert not row["warmup_converged"] or (
            row["warmup_runs"] >= measure.WARMUP_CV_WINDOW and row["warmup_cv"] <= 0.5
        )
        assert row["energy_j"] > 0 and row["energy_uncertainty_j"] > 0
        assert row["energy_decode_j"] == pytest.approx(row["energy_j"] - row["energy_prefill_j"])
        assert row["energy_decode_uncertainty_j"] == pytest.approx(
            math.hypot(row["energy_uncertainty_j"], row["energy_prefill_uncertainty_j"])
        )
        assert row["energy_j_per_output_token"] == pytest.approx(row["energy_j"] / (row["batch_size"] * 4))
        assert row["energy_net_j"] == pytest.approx(row["energy_j"] - row["idle_power_w"] * row["latency_s"])
        assert row["tokens_per_s"] == pytest.approx(row["batch_size"] * 4 / row["latency_s"])
        assert row["tpot_s"] == pytest.approx((row["latency_s"] - row["ttft_s"]) / 3)
        assert 0 < row["ttft_s"] < row["latency_s"]
        # every call of the full window streamed: 3 intervals per call; p90 needs 10, p99 100
        assert row["token_timing_source"] == "full-window" and row["ttft_source"] == "prefill-window"
        intervals = 3 * row["window_repetitions"]
        assert row["tpot_p50_s"] > 0
        assert pd.isna(row["tpot_p90_s"]) == (intervals < 10) and pd.isna(row["tpot_p99_s"]) == (intervals < 100)
        assert row["window_s"] >= 0.03 and row["prefill_window_s"] >= 0.03
        assert row["window_repetitions"] >= 1 and row["prefill_window_repetitions"] >= 1
        assert row["warmup_runs"] >= 1 and row["peak_memory_bytes"] > 0
        assert row["kernel_path"] == "torch-dense-float32" and row["weight_bytes_memory"] > 0
        assert row["quant_method"] == "none" and row["perplexity"] == 64.5 and row["weights"] == "random"
        assert row["device"] == "cpu" and row["platform_id"] == env["platform_id"]
        assert json.loads(row["energy_per_device_json"])
        assert json.loads(row["backend_settings_json"])["torch_threads"] == 1

    assert env["job"]["quant"] == "none-float32" and env["rows"] == 6 and env["failed_rows"] == 2
    assert env["energy_meter"]["source"] == expected_source
    assert env["idle_baseline"]["seconds"] >= 0.05
    assert [shape["error"] is None for shape in env["shapes"]] == [True, False, True, False]
    assert env["gpu_states"][0]["label"] == "job-start" and env["gpu_states"][-1]["label"] == "job-end"


def test_load_failure_gives_one_failed_row_per_shape(tiny_backend, tmp_path):
    variant = tmp_path / "variant.json"
    variant.write_text(
        json.dumps(
            {
                "model": "tiny",
                "quant": "none-float32",
                "quant_method": "none",
                "weight_bits": 32,
                "compute_dtype": "float32",
                "model_dir": str(tmp_path / "missing-model"),
            }
        )
    )
    rows, env = _run(_config(), variant, tmp_path)
    assert len(rows) == 4 and (rows["status"] == "failed").all()
    assert rows["error"].str.contains("missing-model").all()
    assert env["load_info"] is None and env["failed_rows"] == 4


EMPTY_ENERGY = [
    "energy_j",
    "energy_j_per_output_token",
    "energy_uncertainty_j",
    "energy_prefill_j",
    "energy_decode_j",
    "energy_net_j",
    "idle_power_w",
    "energy_per_device_json",
    "energy_cpu_j",
    "energy_dram_j",
    "energy_assumption",
]


def test_forced_energy_source_none_leaves_energy_empty(tiny_variant, tiny_backend, tmp_path):
    config = _config(energy_source="none", trials=1)
    config["workload"].update(batch_sizes=[1], prompt_tokens=[4])
    rows, _ = _run(config, tiny_variant, tmp_path)
    assert len(rows) == 1 and rows["status"].iloc[0] == "ok"
    assert rows["energy_source"].iloc[0] == "unavailable"
    assert rows["energy_unavailable_reason"].iloc[0] == "energy_source none requested"
    assert rows[EMPTY_ENERGY].isna().all().all()
    assert rows["latency_s"].iloc[0] > 0


class _CountingPlainBackend(TinyBackend):
    """The tiny backend as vLLM is: it does not stream in its measured window."""

    streams_in_window = False
    calls: list[int]

    def generate(self, inputs, new_tokens, on_token=None):
        self.calls.append(new_tokens)
        return super().generate(inputs, new_tokens, on_token)


@pytest.mark.parametrize("streams", [True, False])
@pytest.mark.parametrize("energy_source", ["none", "estimate"])
def test_prefill_window_for_energy_is_measured_only_where_it_adds_something(
    tiny_variant, tmp_path, monkeypatch, streams, energy_source
):
    """for-energy: without energy, a backend that streams in its window takes TTFT from the
    first streamed token of the full window, and no prefill-only call runs; with energy to
    split, or on a backend that does not stream in-window, the prefill window is measured."""
    monkeypatch.setenv("LLEM_CPU_TDP_W", "120")
    backend = _CountingBackend if streams else _CountingPlainBackend
    backend.calls = []
    monkeypatch.setattr(measure, "get_backend", lambda name: backend)
    config = _config(energy_source=energy_source, prefill_window="for-energy", trials=2)
    config["workload"].update(batch_sizes=[2], prompt_tokens=[4])
    rows, _ = _run(config, tiny_variant, tmp_path)
    assert list(rows["status"]) == ["ok", "ok"]
    skipped = streams and energy_source == "none"
    assert (1 in backend.calls) == (not skipped)  # a prefill-only call is generate(inputs, 1)
    expected = "full-window-stream" if skipped else "prefill-window"
    assert (rows["ttft_source"] == expected).all()
    assert (
        rows["prefill_window_s"].isna().all() == skipped and rows["prefill_window_repetitions"].isna().all() == skipped
    )
    assert (rows["ttft_s"] > 0).all() and (rows["ttft_s"] < rows["latency_s"]).all()
    assert rows["tpot_s"].to_numpy() == pytest.approx(((rows["latency_s"] - rows["ttft_s"]) / 3).to_numpy())
    if energy_source == "estimate":  # the split is there, as with `always`
        assert rows["energy_decode_j"].to_numpy() == pytest.approx(
            (rows["energy_j"] - rows["energy_prefill_j"]).to_numpy()
        )
    else:
        assert rows[EMPTY_ENERGY].isna().all().all()


def test_a_streamed_first_token_is_its_call_s_start_to_its_first_stamp():
    from llenergymeasure import trial

    stamps = [[10.0, 10.5, 10.6, 10.8], [20.0, 20.3, 20.4, 20.5]]
    assert trial.first_token_s(stamps) == pytest.approx(0.4)
    assert trial.token_intervals(stamps) == pytest.approx([0.1, 0.2, 0.1, 0.1])
    assert trial.first_token_s([[1.0]]) is None
    full = _window(2, 1.0, None, None)
    idle = energy.IdleReading(None, 0.0, energy.SOURCE_UNAVAILABLE)
    metrics = measure.trial_metrics(None, full, [0.1], 1, 5, idle, streamed_ttft_s=0.1)
    assert metrics["ttft_s"] == 0.1 and metrics["tpot_s"] == pytest.approx(0.1)
    assert metrics["ttft_source"] == "full-window-stream" and metrics["prefill_window_s"] is None
    with pytest.raises(ValueError, match="streamed time to first token"):
        measure.trial_metrics(None, full, [0.1], 1, 5, idle)


def test_a_bad_prefill_window_word_is_one_line():
    config = _config(prefill_window="sometimes")
    with pytest.raises(
        measure.MeasureConfigError, match=r"^measurement.prefill_window: 'sometimes'; allowed: always, for-energy$"
    ):
        measure.resolve_protocol(config)


def test_max_batch_tokens_measures_only_the_shapes_within_it(tiny_variant, tiny_backend, tmp_path):
    config = _config(trials=1)
    config["workload"].update(batch_sizes=[1, 2], prompt_tokens=[4, 8], max_batch_tokens=8)
    assert measure.resolve_protocol(config).shapes() == [(1, 4), (1, 8), (2, 4)]
    rows, _ = _run(config, tiny_variant, tmp_path)
    assert sorted(set(zip(rows["batch_size"], rows["prompt_tokens"], strict=True))) == [(1, 4), (1, 8), (2, 4)]
    del config["workload"]["max_batch_tokens"]
    assert len(measure.resolve_protocol(config).shapes()) == 4  # unset: the whole grid


def test_a_max_batch_tokens_that_leaves_no_shape_is_one_line():
    config = _config()
    config["workload"].update(batch_sizes=[2, 4], prompt_tokens=[8], max_batch_tokens=15)
    with pytest.raises(
        measure.MeasureConfigError,
        match=r"^workload.max_batch_tokens: 15 leaves no shape to measure \(the smallest batch x prompt is 16\); "
        r"raise it to at least 16 or remove it$",
    ):
        measure.resolve_protocol(config)


@pytest.mark.skipif(energy.rapl_packages()[0] > 0, reason="RAPL is readable here, so a CPU job is measured")
def test_no_sensor_and_no_stated_power_gives_empty_energy_with_the_reason(tiny_variant, tiny_backend, tmp_path):
    config = _config(trials=1)
    config["workload"].update(batch_sizes=[1], prompt_tokens=[4])
    rows, env = _run(config, tiny_variant, tmp_path)
    row = rows.iloc[0]
    assert row["status"] == "ok" and row["latency_s"] > 0
    assert row["energy_source"] == "unavailable" and not row["energy_is_estimate"]
    assert rows[EMPTY_ENERGY].isna().all().all()  # empty, never 0 J
    assert (
        "no CPU energy sensor" in row["energy_unavailable_reason"]
        and "LLEM_CPU_TDP_W" in row["energy_unavailable_reason"]
    )
    assert env["energy_meter"]["source"] == "unavailable"


@pytest.mark.parametrize("raw", ["eighty", "-1"])
def test_bad_stated_power_fails_before_loading_in_one_line(tiny_variant, tiny_backend, tmp_path, monkeypatch, raw):
    monkeypatch.setenv("LLEM_CPU_TDP_W", raw)
    with pytest.raises(
        energy.EnergySourceError, match=r"^LLEM_CPU_TDP_W=.*positive float; fix it or unset it"
    ) as error:
        _run(_config(), tiny_variant, tmp_path)
    assert "\n" not in str(error.value) and not (tmp_path / "pytorch.parquet").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["workload"].update(new_tokens=1), r"^workload.new_tokens: expected an integer >= 2"),
        (lambda c: c["measurement"].update(min_window_s={"cuda": 5.0}), r"^measurement.min_window_s: .*missing 'cpu'"),
        (lambda c: c["measurement"].update(trials=0), r"^measurement.trials: "),
        (lambda c: c["workload"].update(batch_sizes=[]), r"^workload.batch_sizes: "),
    ],
)
def test_bad_settings_fail_before_loading(change, message, tmp_path):
    config = _config()
    change(config)
    with pytest.raises(measure.MeasureConfigError, match=message):
        measure.run_job(
            config,
            "tiny",
            "none-float32",
            "pytorch",
            str(tmp_path / "nothing.json"),
            str(tmp_path / "o.parquet"),
            str(tmp_path / "o.env.json"),
        )
    assert not (tmp_path / "o.parquet").exists()


def _window(reps: int, seconds: float, joules: float | None, uncertainty: float | None) -> measure.Window:
    source = energy.SOURCE_ESTIMATE if joules is not None else energy.SOURCE_UNAVAILABLE
    reading = energy.EnergyReading(
        joules,
        {"cpu": joules} if joules else {},
        seconds,
        uncertainty,
        source,
        joules is not None,
        reason=None if joules is not None else "test: nothing read",
    )
    return measure.Window(reps, seconds, reading)


def test_trial_metrics_divide_windows_by_repetitions_and_propagate_uncertainty():
    prefill = _window(10, 1.0, 20.0, 3.0)  # 0.1 s and 2 J per call
    full = _window(2, 1.0, 50.0, 8.0)  # 0.5 s and 25 J per call
    idle = energy.IdleReading(4.0, 1.0, energy.SOURCE_ESTIMATE, True)
    metrics = measure.trial_metrics(prefill, full, [0.1, 0.2, 0.3], batch_size=2, new_tokens=5, idle=idle)
    assert metrics["ttft_s"] == pytest.approx(0.1) and metrics["latency_s"] == pytest.approx(0.5)
    assert metrics["tpot_s"] == pytest.approx(0.1) and metrics["tokens_per_s"] == pytest.approx(20.0)
    assert metrics["energy_j"] == 25.0 and metrics["energy_prefill_j"] == 2.0 and metrics["energy_decode_j"] == 23.0
    assert metrics["energy_uncertainty_j"] == 4.0 and metrics["energy_prefill_uncertainty_j"] == pytest.approx(0.3)
    assert metrics["energy_decode_uncertainty_j"] == pytest.approx(math.hypot(4.0, 0.3))
    assert metrics["energy_net_j"] == pytest.approx(25.0 - 4.0 * 0.5)
    assert metrics["energy_j_per_output_token"] == pytest.approx(2.5)
    assert metrics["tpot_p50_s"] == pytest.approx(0.2) and metrics["tpot_p90_s"] is None
    many = measure.trial_metrics(prefill, full, [0.01 * i for i in range(1, 101)], 2, 5, idle)
    assert many["tpot_p90_s"] == pytest.approx(0.901) and many["tpot_p99_s"] == pytest.approx(0.9901)
    unmeasured = measure.trial_metrics(prefill, _window(2, 1.0, None, None), [], 2, 5, idle)
    assert unmeasured["energy_j"] is None and unmeasured["energy_decode_j"] is None
    assert unmeasured["energy_source"] == "unavailable" and unmeasured["tpot_p50_s"] is None
    assert unmeasured["energy_cpu_j"] is None and unmeasured["energy_unavailable_reason"] == "test: nothing read"


def test_host_rapl_energy_is_per_call_and_apart_from_gpu_joules():
    gpu = energy.EnergyReading(60.0, {"gpu1": 60.0}, 1.0, 6.0, energy.SOURCE_ZEUS_NVML, False, cpu_j=10.0, dram_j=2.0)
    full = measure.Window(2, 1.0, gpu)
    idle = energy.IdleReading(None, 0.0, energy.SOURCE_ZEUS_NVML)
    metrics = measure.trial_metrics(full, full, [0.1], batch_size=1, new_tokens=2, idle=idle)
    assert metrics["energy_j"] == 30.0 and metrics["energy_cpu_j"] == 5.0 and metrics["energy_dram_j"] == 1.0
    assert json.loads(metrics["energy_per_device_json"]) == {"gpu1": 30.0}


class _CountingBackend(TinyBackend):
    """Records the new-token count of every generate call."""

    calls: list[int]

    def generate(self, inputs, new_tokens, on_token=None):
        self.calls.append(new_tokens)
        return super().generate(inputs, new_tokens, on_token)


def test_warmup_runs_the_measured_call_and_stops_on_convergence_or_at_the_cap(tiny_variant):
    backend = _CountingBackend({}, "cpu")
    backend.load(json.loads(tiny_variant.read_text()))
    inputs = backend.prepare_inputs(1, 4, seed=0)
    base = measure.resolve_protocol(_config())
    backend.calls = []
    loose = measure.warm_up(backend, inputs, dataclasses.replace(base, warmup_cv_threshold=10.0))
    assert loose.runs == measure.WARMUP_CV_WINDOW and loose.cv is not None and loose.converged is True
    assert backend.calls == [base.new_tokens] * loose.runs  # the trials' own call, not a 2-token stand-in
    capped = measure.warm_up(backend, inputs, dataclasses.replace(base, warmup_cv_threshold=1e-12, warmup_max_s=0.2))
    # the cap ends it after the call running at 0.2 s (a loaded machine can stretch that call)
    assert 0.2 <= capped.seconds < 5.0 and capped.runs > measure.WARMUP_CV_WINDOW and capped.converged is False
    assert capped.row() == {
        "warmup_runs": capped.runs,
        "warmup_s": capped.seconds,
        "warmup_cv": capped.cv,
        "warmup_converged": False,
    }
    timed = measure.warm_up(
        backend, inputs, dataclasses.replace(base, warmup_runs=2, warmup_min_s=0.1, warmup_cv_threshold=None)
    )
    assert timed.seconds >= 0.1 and timed.runs >= 2 and timed.converged is None
    fixed = measure.warm_up(
        backend, inputs, dataclasses.replace(base, warmup_runs=7, warmup_cv_threshold=10.0, warmup_max_s=0.0)
    )
    assert fixed.runs == 7  # the cap never cuts the fixed count short


class _SteppingBackend:
    """A backend whose generate takes 30 ms for the first calls and 10 ms after (a cold start)."""

    def __init__(self, cold_calls: int):
        self.cold_calls = cold_calls
        self.count = 0

    def generate(self, inputs, new_tokens, on_token=None):
        self.count += 1
        time.sleep(0.03 if self.count <= self.cold_calls else 0.01)
        return new_tokens

    def synchronize(self):
        pass


def test_cv_stop_waits_until_the_cold_calls_leave_the_window():
    from llenergymeasure import warmup

    result = warmup.warm_up(_SteppingBackend(cold_calls=3), None, 4, runs=1, min_s=0.0, cv_threshold=0.2, max_s=5.0)
    # the rolling window of 5 must hold no 30 ms call: at least 3 + 5 calls
    assert result.converged is True and result.runs >= 3 + warmup.WARMUP_CV_WINDOW and result.cv <= 0.2
    fixed = warmup.warm_up(_SteppingBackend(cold_calls=3), None, 4, runs=2, min_s=0.0, cv_threshold=None, max_s=5.0)
    assert fixed.runs == 2 and fixed.converged is None  # the old default: two calls, still cold


def test_a_window_whose_work_fails_is_cancelled_so_the_next_opens(tiny_variant):
    from test_energy import _StandInZeusMonitor  # ZeusMonitor's window bookkeeping, without a GPU

    class OutOfMemory(TinyBackend):
        def generate(self, inputs, new_tokens, on_token=None):
            raise RuntimeError("CUDA out of memory (simulated)")

    meter = energy.ZeusMeter(_StandInZeusMonitor(gpu={0: 2.0}), "nvml", 0.1, "counter", JobGpus((0,)))
    with pytest.raises(RuntimeError, match="out of memory"):
        measure.measure_window(OutOfMemory({}, "cpu"), meter, None, 2, 0.01)
    backend = TinyBackend({}, "cpu")
    backend.load(json.loads(tiny_variant.read_text()))
    window = measure.measure_window(backend, meter, backend.prepare_inputs(1, 4, 0), 2, 0.01)
    assert window.reading.joules == 2.0 and window.repetitions >= 1


def test_protocol_takes_unset_measurement_settings_from_the_config_defaults():
    from llenergymeasure.config import DEFAULTS

    protocol = measure.resolve_protocol(
        {
            "device": "cpu",
            "workload": {"batch_sizes": [1], "prompt_tokens": [8], "new_tokens": 2},
            "measurement": {"trials": 1},
        }
    )
    assert protocol.min_window_s == DEFAULTS["measurement"]["min_window_s"]["cpu"]
    assert protocol.warmup_max_s == DEFAULTS["measurement"]["warmup_max_s"]["cpu"] and protocol.energy_source == "auto"
    assert protocol.warmup_cv_threshold == DEFAULTS["measurement"]["warmup_cv_threshold"] == 0.05
    scalar = measure.resolve_protocol(
        {
            "device": "cpu",
            "workload": {"batch_sizes": [1], "prompt_tokens": [8], "new_tokens": 2},
            "measurement": {"trials": 1, "warmup_max_s": 7},
        }
    )
    assert scalar.warmup_max_s == 7.0  # one figure for every device is still accepted


def test_the_defaults_are_the_schemas_and_pass_it():
    """The defaults are read from the schema (written nowhere else) and a config made of only
    the required sections, with them merged in, passes the schema it came from."""
    from llenergymeasure.config import DEFAULTS, load_schema, validate_schema

    schema = load_schema()
    documented = {
        key: spec["default"]
        for key, spec in schema["properties"]["measurement"]["properties"].items()
        if "default" in spec
    }
    assert {"trials", "replicates", "warmup_runs", "min_window_s", "idle_baseline_s"} <= set(documented)
    assert DEFAULTS["measurement"] == documented
    optional = set(schema["properties"]) - set(schema.get("required", [])) - {"models", "workload"}
    assert optional <= set(DEFAULTS), optional - set(DEFAULTS)  # every optional section has its defaults
    minimal = {
        "models": {
            "tiny": {"architecture": "config/models/tiny-llama.json", "backends": {"pytorch": ["none-float32"]}}
        },
        "workload": {"batch_sizes": [1], "prompt_tokens": [8], "new_tokens": 2},
    }
    validate_schema({**DEFAULTS, **minimal})


class _CpuComputeOnCudaLabel(TinyBackend):
    """The tiny model computing on the CPU for a job labelled cuda: only the GPU's driver
    (the NVML stand-in) is pretend, so the job's pinning and metering run for real."""

    def synchronize(self):
        pass

    def peak_memory_reset(self):
        pass

    def peak_memory_bytes(self):
        return None

    def close(self):
        self.model = None


def test_a_cuda_job_pinned_to_gpu_1_of_two_records_and_meters_gpu_1_only(tiny_variant, tmp_path, monkeypatch):
    import os

    from nvml_standin import two_gpus
    from zeus.device.gpu.nvidia import nvml_is_available

    saved = {name: os.environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    nvml = two_gpus().install(monkeypatch)
    monkeypatch.setattr(measure, "get_backend", lambda name: _CpuComputeOnCudaLabel)
    try:
        config = _config(trials=1)
        config.update(device="cuda")
        config["measurement"].update(
            min_window_s={"cuda": 0.03},
            idle_baseline_s={"cuda": 0.05},
            warmup_min_s={"cuda": 0.0},
            warmup_max_s={"cuda": 2.0},
        )
        config["workload"].update(batch_sizes=[1], prompt_tokens=[4])
        rows, env = _run(config, tiny_variant, tmp_path, gpu_resource=1)
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
        nvml_is_available.cache_clear()
    row = rows.iloc[0]
    assert row["status"] == "ok" and row["device"] == "cuda"
    assert row["energy_source"] == "zeus-nvml" and row["energy_gpu_indices"] == "1"
    assert list(json.loads(row["energy_per_device_json"])) == ["gpu1"]
    assert nvml.gpus[0].reads == 0 and nvml.gpus[1].reads > 0  # GPU 0 was never metered
    # GPU 1's counter advances 20 J per read; one window reads it twice (begin, end)
    assert row["energy_j"] * row["window_repetitions"] == pytest.approx(20.0)
    assert env["job"]["gpus"]["nvml_indices"] == [1] and env["energy_meter"]["gpus"] == "1"
    assert env["scheduler"]["CUDA_VISIBLE_DEVICES"] == "1"
