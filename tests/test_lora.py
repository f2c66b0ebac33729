"""LoRA adapters: reproducible random adapters, exact adapter FLOPs, config refusals, the
overhead analysis, and a real pipeline run that adds an adapter to a finished sweep.

Real parts only: PEFT builds, saves, loads and merges the adapters; FlopCounterMode counts
real `PeftModel.generate()` calls with eager attention; the pipeline test runs snakemake.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import BIN, REPO_ROOT, copy_workflow, run_snakemake

peft = pytest.importorskip("peft")
torch = pytest.importorskip("torch")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from llenergymeasure import adapter_analysis, flops, lora, lora_build  # noqa: E402
from llenergymeasure.adapter_flops import adapter_generate_flops, add_adapter_flops  # noqa: E402
from llenergymeasure.config import ConfigError, load_config  # noqa: E402

TOKENS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
ARCHITECTURES = {
    "llama": dict(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=256,
        **TOKENS,
    ),
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=256, **TOKENS),
}


def _model_dir(tmp_path: Path, family: str) -> Path:
    directory = tmp_path / f"model-{family}"
    if not directory.exists():
        torch.manual_seed(0)
        config = AutoConfig.for_model(family, **ARCHITECTURES[family])
        AutoModelForCausalLM.from_config(config).save_pretrained(directory, safe_serialization=True)
    return directory


def _settings(**overrides):
    return {
        "source": "random",
        "rank": 4,
        "alpha": 16,
        "target_modules": ["q_proj", "v_proj"],
        "dropout": 0.0,
        "seed": 0,
        **overrides,
    }


# ------------------------------------------------------------------ building


def test_a_random_adapter_is_byte_identical_across_builds_and_changes_the_outputs(tmp_path):
    model_dir = _model_dir(tmp_path, "llama")
    first = lora_build.build_adapter("m", "a", _settings(), model_dir, tmp_path / "one")
    second = lora_build.build_adapter("m", "a", _settings(), model_dir, tmp_path / "two")
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert (
        first["sha256"] == second["sha256"] and first["bytes"] == (tmp_path / "one" / lora_build.WEIGHTS).stat().st_size
    )
    other_seed = lora_build.build_adapter("m", "a", _settings(seed=1), model_dir, tmp_path / "three")
    assert other_seed["sha256"] != first["sha256"]
    # B is not PEFT's default zeros: the adapter changes the logits, and says so
    assert first["output_change_max_abs"] > 1e-3 and "init_lora_weights=False" in first["init"]
    assert [m["name"] for m in first["modules"]] == [
        f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")
    ]
    assert first["params"] == 2 * 4 * ((64 + 64) + (64 + 32))  # layers x rank x (d_in + d_out) summed
    manifest = json.loads((tmp_path / "one" / lora_build.MANIFEST).read_text())
    assert manifest["rank"] == 4 and manifest["alpha"] == 16 and manifest["source"] == "random"


def test_a_path_adapter_is_copied_and_checked_against_the_model(tmp_path):
    model_dir = _model_dir(tmp_path, "llama")
    lora_build.build_adapter("m", "a", _settings(rank=2), model_dir, tmp_path / "made")
    copied = lora_build.build_adapter(
        "m", "b", {"source": "path", "path": str(tmp_path / "made")}, model_dir, tmp_path / "copy"
    )
    assert copied["rank"] == 2 and copied["source"] == "path"
    assert (tmp_path / "copy" / lora_build.WEIGHTS).read_bytes() == (
        tmp_path / "made" / lora_build.WEIGHTS
    ).read_bytes()
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "adapter_model.bin").write_bytes(b"x")
    with pytest.raises(lora_build.AdapterBuildError, match="safetensors only"):
        lora_build.build_adapter(
            "m", "c", {"source": "path", "path": str(tmp_path / "pickled")}, model_dir, tmp_path / "no"
        )
    assert not (tmp_path / "no").exists()


# ------------------------------------------------------------------ FLOPs against the counter


def _counted(model, batch: int, prompt: int, new: int) -> int:
    ids = torch.randint(3, 128, (batch, prompt), generator=torch.Generator().manual_seed(1))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )
    assert out.shape == (batch, prompt + new)
    return counter.get_total_flops()


# (family, rank, targets, dropout, (batch, prompt, new)): ranks, targets, shapes not seen elsewhere
CASES = [
    ("llama", 4, ["q_proj", "v_proj"], 0.0, (2, 8, 5)),
    ("llama", 3, ["k_proj", "o_proj", "gate_proj", "down_proj"], 0.1, (1, 13, 7)),
    ("llama", 1, ["up_proj"], 0.0, (3, 5, 2)),
    ("gpt2", 5, ["c_attn", "c_proj"], 0.05, (2, 9, 4)),  # Conv1D projections; c_proj in attention and MLP
]


@pytest.mark.parametrize("family,rank,targets,dropout,shape", CASES, ids=[f"{c[0]}-r{c[1]}" for c in CASES])
def test_adapter_flops_match_the_counter_unmerged_and_merged(tmp_path, family, rank, targets, dropout, shape):
    model_dir = _model_dir(tmp_path, family)
    settings = _settings(rank=rank, target_modules=targets, dropout=dropout)
    manifest = lora_build.build_adapter("m", "a", settings, model_dir, tmp_path / "adapter")
    base = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    hf_config = base.config.to_dict()
    batch, prompt, new = shape
    base_count = flops.count_generate(hf_config, batch, prompt, new)["flops_total"]
    assert _counted(base, batch, prompt, new) == base_count
    model = peft.PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    extra = adapter_generate_flops(manifest, batch, prompt, new, merged=False)
    assert extra["flops_total"] > 0
    assert _counted(model, batch, prompt, new) == base_count + extra["flops_total"]
    prefill_only = adapter_generate_flops(manifest, batch, prompt, 1, merged=False)["flops_total"]
    assert (
        _counted(model, batch, prompt, 1)
        == flops.count_generate(hf_config, batch, prompt, 1)["flops_total"] + prefill_only
    )
    merged = model.merge_and_unload()
    assert _counted(merged, batch, prompt, new) == base_count
    assert adapter_generate_flops(manifest, batch, prompt, new, merged=True)["flops_total"] == 0


def test_annotation_adds_the_adapter_to_the_totals(tmp_path):
    model_dir = _model_dir(tmp_path, "llama")
    manifest = lora_build.build_adapter("m", "a", _settings(), model_dir, tmp_path / "adapter")
    hf_config = json.loads((model_dir / "config.json").read_text())
    rows = pd.DataFrame(
        {
            "batch_size": [2, 2],
            "prompt_tokens": [8, 8],
            "output_tokens": [5, 5],
            "quant": ["none-float32"] * 2,
            "status": ["ok", "ok"],
            "adapter_merged": [False, True],
        }
    )
    base = flops.annotate(rows, hf_config)
    out = add_adapter_flops(base, manifest)
    per_token = 2 * 4 * ((64 + 64) + (64 + 32)) * 2  # both layers
    assert out["flops_adapter"].tolist() == [per_token * 2 * (8 + 4), 0]
    assert int(out["flops_total"][0]) == int(base["flops_total"][0]) + per_token * 24
    assert int(out["flops_total"][1]) == int(base["flops_total"][1])
    assert out["flops_per_output_token"][0] == int(out["flops_total"][0]) / 10


def test_unmerged_decode_mbu_counts_the_adapters_bytes_and_merged_does_not(tmp_path):
    from llenergymeasure import hardware
    from llenergymeasure.adapter_flops import adapter_read_bytes

    model_dir = _model_dir(tmp_path, "llama")
    manifest = lora_build.build_adapter("m", "a", _settings(), model_dir, tmp_path / "adapter")
    hf_config = json.loads((model_dir / "config.json").read_text())
    device = hardware.load_table()[0]["nvml_names"][0]  # a device the table lists
    rows = pd.DataFrame(
        {
            "batch_size": [2, 2],
            "prompt_tokens": [8, 8],
            "output_tokens": [5, 5],
            "quant": ["none-float32"] * 2,
            "status": ["ok", "ok"],
            "adapter_merged": [False, True],
            "tpot_s": [0.002, 0.002],
            "device_name": [device] * 2,
            "dtype": ["float32"] * 2,
            "compute_dtype": ["float32"] * 2,
            "weight_bytes_memory": [400_000.0] * 2,
        }
    )
    base = flops.annotate(rows, hf_config)
    assert base["mbu_decode"].notna().all()
    out = add_adapter_flops(base, manifest)
    assert adapter_read_bytes(manifest) == 2 * 4 * ((64 + 64) + (64 + 32)) * 4  # params (both layers) x float32
    expected = hardware.mbu(adapter_read_bytes(manifest), 0.002, device)
    assert out["mbu_decode"][0] == pytest.approx(base["mbu_decode"][0] + expected, rel=1e-12)
    assert expected > 0 and out["mbu_decode"][0] > base["mbu_decode"][0]
    assert out["mbu_decode"][1] == base["mbu_decode"][1]


def test_pytorch_compiled_recompiles_for_the_adapter_outside_the_windows_and_matches_eager_peft(tmp_path):
    from llenergymeasure.backends import get_backend

    model_dir = _model_dir(tmp_path, "llama")
    lora_build.build_adapter("m", "a", _settings(), model_dir, tmp_path / "adapter")
    variant = {
        "quant": "none-float32",
        "quant_method": "none",
        "compute_dtype": "float32",
        "load_dtype": "float32",
        "model_dir": str(model_dir),
        "weights": "random",
    }
    backend = get_backend("pytorch-compiled")({"max_new_tokens": 6, "threads": 1}, "cpu")
    backend.load(variant)
    (_, unmerge), (_, merge) = lora_build.measurement_phases(tmp_path / "adapter")
    unmerge(backend)
    inputs = backend.prepare_inputs(2, 8, seed=0)  # the load probe's shape was (1, 8): this one is new
    events_before = len(backend.compile_events)
    assert backend.prepare_inputs(2, 8, seed=0) and len(backend.compile_events) == events_before  # warm now
    backend.generate(inputs, 6)
    compiled = backend.model.generate(**inputs, **backend.generation_kwargs(6))[:, 8:]
    reference = peft.PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir), str(tmp_path / "adapter")
    ).eval()
    with torch.inference_mode():
        eager = reference.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)[:, 8:]
    assert torch.equal(compiled, eager)
    merge(backend)
    backend.prepare_inputs(2, 8, seed=0)  # merged modules: re-warmed, not left to the first window
    assert len(backend.compile_events) == events_before + 1
    assert backend.compile_events[-1]["batch_size"] == 2


# ------------------------------------------------------------------ config


def _study(adapters: dict, backends: dict | None = None) -> dict:
    return {
        "models": {
            "tiny-llama": {
                "architecture": "config/models/tiny-llama.json",
                "backends": backends or {"pytorch": ["none-float32"]},
                "adapters": adapters,
            }
        },
        "workload": {"batch_sizes": [1, 4], "prompt_tokens": [8], "new_tokens": 4},
        "measurement": {"trials": 1},
    }


def test_an_unsupported_adapter_combination_is_refused_up_front_with_the_reason():
    study = _study(
        {"lora": {"rank": 8, "target_modules": ["q_proj"]}},
        backends={"pytorch": ["none-float32"], "llamacpp": ["gguf-q8_0"]},
    )
    with pytest.raises(ConfigError) as error:
        load_config(study, has_cuda=True)
    message = str(error.value)
    assert message.startswith("models.tiny-llama.adapters.lora: no adapter on llamacpp gguf-q8_0")
    assert "converted to GGUF" in message and "\n" not in message
    study["models"]["tiny-llama"]["adapters"]["lora"]["backends"] = {"pytorch": ["none-float32"]}
    config = load_config(study, has_cuda=True)  # restricted to pytorch, the same study is accepted
    assert [j.backend for j in lora.expand_adapter_jobs(config)] == ["pytorch"]


def test_adapter_defaults_come_from_the_schema_and_jobs_expand():
    config = load_config(_study({"lora": {"rank": 8, "target_modules": ["q_proj"], "batch_sizes": [1]}}))
    settings = lora.adapter_build_settings(config, "tiny-llama", "lora")
    assert settings == {
        "source": "random",
        "rank": 8,
        "target_modules": ["q_proj"],
        "alpha": 16,
        "dropout": 0.0,
        "seed": 0,
    }
    assert list(lora.expand_adapter_jobs(config)) == [lora.AdapterJob("tiny-llama", "none-float32", "pytorch", "lora")]
    assert lora.adapter_workload(config, "tiny-llama", "lora")["batch_sizes"] == [1]


def test_projection_shapes_come_from_the_real_architecture():
    gpt2 = json.loads((REPO_ROOT / "config" / "models" / "tiny-gpt2.json").read_text())
    shapes = lora.projection_shapes(gpt2)
    assert shapes["transformer.h.0.attn.c_attn"] == (256, 768)  # Conv1D: weight stored (in, out)
    assert shapes["transformer.h.1.mlp.c_proj"] == (1024, 256)
    assert "lm_head" not in shapes
    with pytest.raises(ConfigError, match="rank: 300 exceeds min"):
        lora.check_targets("f", gpt2, 300, ["c_attn"])


# ------------------------------------------------------------------ analysis


def _trials(state: str, tokens_per_s: list[float], energy_estimate: bool) -> pd.DataFrame:
    n = len(tokens_per_s)
    adapter = "none" if state == "base" else "lora"
    return pd.DataFrame(
        {
            "platform_id": "p",
            "model": "m",
            "quant": "none-float32",
            "backend": "pytorch",
            "batch_size": 1,
            "prompt_tokens": 8,
            "output_tokens": 4,
            "trial": range(n),
            "status": "ok",
            "adapter": adapter,
            "adapter_merged": state == "merged",
            "adapter_rank": None if adapter == "none" else 8,
            "adapter_merge_s": 0.5 if state == "merged" else None,
            "tokens_per_s": tokens_per_s,
            "latency_s": [4 / v for v in tokens_per_s],
            "energy_j_per_output_token": [0.1 * v for v in tokens_per_s],
            "energy_source": "estimate-cpu-tdp" if energy_estimate else "zeus-rapl",
            "energy_is_estimate": energy_estimate,
        }
    )


@pytest.mark.parametrize("estimated", [False, True])
def test_overhead_ratios_and_intervals_and_no_sensor(estimated):
    measurements = pd.concat(
        [
            _trials("base", [100, 102, 98, 101, 99], estimated),
            _trials("unmerged", [80, 81, 79, 82, 78], estimated),
            _trials("merged", [100, 99, 101, 100, 98], estimated),
        ],
        ignore_index=True,
    )
    table = adapter_analysis.adapter_overhead(measurements)
    cell = table[(table["comparison"] == "unmerged/base") & (table["metric"] == "tokens_per_s")].iloc[0]
    assert cell["ratio"] == pytest.approx(80 / 100) and cell["ci_low"] < 0.8 < cell["ci_high"] < 1.0
    cell = table[(table["comparison"] == "unmerged/merged") & (table["metric"] == "tokens_per_s")].iloc[0]
    assert cell["ratio"] == pytest.approx(80 / 100) and cell["adapter_merge_s"] == 0.5
    energy = table[table["metric"] == "energy_j_per_output_token"]
    if estimated:
        assert energy["ratio"].isna().all() and (energy["note"] == adapter_analysis.NO_SENSOR).all()
    else:
        assert energy[energy["comparison"] == "unmerged/base"]["ratio"].iloc[0] == pytest.approx(0.8)
    summary = adapter_analysis.summarise(measurements)
    assert len(summary) == 3 and sorted(summary["adapter_merged"].tolist()) == [False, False, True]
    assert summary.set_index(["adapter", "adapter_merged"]).loc[("lora", False), "tokens_per_s_median"] == 80
    assert len(adapter_analysis.base_rows(summary)) == 1


def test_tables_from_before_adapters_read_as_base_rows():
    old = _trials("base", [1.0, 2.0], False).drop(
        columns=[c for c in lora.ROW_COLUMNS if c in _trials("base", [1.0], False)]
    )
    filled = adapter_analysis.with_adapter_columns(old)
    assert (filled["adapter"] == "none").all() and (~filled["adapter_merged"]).all()
    assert adapter_analysis.adapter_overhead(old).empty


# ------------------------------------------------------------------ the pipeline


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.pipeline
def test_adding_an_adapter_to_a_finished_sweep_measures_it_without_re_running_the_base(tmp_path):
    workdir = copy_workflow(tmp_path / "repo")
    study = {
        "study": "lora",
        "device": "cpu",
        "models": {
            "tiny-llama": {"architecture": "config/models/tiny-llama.json", "backends": {"pytorch": ["none-float32"]}}
        },
        "workload": {"batch_sizes": [1], "prompt_tokens": [16], "new_tokens": 4},
        "measurement": {
            "trials": 3,
            "replicates": 1,
            "warmup_runs": 1,
            "min_window_s": {"cpu": 0.1},
            "idle_baseline_s": {"cpu": 0.2},
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    aggregate = "results/aggregate/measurements.parquet"
    first = run_snakemake(workdir, aggregate, "--cores", "2", "--configfile", str(path), env=_env(), timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    base_file = workdir / "results" / "measure" / "tiny-llama" / "none-float32" / "pytorch" / "replicate-1.parquet"
    base_mtime = base_file.stat().st_mtime_ns

    study["models"]["tiny-llama"]["adapters"] = {"lora-r8": {"rank": 8, "target_modules": ["q_proj", "v_proj"]}}
    path.write_text(yaml.safe_dump(study))
    dry = run_snakemake(workdir, aggregate, "-n", "--cores", "2", "--configfile", str(path), env=_env(), timeout=300)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    stats = (dry.stdout + dry.stderr).split("Job stats:", 1)[1].split("\n\n", 1)[0]
    planned = dict(re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.MULTILINE))
    assert planned == {"adapter": "1", "measure_adapter": "1", "flops_adapter": "1", "aggregate": "1", "total": "4"}, (
        stats
    )

    grown = run_snakemake(workdir, aggregate, "--cores", "2", "--configfile", str(path), env=_env(), timeout=900)
    assert grown.returncode == 0, grown.stdout[-3000:] + grown.stderr[-3000:]
    assert base_file.stat().st_mtime_ns == base_mtime
    rows = pd.read_parquet(workdir / aggregate)
    assert (rows["status"] == "ok").all(), rows[["adapter", "error"]]
    states = rows.groupby(["adapter", "adapter_merged"]).size().to_dict()
    assert states == {("lora-r8", False): 3, ("lora-r8", True): 3, ("none", False): 3}
    adapted = rows[rows["adapter"] == "lora-r8"]
    manifest = json.loads(
        (workdir / "results" / "adapters" / "tiny-llama" / "lora-r8" / "adapter_manifest.json").read_text()
    )
    assert (adapted["adapter_bytes"] == manifest["bytes"]).all() and (adapted["adapter_rank"] == 8).all()
    merged = adapted[adapted["adapter_merged"].astype(bool)]
    unmerged = adapted[~adapted["adapter_merged"].astype(bool)]
    assert merged["adapter_merge_s"].gt(0).all() and unmerged["adapter_merge_s"].isna().all()
    base = rows[rows["adapter"] == "none"]
    assert (merged["flops_total"].to_numpy() == base["flops_total"].iloc[0]).all()
    expected = adapter_generate_flops(manifest, 1, 16, 4, merged=False)["flops_total"]
    assert (unmerged["flops_total"].to_numpy() == base["flops_total"].iloc[0] + expected).all()
    assert np.isfinite(unmerged["tokens_per_s"].astype(float)).all()
