"""Was the warm-up long enough? Trial 0 of each shape against the later trials of its job.

If the warm-up reached steady state, the trials of one (configuration, replicate) are
exchangeable: trial 0, the first after warm-up, is the slowest of its n trials with
probability 1/n. A warm-up cut short leaves trial 0 slow more often. `first_trial_test`
counts the groups where trial 0 was the slowest and gives the exact one-sided p-value of that
count under exchangeability (a Poisson-binomial tail: groups may have different n), with the
median ratio of trial 0's latency to the median of the later trials.
"""

from __future__ import annotations

import dataclasses
from typing import Any

GROUP_KEYS = ["platform_id", "model", "quant", "backend", "batch_size", "prompt_tokens", "replicate"]


@dataclasses.dataclass(frozen=True)
class FirstTrialTest:
    groups: int  # (configuration, replicate) groups with at least 3 successful trials
    first_slowest: int  # groups where trial 0 was the slowest trial
    expected: float  # that count's expectation when trials are exchangeable: sum of 1/n
    p_value: float | None  # P(count >= first_slowest) under exchangeability; None: no group
    median_ratio: float | None  # median over groups of latency(trial 0) / median latency(trials 1..)


def poisson_binomial_upper_tail(probabilities: list[float], at_least: int) -> float:
    """P(sum of independent Bernoulli(p_i) >= at_least), exactly (dynamic programming)."""
    distribution = [1.0]
    for p in probabilities:
        distribution = [
            (distribution[k] if k < len(distribution) else 0.0) * (1 - p) + (distribution[k - 1] * p if k > 0 else 0.0)
            for k in range(len(distribution) + 1)
        ]
    return min(1.0, sum(distribution[max(at_least, 0) :]))


def first_trial_test(rows: Any, metric: str = "latency_s") -> FirstTrialTest:
    """The test above over the successful trial rows of a measurements table (pandas)."""
    import pandas as pd

    ok = rows[(rows["status"] == "ok") & rows[metric].notna()]
    keys = [key for key in GROUP_KEYS if key in ok.columns]
    probabilities: list[float] = []
    slowest = 0
    ratios: list[float] = []
    for _, group in ok.groupby(keys, dropna=False, sort=False):
        if len(group) < 3 or 0 not in set(group["trial"]):
            continue
        values = group.set_index("trial")[metric].astype(float)
        first = values.loc[0]
        later = values.drop(index=0)
        probabilities.append(1 / len(values))
        slowest += bool(first > later.max())
        ratios.append(first / later.median())
    if not probabilities:
        return FirstTrialTest(0, 0, 0.0, None, None)
    return FirstTrialTest(
        groups=len(probabilities),
        first_slowest=slowest,
        expected=sum(probabilities),
        p_value=poisson_binomial_upper_tail(probabilities, slowest),
        median_ratio=float(pd.Series(ratios).median()),
    )


__all__ = ["GROUP_KEYS", "FirstTrialTest", "first_trial_test", "poisson_binomial_upper_tail"]
