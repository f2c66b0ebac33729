"""`llenergymeasure analyse`: the study's analyses from someone's per-trial table, run for real."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd

from llenergymeasure import analysis, energy, outputs, stats
from llenergymeasure.config import DEFAULT_CONFIG_PATH, REPO_ROOT, load_config

SHIPPED = REPO_ROOT / "paper" / "data" / "measurements.parquet"


def _analyse(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO_ROOT / 'workflow' / 'scripts'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    return subprocess.run(
        [sys.executable, "-m", "llenergymeasure.cli", "analyse", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd="/",
    )


def test_the_command_writes_what_the_analyse_rule_writes(tmp_path):
    out = tmp_path / "out"
    result = _analyse(str(SHIPPED), "--out", str(out))
    assert result.returncode == 0, result.stderr
    # the rule's path, in this process: the aggregate's summary, then analyse_files
    config = load_config(DEFAULT_CONFIG_PATH, has_cuda=False)
    measurements = pd.read_parquet(SHIPPED)
    summary = stats.summarise(measurements, cv_threshold=config["measurement"]["cv_flag_threshold"])
    summary.to_parquet(tmp_path / "summary.parquet")
    # a shipped study is analysed with its manifest's analysis section and new_tokens, as
    # paper_figures' analyse rule does
    manifest = SHIPPED.parent / "manifest.json"
    expected = analysis.analyse_files(
        SHIPPED,
        tmp_path / "summary.parquet",
        analysis.analysis_paths(str(tmp_path / "rule")),
        outputs.shipped_analysis_config(manifest, config["analysis"]),
        sorted((REPO_ROOT / "config" / "models").glob("*.json")),
        analysis.families_from_config(config["models"], REPO_ROOT),
        outputs.shipped_new_tokens(manifest, config["workload"]["new_tokens"]),
        SHIPPED.parent / "fidelity.parquet",
    )
    # and the shipped analyses are what that computes, value for value
    for name in analysis.ANALYSES:
        shipped = SHIPPED.parent / "analysis" / f"{name}.parquet"
        if shipped.exists():
            pd.testing.assert_frame_equal(
                pd.read_parquet(shipped), expected[name].reset_index(drop=True), obj=name, check_dtype=False
            )
    pd.testing.assert_frame_equal(pd.read_parquet(out / "summary.parquet"), summary)
    for name in analysis.ANALYSES:
        pd.testing.assert_frame_equal(
            pd.read_parquet(out / f"{name}.parquet"), pd.read_parquet(tmp_path / "rule" / f"{name}.parquet"), obj=name
        )
    agreement = pd.read_parquet(out / "flops_rank_agreement.parquet")
    contract = [
        "platform_id",
        *stats.WORKLOAD_KEYS,
        "metric",
        "n_configs",
        "n_flops_levels",
        "n_disagreements",
        "spearman_rho",
        "spearman_ci_low",
        "spearman_ci_high",
    ]
    assert set(contract) <= set(agreement.columns) and len(agreement) == len(expected["flops_rank_agreement"]) > 0
    tests = pd.read_parquet(out / "rank_difference_tests.parquet")
    assert {"platform_id", "metric", "n_configs", "test", "p_value", "effect_size"} <= set(tests.columns)
    # the shipped table has no energy (no sensor on the machine that made it): nothing to rank
    assert pd.read_parquet(out / "quantisation_energy.parquet").empty
    # a user who stated a CPU power (LLEM_CPU_TDP_W=65) gets estimated joules; no energy analysis
    # uses them unless asked to
    stated = measurements.copy()
    stated["energy_j"] = 65.0 * stated["latency_s"]
    stated["energy_j_per_output_token"] = stated["energy_j"] / (stated["batch_size"] * stated["output_tokens"])
    stated["energy_source"], stated["energy_is_estimate"] = energy.SOURCE_ESTIMATE, True
    stated.to_parquet(tmp_path / "stated.parquet")
    (tmp_path / "manifest.json").write_text(manifest.read_text())  # still the shipped study
    unasked = _analyse(str(tmp_path / "stated.parquet"), "--out", str(tmp_path / "unasked"))
    assert unasked.returncode == 0, unasked.stderr
    assert pd.read_parquet(tmp_path / "unasked" / "quantisation_energy.parquet").empty
    opted = _analyse(
        str(tmp_path / "stated.parquet"),
        "--out",
        str(tmp_path / "opted"),
        "--use-estimated-energy",
        "--reference",
        "study-gpt2/none-float32/pytorch",
    )
    assert opted.returncode == 0, opted.stderr
    quantisation = pd.read_parquet(tmp_path / "opted" / "quantisation_energy.parquet")
    assert len(quantisation) > 0 and "gguf-f16" not in set(quantisation["quant"])
    assert quantisation["energy_is_estimate"].all()
    compound = pd.read_parquet(tmp_path / "opted" / "compound.parquet")
    assert set(compound["reference"]) == {"study-gpt2/none-float32/pytorch"}


def test_a_table_missing_columns_is_refused_in_one_line_naming_them(tmp_path):
    table = pd.read_parquet(SHIPPED).drop(columns=["status", "latency_s"])
    table.to_parquet(tmp_path / "theirs.parquet")
    result = _analyse(str(tmp_path / "theirs.parquet"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "status" in lines[0] and "latency_s" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_malformed_reference_is_refused(tmp_path):
    result = _analyse(str(SHIPPED), "--out", str(tmp_path / "out"), "--reference", "tiny-llama")
    assert result.returncode == 2 and "MODEL/QUANT/BACKEND" in result.stderr
