"""FLOPs against measurement: known answers with ties, near-ties, reversals and trial noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llenergymeasure import analysis, rank_tests, stats

METRICS = ["latency_s"]


def _trials(
    configs: list[tuple[str, float, float]], batches=(1, 2, 4), trials: int = 5, noise: float = 0.01, seed: int = 0
) -> pd.DataFrame:
    """Per-trial rows of (model, FLOPs per token, cost) configurations at each batch size,
    every trial's cost scaled by 1 + `noise` x N(0, 1)."""
    rng = np.random.default_rng(seed)
    rows = []
    for batch in batches:
        for model, flops, cost in configs:
            for trial in range(trials):
                value = cost * (1.0 + noise * rng.standard_normal())
                rows.append(
                    {
                        "platform_id": "p",
                        "model": model,
                        "quant": "q",
                        "backend": "b",
                        "batch_size": batch,
                        "prompt_tokens": 8,
                        "output_tokens": 4,
                        "trial": trial,
                        "status": "ok",
                        "latency_s": value,
                        "tokens_per_s": 1.0 / value,
                        "energy_j_per_output_token": np.nan,
                        "flops_per_output_token": flops,
                    }
                )
    return pd.DataFrame(rows)


def _analyse(trials: pd.DataFrame, tolerance: float = rank_tests.FLOPS_TOLERANCE):
    summary = stats.summarise(trials)
    ranks = rank_tests.flops_rank_comparison(summary, METRICS, tolerance=tolerance)
    return (
        rank_tests.rank_agreement(ranks),
        rank_tests.rank_difference_tests(trials, summary, METRICS, tolerance=tolerance).iloc[0],
    )


def test_a_tie_block_of_six_that_measurement_orders_is_no_disagreement():
    """Six configurations with equal FLOPs measured 1..6 and a seventh far above: FLOPs
    cannot order the six, so none of their orderings disagrees (average ranks made 2)."""
    configs = [(f"m{i}", 100.0, 1.0 + i) for i in range(6)] + [("big", 1000.0, 100.0)]
    agreement, _ = _analyse(_trials(configs, batches=(1,)))
    row = agreement.iloc[0]
    assert (row["n_configs"], row["n_flops_levels"], row["n_disagreements"], row["n_discordant_pairs"]) == (7, 2, 0, 0)
    assert row["spearman_rho"] > 0.5


def test_near_identical_flops_are_one_level():
    """tiny-gpt2 and tiny-llama differ by 1.9e-5 in FLOPs per token: one level, so their
    measured order is no disagreement; with a zero tolerance they are two levels."""
    configs = [
        ("tiny-gpt2", 10021888.0, 1.0),
        ("tiny-llama", 10022078.0, 0.5),
        ("gpt2-a", 10021888.0, 2.0),
        ("llama-a", 10022078.0, 0.25),
    ]
    agreement, _ = _analyse(_trials(configs, batches=(1,)))
    assert agreement.iloc[0]["n_flops_levels"] == 1 and agreement.iloc[0]["n_disagreements"] == 0
    assert "one FLOPs level" in agreement.iloc[0]["note"]
    exact, _ = _analyse(_trials(configs, batches=(1,)), tolerance=0.0)
    assert exact.iloc[0]["n_flops_levels"] == 2 and exact.iloc[0]["n_discordant_pairs"] == 4


def test_a_ratio_symmetric_reversal_is_detected():
    """FLOPs 2x, 4x, 8x the reference, measured 8x, 4x, 2x: the set of ratios is the same
    (an unpaired test of the ratios returns p = 1, d = 0), the order is reversed."""
    configs = [("ref", 1.0, 1.0), ("a", 2.0, 8.0), ("b", 4.0, 4.0), ("c", 8.0, 2.0)]
    agreement, test = _analyse(_trials(configs))
    assert (agreement["n_disagreements"] == 2).all() and (agreement["n_discordant_pairs"] == 3).all()
    assert test["test"] == rank_tests.RANK_SHIFT_TEST
    assert test["p_value"] < 0.01 and test["effect_size"] == pytest.approx(0.5)
    assert test["cohens_d"] > 1.0 and (test["n_configs"], test["n_trial_shifts"]) == (12, 60)


def test_perfect_agreement_with_one_percent_trial_noise_is_not_flagged():
    configs = [("a", 1.0, 1.0), ("b", 2.0, 2.0), ("c", 4.0, 4.0), ("d", 8.0, 8.0), ("e", 8.2, 8.08)]
    agreement, test = _analyse(_trials(configs, noise=0.01))
    assert (agreement["n_disagreements"] == 0).all()
    assert test["p_value"] > 0.05 and test["effect_size"] <= 0.0
    assert test["mean_trial_rank_shift"] > 0  # the near-tie e/d swaps between trials
    rho = agreement.iloc[0]
    assert rho["spearman_rho"] == pytest.approx(1.0) and rho["spearman_ci_low"] < rho["spearman_ci_high"] == 1.0


def test_unsupported_or_missing_flops_are_left_out_and_counted():
    configs = [("a", 1.0, 1.0), ("b", 2.0, 2.0), ("c", 4.0, 4.0), ("x", 0.5, 9.0), ("y", np.nan, 0.1)]
    trials = _trials(configs, batches=(1,))
    trials["flops_confidence"] = np.where(trials["model"] == "x", "unsupported", "exact")
    trials["flops_reason"] = np.where(trials["model"] == "x", "custom kernel", None)
    agreement, test = _analyse(trials)
    row = agreement.iloc[0]
    assert (row["n_configs"], row["n_excluded_flops"], row["n_disagreements"]) == (3, 2, 0)
    assert test["n_excluded_flops"] == 2 and test["n_configs"] == 3
    ranks = rank_tests.flops_rank_comparison(stats.summarise(trials), METRICS).set_index("model")
    assert ranks.loc["x", "flops_excluded"] == "flops_confidence unsupported: custom kernel"
    assert ranks.loc["y", "flops_excluded"] == "no FLOPs count" and np.isnan(ranks.loc["y", "flops_rank"])


def test_run_all_writes_the_output_contract():
    configs = [("ref", 1.0, 1.0), ("a", 2.0, 8.0), ("b", 4.0, 4.0), ("c", 8.0, 2.0)]
    trials = _trials(configs).assign(peak_memory_bytes=1.0)
    config = {
        "reference": {"model": "ref", "quant": "q", "backend": "b"},
        "compound_metrics": ["latency_s"],
        "flops_tolerance": 0.005,
    }
    results = analysis.run_all(trials, stats.summarise(trials), config)
    agreement = {
        "platform_id",
        *stats.WORKLOAD_KEYS,
        "metric",
        "n_configs",
        "n_flops_levels",
        "n_disagreements",
        "spearman_rho",
        "spearman_ci_low",
        "spearman_ci_high",
    }
    assert agreement <= set(results["flops_rank_agreement"].columns)
    tests = {"platform_id", "metric", "n_configs", "test", "p_value", "effect_size"}
    assert tests <= set(results["rank_difference_tests"].columns)
