"""Coverage simulations: every interval covers its parameter at least as often as it says.

Each simulation draws thousands of small samples at once (numpy, fixed seeds) and counts how
often the interval holds the true value; the Monte Carlo slack is three standard errors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize
from scipy import stats as scipy_stats

from llenergymeasure import intervals, stats

REPS = 20_000


def _bimodal_median() -> float:
    cdf = lambda m: 0.5 * scipy_stats.norm.cdf(m, 9.0, 0.3) + 0.5 * scipy_stats.norm.cdf(m, 11.5, 0.8) - 0.5  # noqa: E731
    return optimize.brentq(cdf, 8.0, 13.0)


DISTRIBUTIONS = {
    "normal": (lambda rng, shape: rng.normal(10.0, 1.0, shape), 10.0),
    "lognormal": (lambda rng, shape: rng.lognormal(0.0, 0.8, shape), 1.0),
    "bimodal": (
        lambda rng, shape: np.where(rng.random(shape) < 0.5, rng.normal(9.0, 0.3, shape), rng.normal(11.5, 0.8, shape)),
        _bimodal_median(),
    ),
}


def _slack(coverage: float, reps: int) -> float:
    return 3.0 * np.sqrt(coverage * (1.0 - coverage) / reps)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 9, 15])
def test_median_interval_covers_at_least_its_stated_coverage(name, n):
    draw, median = DISTRIBUTIONS[name]
    rng = np.random.default_rng(n)
    low, high, coverage = intervals.median_intervals_of_sorted_rows(np.sort(draw(rng, (REPS, n)), axis=1))
    observed = np.mean((low <= median) & (median <= high))
    assert observed >= coverage[0] - _slack(coverage[0], REPS), (name, n, observed, coverage[0])
    assert coverage[0] >= 0.95 or n <= 5  # 95 % reached from six values on


def test_the_summary_states_the_coverage_it_achieves():
    """The whole path: many five-trial configurations of log-normal trials through summarise."""
    reps, n = 3000, 5
    rng = np.random.default_rng(11)
    values = rng.lognormal(0.0, 0.5, (reps, n)).reshape(-1)
    table = pd.DataFrame(
        {
            "platform_id": "p",
            "model": np.repeat([f"m{i}" for i in range(reps)], n),
            "quant": "q",
            "backend": "b",
            "batch_size": 1,
            "prompt_tokens": 8,
            "output_tokens": 4,
            "status": "ok",
            "trial": np.tile(np.arange(n), reps),
            "latency_s": values,
            "tokens_per_s": 1.0 / values,
            "energy_j_per_output_token": np.nan,
        }
    )
    summary = stats.summarise(table)
    assert (summary["ci_coverage"] == 0.9375).all() and (summary["ci_method"] == intervals.MEDIAN_TRIALS).all()
    observed = np.mean((summary["latency_s_ci_low"] <= 1.0) & (1.0 <= summary["latency_s_ci_high"]))
    assert observed >= 0.9375 - _slack(0.9375, reps)
    assert summary["energy_j_per_output_token_ci_low"].isna().all()  # no energy: no interval


def _replicated(replicate_medians: list[float], trials: int = 5, **keys) -> pd.DataFrame:
    rows = []
    for replicate, level in enumerate(replicate_medians):
        for trial in range(trials):
            value = level * (1.0 + 0.001 * (trial - trials // 2))  # trials agree to 0.1 %
            rows.append(
                {
                    "platform_id": "p",
                    "model": "m",
                    "quant": "q",
                    "backend": "b",
                    "batch_size": 1,
                    "prompt_tokens": 8,
                    "output_tokens": 4,
                    "status": "ok",
                    "replicate": replicate,
                    "trial": trial,
                    "latency_s": value,
                    "tokens_per_s": 1.0 / value,
                    "energy_j_per_output_token": value,
                }
                | keys
            )
    return pd.DataFrame(rows)


def test_replicates_that_differ_twofold_widen_the_interval_to_their_spread():
    """Five replicates from 1x to 2x, each internally tight: the interval is over the
    replicate medians and covers all of them; pooling the 25 trials as if independent gives
    [1.2, 1.7], which hides the spread between sessions."""
    table = _replicated([1.0, 1.2, 1.5, 1.7, 2.0])
    row = stats.summarise(table).iloc[0]
    assert row["n_replicates"] == 5 and row["ci_method"] == intervals.MEDIAN_REPLICATES
    assert row["latency_s_ci_low"] == pytest.approx(1.0) and row["latency_s_ci_high"] == pytest.approx(2.0)
    assert row["ci_coverage"] == 0.9375 and row["latency_s_median"] == pytest.approx(1.5)
    assert row["latency_s_cv"] > 0.2 and row["cv_flag"]  # the spread between sessions is seen
    pooled = stats.summarise(table.drop(columns="replicate")).iloc[0]
    assert pooled["ci_method"] == intervals.MEDIAN_TRIALS
    assert pooled["latency_s_ci_high"] - pooled["latency_s_ci_low"] < 0.6


def test_one_replicate_or_no_column_is_the_trial_interval():
    one = stats.summarise(_replicated([1.0])).iloc[0]
    assert one["n_replicates"] == 1 and one["ci_method"] == intervals.MEDIAN_TRIALS
    two = stats.summarise(_replicated([1.0, 2.0])).iloc[0]
    assert (two["latency_s_ci_low"], two["latency_s_ci_high"], two["ci_coverage"]) == pytest.approx((1.0, 2.0, 0.5))
    assert "2 replicate medians" in two["ci_note"]


def test_replicate_interval_covers_under_session_to_session_variance():
    """Random session effects (sd 0.3 in log) dwarf trial noise (0.01): the replicate-median
    interval keeps its stated coverage; pooling the trials would not."""
    reps, replicates, trials = 4000, 5, 5
    rng = np.random.default_rng(5)
    session = rng.normal(0.0, 0.3, (reps, replicates, 1))
    values = np.exp(session + rng.normal(0.0, 0.01, (reps, replicates, trials)))
    replicate_medians = np.sort(np.median(values, axis=2), axis=1)
    low, high, coverage = intervals.median_intervals_of_sorted_rows(replicate_medians)
    observed = np.mean((low <= 1.0) & (1.0 <= high))
    assert observed >= coverage[0] - _slack(coverage[0], reps)
    pooled_low, pooled_high, pooled_coverage = intervals.median_intervals_of_sorted_rows(
        np.sort(values.reshape(reps, -1), axis=1)
    )
    assert np.mean((pooled_low <= 1.0) & (1.0 <= pooled_high)) < pooled_coverage[0] - 0.1


@pytest.mark.parametrize("n", [6, 10, 20])
@pytest.mark.parametrize("r", [0.0, 0.5, 0.9])
def test_spearman_interval_covers_at_least_95_percent(n, r):
    reps = 3000
    rng = np.random.default_rng(int(100 * r) + n)
    x = rng.standard_normal((reps, n))
    y = r * x + np.sqrt(1.0 - r * r) * rng.standard_normal((reps, n))
    true_rho = 6.0 / np.pi * np.arcsin(r / 2.0)  # of a bivariate normal (Pearson 1907)
    low, high = intervals.spearman_interval(intervals.row_spearman(x, y), n)
    observed = np.mean((low <= true_rho) & (true_rho <= high))
    assert observed >= 0.95 - _slack(0.95, reps), (n, r, observed)


def test_tail_percentiles_need_enough_samples():
    assert [stats.percentile_min_samples(q) for q in (50, 90, 95, 99)] == [1, 10, 20, 100]
    assert stats.tail_percentile(np.arange(31.0), 99) is None  # would be the maximum
    assert stats.tail_percentile(np.arange(100.0), 99) == pytest.approx(np.percentile(np.arange(100.0), 99))
    assert stats.tail_percentile([3.0], 50) == 3.0 and stats.tail_percentile([], 50) is None
