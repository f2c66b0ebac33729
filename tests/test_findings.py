"""The findings table: its interval claims, and its rows on the shipped study."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llenergymeasure import analysis, findings

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5])
def test_clopper_pearson_covers_at_least_95_percent(p):
    rng = np.random.default_rng(1)
    n = 20
    hits = 0
    draws = rng.binomial(n, p, size=2000)
    bounds = {k: findings.clopper_pearson(k, n) for k in range(n + 1)}
    for k in draws:
        low, high = bounds[int(k)]
        hits += low <= p <= high
    assert hits / draws.size >= 0.95


def test_clopper_pearson_known_values_and_empty():
    assert findings.clopper_pearson(0, 20) == pytest.approx((0.0, 0.16843), abs=1e-4)
    assert all(np.isnan(findings.clopper_pearson(0, 0)))


@pytest.fixture(scope="module")
def shipped():
    measurements = pd.read_parquet(REPO / "paper/data/measurements.parquet")
    summary = pd.read_parquet(REPO / "paper/data/summary.parquet")
    config = json.loads((REPO / "paper/data/manifest.json").read_text())["analysis"]
    architectures = analysis.load_architectures(sorted((REPO / "config/models").glob("*.json")))
    return measurements, summary, analysis.run_all(measurements, summary, config, architectures=architectures)


def test_findings_of_the_shipped_study_follow_their_analyses(shipped):
    _, summary, results = shipped
    table = results["findings"]
    assert list(table.columns) == findings.COLUMNS
    rate = table[table["finding"] == "FLOPs disagreement rate"]
    agreement = results["flops_rank_agreement"]
    for _, row in rate.iterrows():
        part = agreement[agreement["metric"] == row["metric"]]
        assert row["value"] == part["n_disagreements"].sum() / part["n_configs"].sum()
        assert row["interval"] == findings.CLOPPER_PEARSON and row["ci_low"] <= row["value"] <= row["ci_high"]
    two_n = table[table["finding"] == "2N formula relative error"].set_index("scope")
    ok = summary[summary["n_ok"] > 0]
    llama = ok[ok["model_family"] == "llama"]
    errors = (llama["flops_2n_reference"] - llama["flops_total"]) / llama["flops_total"]
    # one count per model, engine and workload: variants share it, engines need not
    per_engine = errors.groupby([llama["model"], llama["backend"], llama["batch_size"], llama["prompt_tokens"]]).first()
    assert two_n.loc["llama", "value"] == pytest.approx(per_engine.median())
    assert two_n.loc["llama", "n"] == len(per_engine)
    # quantisation effect: the ratio of medians to the same backend's unquantised variant
    quant = table[(table["finding"].str.startswith("Quantisation")) & (table["metric"] == "latency_s")]
    assert "pytorch: bnb-int8 / none-float32" in set(quant["scope"])
    assert not (table["metric"] == "energy_j_per_output_token").any()  # no sensor energy shipped


def test_quantisation_ratio_of_one_configuration_keeps_its_order_statistic_interval():
    rows = []
    for quant, base in (("none-float32", 1.0), ("bnb-int8", 2.0)):
        for trial in range(5):
            rows.append(
                {
                    "platform_id": "p",
                    "model": "m",
                    "quant": quant,
                    "backend": "pytorch",
                    "batch_size": 1,
                    "prompt_tokens": 8,
                    "output_tokens": 4,
                    "trial": trial,
                    "status": "ok",
                    "latency_s": base * (1 + 0.01 * trial),
                }
            )
    measurements = pd.DataFrame(rows)
    summary = (
        measurements.groupby(
            ["platform_id", "model", "quant", "backend", "batch_size", "prompt_tokens", "output_tokens"], as_index=False
        )["latency_s"]
        .median()
        .assign(n_ok=5)
    )
    [row] = findings.quantisation_findings(measurements, summary)
    assert row["value"] == pytest.approx(2.0) and row["ci_low"] == pytest.approx(2.0 / 1.04)
    assert row["interval"].startswith("order_statistic (coverage 0.879")  # 0.9375 squared


def test_markdown_and_latex_hold_every_finding(shipped):
    from llenergymeasure import tables

    table = shipped[2]["findings"]
    text = findings.markdown(table)
    assert text.count("\n") == len(table) + 2 and text.startswith("| Finding | Scope |")
    latex = tables.booktabs(findings.cells(table), "c", "tab:findings")
    assert latex.count(r" \\") == len(table) + 1


def _fidelity(models: list[str]) -> pd.DataFrame:
    rows = []
    for i, model in enumerate(models):
        rows.append(
            {
                "model": model,
                "quant": "bnb-nf4",
                "fidelity_engine": "transformers",
                "fidelity_tokens": 504,
                "fidelity_kl_mean": 0.1 * (i + 1),
                "fidelity_kl_window_median": 0.09 * (i + 1),
                "fidelity_kl_ci_low": 0.05,
                "fidelity_kl_ci_high": 0.2,
                "fidelity_top1_mean": 0.9,
                "fidelity_top1_window_median": 0.91,
                "fidelity_top1_ci_low": 0.8,
                "fidelity_top1_ci_high": 0.95,
                "fidelity_ci_coverage": 0.992,
            }
        )
    return pd.DataFrame(rows)


def test_fidelity_of_one_model_keeps_its_window_interval_and_of_many_their_range():
    [kl, top1] = findings.fidelity_findings(_fidelity(["a"]))
    # the interval belongs to the median of window means, so that is the value shown with it
    assert kl["value"] == 0.09 and (kl["ci_low"], kl["ci_high"]) == (0.05, 0.2)
    assert kl["metric"] == "fidelity_kl_window_median" and "coverage 0.992" in kl["interval"]
    assert top1["value"] == 0.91
    [kl, _] = findings.fidelity_findings(_fidelity(["a", "b", "c"]))
    assert kl["value"] == pytest.approx(0.2) and (kl["ci_low"], kl["ci_high"]) == pytest.approx((0.1, 0.3))
    assert kl["interval"] == "range over 3 models"
