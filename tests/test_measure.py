"""The measurement protocol end to end on a tiny random GPT-2 (1 layer, hidden 32) on CPU.

The model is real (transformers `generate` through the pytorch backend's code); only its
loading is done here, from a directory this test writes, instead of through `quantise`."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llenergymeasure import energy, measure
from llenergymeasure.backends import LoadInfo
from llenergymeasure.backends.pytorch import PyTorchBackend
from llenergymeasure.manifest import VariantManifest

N_POSITIONS = 16  # GPT-2 has learned positions: a longer sequence cannot run


class TinyBackend(PyTorchBackend):
    """The pytorch backend, loading an unquantised checkpoint directly from `model_dir`."""

    def load(self, variant: VariantManifest | dict[str, Any]) -> LoadInfo:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(1)  # a shared 2-core machine
        start = time.perf_counter()
        self.model = AutoModelForCausalLM.from_pretrained(VariantManifest.coerce(variant).model_dir, dtype=torch.float32).eval()
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
    config = GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=N_POSITIONS, vocab_size=64,
                        bos_token_id=1, eos_token_id=2)
    GPT2LMHeadModel(config).save_pretrained(root / "model")
    variant = {
        "model": "tiny", "quant": "none-float32", "quant_method": "none", "weight_bits": 32,
        "compute_dtype": "float32", "load_dtype": "float32", "model_dir": str(root / "model"),
        "checkpoint_dir": None, "checkpoint_file": None,
        "weight_bytes_disk": (root / "model" / "model.safetensors").stat().st_size,
        "weights": "random", "perplexity": 64.5, "settings": {},
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
            "trials": 2, "warmup_runs": 1, "warmup_min_s": {"cpu": 0.0}, "warmup_cv_threshold": None,
            "warmup_max_s": 5.0, "min_window_s": {"cpu": 0.03}, "idle_baseline_s": {"cpu": 0.05},
            "energy_source": "auto", **measurement,
        },
    }


@pytest.fixture
def tiny_backend(monkeypatch):
    monkeypatch.setattr(measure, "get_backend", lambda name: TinyBackend)


def _run(config, variant_path, out_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    output, env_output = out_dir / "pytorch.parquet", out_dir / "pytorch.env.json"
    measure.run_job(config, "tiny", "none-float32", "pytorch", str(variant_path), str(output), str(env_output))
    return pd.read_parquet(output), json.loads(env_output.read_text())


def test_run_job_measures_every_shape_and_records_failures(tiny_variant, tiny_backend, tmp_path):
    out_dir = tmp_path / "measure" / "tiny" / "none-float32"
    out_dir.mkdir(parents=True)
    (out_dir / "pytorch.parquet").write_text("stale partial output")  # replaced whole, not appended
    rows, env = _run(_config(), tiny_variant, out_dir)

    assert sorted(p.name for p in out_dir.iterdir()) == ["pytorch.env.json", "pytorch.parquet"]  # no temp files left
    assert list(rows.columns) == list(measure.MEASURED_COLUMNS)
    ok = rows[rows["status"] == "ok"]
    failed = rows[rows["status"] == "failed"]
    # 2 batch sizes x 1 runnable prompt length x 2 trials; the too-long prompt fails once per batch size
    assert len(ok) == 4 and len(failed) == 2
    assert sorted(ok["trial"]) == [0, 0, 1, 1]
    assert set(failed["prompt_tokens"]) == {N_POSITIONS + 4} and set(ok["prompt_tokens"]) == {4}
    assert failed["error"].str.len().min() > 0 and failed["latency_s"].isna().all() and failed["energy_j"].isna().all()

    expected_source = energy.select_meter("cpu").source
    for row in ok.to_dict("records"):
        assert row["energy_source"] == expected_source and pd.isna(row["error"])
        assert row["energy_j"] > 0 and row["energy_uncertainty_j"] > 0
        assert row["energy_decode_j"] == pytest.approx(row["energy_j"] - row["energy_prefill_j"])
        assert row["energy_decode_uncertainty_j"] == pytest.approx(
            math.hypot(row["energy_uncertainty_j"], row["energy_prefill_uncertainty_j"]))
        assert row["energy_j_per_output_token"] == pytest.approx(row["energy_j"] / (row["batch_size"] * 4))
        assert row["energy_net_j"] == pytest.approx(row["energy_j"] - row["idle_power_w"] * row["latency_s"])
        assert row["tokens_per_s"] == pytest.approx(row["batch_size"] * 4 / row["latency_s"])
        assert row["tpot_s"] == pytest.approx((row["latency_s"] - row["ttft_s"]) / 3)
        assert 0 < row["ttft_s"] < row["latency_s"]
        # 3 intervals: a median, but too few for a tail percentile (p90 needs 10, p99 100)
        assert row["tpot_p50_s"] > 0 and pd.isna(row["tpot_p90_s"]) and pd.isna(row["tpot_p99_s"])
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
    variant.write_text(json.dumps({"model": "tiny", "quant": "none-float32", "quant_method": "none",
                                   "weight_bits": 32, "compute_dtype": "float32",
                                   "model_dir": str(tmp_path / "missing-model")}))
    rows, env = _run(_config(), variant, tmp_path)
    assert len(rows) == 4 and (rows["status"] == "failed").all()
    assert rows["error"].str.contains("missing-model").all()
    assert env["load_info"] is None and env["failed_rows"] == 4


def test_forced_energy_source_none_leaves_energy_empty(tiny_variant, tiny_backend, tmp_path):
    config = _config(energy_source="none", trials=1)
    config["workload"].update(batch_sizes=[1], prompt_tokens=[4])
    rows, _ = _run(config, tiny_variant, tmp_path)
    assert len(rows) == 1 and rows["status"].iloc[0] == "ok"
    assert rows["energy_source"].iloc[0] == "unavailable"
    assert rows[["energy_j", "energy_prefill_j", "energy_decode_j", "energy_net_j"]].isna().all().all()
    assert rows["latency_s"].iloc[0] > 0


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
        measure.run_job(config, "tiny", "none-float32", "pytorch", str(tmp_path / "nothing.json"),
                        str(tmp_path / "o.parquet"), str(tmp_path / "o.env.json"))
    assert not (tmp_path / "o.parquet").exists()


def _window(reps: int, seconds: float, joules: float | None, uncertainty: float | None) -> measure.Window:
    source = energy.SOURCE_ESTIMATE if joules is not None else energy.SOURCE_UNAVAILABLE
    reading = energy.EnergyReading(joules, {"cpu": joules} if joules else {}, seconds, uncertainty, source, joules is not None)
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


def test_warmup_stops_on_convergence_or_at_the_cap(tiny_variant):
    backend = TinyBackend({}, "cpu")
    backend.load(json.loads(tiny_variant.read_text()))
    inputs = backend.prepare_inputs(1, 4, seed=0)
    base = measure.resolve_protocol(_config())
    loose = measure.warm_up(backend, inputs, base.__class__(**{**base.__dict__, "warmup_cv_threshold": 10.0}))
    assert loose.runs == measure.WARMUP_CV_WINDOW and loose.cv is not None
    capped = measure.warm_up(backend, inputs, base.__class__(**{**base.__dict__, "warmup_cv_threshold": 1e-12, "warmup_max_s": 0.2}))
    assert 0.2 <= capped.seconds < 1.0 and capped.runs > measure.WARMUP_CV_WINDOW
    timed = measure.warm_up(backend, inputs, base.__class__(**{**base.__dict__, "warmup_runs": 2, "warmup_min_s": 0.1}))
    assert timed.seconds >= 0.1 and timed.runs >= 2


def test_a_window_whose_work_fails_is_cancelled_so_the_next_opens(tiny_variant):
    from test_energy import _StandInZeusMonitor  # ZeusMonitor's window bookkeeping, without a GPU

    class OutOfMemory(TinyBackend):
        def generate(self, inputs, new_tokens, on_token=None):
            raise RuntimeError("CUDA out of memory (simulated)")

    meter = energy.ZeusMeter(_StandInZeusMonitor(gpu={0: 2.0}), "nvml", 0.1, "counter")
    with pytest.raises(RuntimeError, match="out of memory"):
        measure.measure_window(OutOfMemory({}, "cpu"), meter, None, 2, 0.01)
    backend = TinyBackend({}, "cpu")
    backend.load(json.loads(tiny_variant.read_text()))
    window = measure.measure_window(backend, meter, backend.prepare_inputs(1, 4, 0), 2, 0.01)
    assert window.reading.joules == 2.0 and window.repetitions >= 1


def test_protocol_takes_unset_measurement_settings_from_the_config_defaults():
    from llenergymeasure.config import DEFAULTS

    protocol = measure.resolve_protocol({"device": "cpu", "workload": {"batch_sizes": [1], "prompt_tokens": [8], "new_tokens": 2},
                                         "measurement": {"trials": 1}})
    assert protocol.min_window_s == DEFAULTS["measurement"]["min_window_s"]["cpu"]
    assert protocol.warmup_max_s == DEFAULTS["measurement"]["warmup_max_s"] and protocol.energy_source == "auto"
