"""The warm-up check: trial 0 against the later trials, calibrated and able to see a cold start."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from llenergymeasure.warmup_check import first_trial_test, poisson_binomial_upper_tail


def _rows(rng: np.random.Generator, groups: int, trials: int, first_factor: float = 1.0) -> pd.DataFrame:
    records = []
    for group in range(groups):
        scale = rng.uniform(0.01, 2.0)  # configurations differ in cost; only ranks within one matter
        for trial in range(trials):
            latency = scale * rng.lognormal(0.0, 0.05) * (first_factor if trial == 0 else 1.0)
            records.append(
                {"model": f"m{group}", "quant": "q", "backend": "b", "batch_size": 1, "prompt_tokens": 8}
                | {"replicate": 1, "trial": trial, "status": "ok", "latency_s": latency}
            )
    return pd.DataFrame(records)


def test_the_tail_equals_the_binomial_one_where_every_probability_is_equal():
    n, p = 30, 0.2
    for k in (0, 3, 6, 12, 30):
        binomial = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))
        assert poisson_binomial_upper_tail([p] * n, k) == pytest.approx(binomial, rel=1e-9)
    assert poisson_binomial_upper_tail([0.5, 1.0], 1) == 1.0
    assert poisson_binomial_upper_tail([0.5, 0.25], 2) == pytest.approx(0.125)


def test_exchangeable_trials_are_rejected_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    rejections = sum(first_trial_test(_rows(rng, 60, 5)).p_value < 0.05 for _ in range(200))
    # a discrete test is conservative: at most 5 % plus simulation noise (sd 1.5 % at 200 runs)
    assert rejections / 200 <= 0.08


def test_a_cold_first_trial_is_seen_and_its_size_estimated():
    rng = np.random.default_rng(1)
    result = first_trial_test(_rows(rng, 60, 5, first_factor=1.15))
    assert result.groups == 60 and result.expected == pytest.approx(12.0)
    assert result.first_slowest > 40 and result.p_value < 1e-6
    assert result.median_ratio == pytest.approx(1.15, rel=0.05)


def test_groups_without_three_trials_or_a_trial_0_are_left_out():
    rng = np.random.default_rng(2)
    rows = _rows(rng, 4, 5)
    rows = rows[~((rows["model"] == "m0") & (rows["trial"] > 1))]  # 2 trials left
    rows = rows[~((rows["model"] == "m1") & (rows["trial"] == 0))]  # no trial 0
    rows.loc[(rows["model"] == "m2") & (rows["trial"] == 3), "status"] = "failed"  # 4 ok trials: kept
    result = first_trial_test(rows)
    assert result.groups == 2 and result.expected == pytest.approx(1 / 4 + 1 / 5)
    assert first_trial_test(rows.iloc[0:0]).p_value is None
