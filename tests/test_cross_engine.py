"""Cross-engine transfer on hand-made summaries whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from llenergymeasure import cross_engine, intervals


def _summary(rows: list[dict]) -> pd.DataFrame:
    defaults = {"platform_id": "p1", "batch_size": 1, "prompt_tokens": 64, "output_tokens": 32, "n_ok": 5}
    return pd.DataFrame([defaults | row for row in rows])


def _two_engines(latency_a, latency_b, backend_b="pytorch-compiled", quant_b="none-float32", batch=1):
    rows = []
    for i, (a, b) in enumerate(zip(latency_a, latency_b, strict=True)):
        rows.append(
            {
                "model": f"m{i}",
                "quant": "none-float32",
                "backend": "pytorch",
                "latency_s_median": a,
                "batch_size": batch,
            }
        )
        rows.append(
            {"model": f"m{i}", "quant": quant_b, "backend": backend_b, "latency_s_median": b, "batch_size": batch}
        )
    return _summary(rows)


def test_identical_names_match_first_then_one_pair_per_class():
    pairs = cross_engine.match_variants(
        ["none-float32", "none-float16", "none-bfloat16", "bnb-int8", "bnb-nf4", "gptq-w4a16"],
        ["none-float32", "gptq-w4a16", "gguf-f16", "gguf-q8_0", "gguf-q4_k_m"],
    )
    assert ("none-float32", "none-float32", cross_engine.IDENTICAL) in pairs
    assert ("gptq-w4a16", "gptq-w4a16", cross_engine.IDENTICAL) in pairs
    # gguf-f16 pairs with float16 (preference 0), not bfloat16; nf4 with q4_k_m (gptq is taken)
    assert ("none-float16", "gguf-f16", "same class: 16-bit float weights") in pairs
    assert ("bnb-nf4", "gguf-q4_k_m", "same class: 4-bit weights") in pairs
    assert ("bnb-int8", "gguf-q8_0", "same class: 8-bit weights") in pairs
    assert len(pairs) == 5
    used_a = [a for a, _, _ in pairs]
    assert len(used_a) == len(set(used_a))


def test_bfloat16_stands_in_for_float16_and_unclassified_variants_match_only_by_name():
    pairs = cross_engine.match_variants(["none-bfloat16", "custom"], ["gguf-f16", "custom2"])
    assert pairs == [("none-bfloat16", "gguf-f16", "same class: 16-bit float weights")]
    assert cross_engine.match_variants(["custom"], ["custom"]) == [("custom", "custom", cross_engine.IDENTICAL)]


def test_unquantised_variants_pair_across_precisions_only_when_nothing_closer_is_left():
    assert cross_engine.match_variants(["none-float32"], ["gguf-f16", "gguf-q8_0"]) == [
        ("none-float32", "gguf-f16", f"same class: {cross_engine.UNQUANTISED_CLASS}")
    ]
    # with a bfloat16 beside it, gguf-f16 takes the 16-bit class and float32 stays unpaired
    assert cross_engine.match_variants(["none-float32", "none-bfloat16"], ["gguf-f16"]) == [
        ("none-bfloat16", "gguf-f16", "same class: 16-bit float weights")
    ]
    assert cross_engine.match_variants(["bnb-nf4"], ["gguf-f16"]) == []


def test_monotone_engines_agree_perfectly_and_tau_has_no_interval():
    table = cross_engine.engine_transfer(_two_engines([1, 2, 3, 4, 5, 6], [2, 4, 6, 8, 10, 12]), metrics=["latency_s"])
    assert len(table) == 1
    row = table.iloc[0]
    assert row["n_items"] == 6 and row["n_identical"] == 6 and row["n_class_matched"] == 0
    assert row["spearman_rho"] == pytest.approx(1.0) and row["kendall_tau"] == pytest.approx(1.0)
    # a perfect 6 still admits doubt below, and its interval holds the estimate itself
    assert 0.0 < row["spearman_ci_low"] < row["spearman_ci_high"] == 1.0
    assert row["ci_method"] == intervals.SPEARMAN_FISHER_Z
    assert "no interval for tau" in row["kendall_note"]
    assert row["matching"] == "identical variants only"


def test_shuffled_engine_matches_scipy_and_the_interval_of_rank_tests():
    a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    b = [3.0, 1.0, 2.0, 7.0, 5.0, 4.0, 6.0]
    row = cross_engine.engine_transfer(_two_engines(a, b), metrics=["latency_s"]).iloc[0]
    assert row["spearman_rho"] == pytest.approx(scipy_stats.spearmanr(a, b).statistic)
    assert row["kendall_tau"] == pytest.approx(scipy_stats.kendalltau(a, b).statistic)
    low, high = intervals.spearman_interval(np.array(row["spearman_rho"]), 7)
    assert (row["spearman_ci_low"], row["spearman_ci_high"]) == pytest.approx((float(low), float(high)))


def test_llamacpp_is_matched_by_class_and_says_so():
    summary = _two_engines([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], backend_b="llamacpp", quant_b="gguf-f16")
    summary.loc[summary["backend"] == "pytorch", "quant"] = "none-bfloat16"
    matches = cross_engine.engine_matches(summary)
    assert set(matches["match"]) == {"same class: 16-bit float weights"}
    row = cross_engine.engine_transfer(summary, matches, metrics=["latency_s"]).iloc[0]
    assert row["spearman_rho"] == pytest.approx(-1.0)
    assert row["n_class_matched"] == 5 and "gguf-f16~none-bfloat16" in row["matching"]  # engines sorted: llamacpp is a


def test_transfer_is_per_workload_and_engines_of_one_platform_only():
    summary = pd.concat(
        [
            _two_engines([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], batch=1),
            _two_engines([5, 4, 3, 2, 1], [1, 2, 3, 4, 5], batch=4),
        ]
    )
    other = _two_engines([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]).assign(platform_id="p2")
    table = cross_engine.engine_transfer(pd.concat([summary, other]), metrics=["latency_s"])
    by = table.set_index(["platform_id", "batch_size"])["spearman_rho"]
    assert by[("p1", 1)] == pytest.approx(1.0) and by[("p1", 4)] == pytest.approx(-1.0)
    assert by[("p2", 1)] == pytest.approx(-1.0)


def test_failed_configurations_and_missing_metrics_are_left_out():
    summary = _two_engines([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    summary.loc[0, "n_ok"] = 0
    table = cross_engine.engine_transfer(summary, metrics=["latency_s", "energy_j_per_output_token"])
    assert table["metric"].tolist() == ["latency_s"] and table["n_items"].tolist() == [4]


def test_pareto_transfer_between_engines_uses_each_side_fidelity_and_cost():
    # engine a frontier (fidelity, latency): m0 (0.0, 3), m1 (0.1, 2), m2 (0.2, 1); m3 dominated
    fidelity = pd.DataFrame(
        {"model": ["m0", "m1", "m2", "m3"], "quant": ["none-float32"] * 4, "fidelity_kl_mean": [0.0, 0.1, 0.2, 0.3]}
    )
    summary = _two_engines([3, 2, 1, 4], [3, 1, 2, 4])  # on b, m1 is cheaper than m2: m2 leaves b's frontier
    table = cross_engine.engine_pareto_transfer(summary, fidelity, costs=["latency_s"])
    row = table.iloc[0]
    assert (row["n_items"], row["n_frontier_a"], row["n_frontier_b"], row["n_shared"]) == (4, 3, 2, 2)
    assert row["precision"] == pytest.approx(2 / 3) and row["recall"] == pytest.approx(1.0)
    assert row["f1"] == pytest.approx(0.8)
    assert cross_engine.engine_pareto_transfer(summary, None, costs=["latency_s"]).empty
