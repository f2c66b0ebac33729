"""FLOPs against measurement: do the two order a platform's choices the same way?

* **FLOPs levels.** FLOPs per output token equal within a relative tolerance
  (``analysis.flops_tolerance``, default 0.5 %) form one *level*: weight-only variants of one
  model share their FLOPs exactly, and two architectures 2e-5 apart are not "ranked" by
  FLOPs. A level of k configurations occupies k rank positions; its members' FLOPs rank is
  their average. A configuration *disagrees* when its measured rank falls two or more
  positions outside its level's positions (`rank_shift`), so reordering inside a level is
  never counted, and `n_discordant_pairs` counts pairs on different levels that measurement
  orders the other way.
* **Spearman's rho** between FLOPs level and measured cost per platform, workload and
  metric, with its Bonett-Wright interval (`intervals.spearman_interval`).
* **The rank-shift test** (the seed paper's "Mann-Whitney U and Cohen's d", asked of ranks
  rather than of two sets of ratios that hold the same values whatever their order): are
  the configurations' rank shifts between FLOPs and measurement larger than the rank shifts
  the measurement makes on its own from trial to trial? One-sided Mann-Whitney U of the
  absolute FLOPs-vs-median shifts against the absolute trial-vs-median shifts, pooled over a
  platform's workloads; effect size Cliff's delta (= the rank-biserial correlation of U) and
  Cohen's d of the same two samples. Under agreement the FLOPs shifts of the medians are no
  larger than single trials' shifts, so the test errs towards not flagging.
* Configurations whose FLOPs are missing or whose ``flops_confidence`` is ``unsupported``
  are left out of every ranking here and counted (`n_excluded_flops`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from . import intervals
from .ranking import cost_rank, frame, label, metric_values, platforms, usable
from .stats import CHOICE_KEYS, WORKLOAD_KEYS, replicates_of, require_columns

RANKED_METRICS: list[str] = ["energy_j_per_output_token", "latency_s", "tokens_per_s"]
GROUP_KEYS: list[str] = ["platform_id", *WORKLOAD_KEYS]  # one within-platform comparison
FLOPS_TOLERANCE = 0.005
DISAGREEMENT_POSITIONS = 2
UNSUPPORTED = "unsupported"
RANK_SHIFT_TEST = "mann_whitney_u_one_sided(|flops_vs_median_rank_shift| > |trial_vs_median_rank_shift|)"

COLUMNS: dict[str, list[str]] = {
    "flops_ranks": [
        *GROUP_KEYS,
        *CHOICE_KEYS,
        "metric",
        "flops_per_output_token",
        "value",
        "flops_level",
        "flops_rank",
        "measured_rank",
        "rank_difference",
        "rank_shift",
        "disagrees",
        "flops_excluded",
    ],
    "flops_rank_agreement": [
        *GROUP_KEYS,
        "metric",
        "n_configs",
        "n_excluded_flops",
        "n_flops_levels",
        "n_disagreements",
        "n_discordant_pairs",
        "spearman_rho",
        "spearman_ci_low",
        "spearman_ci_high",
        "ci_method",
        "disagreements",
        "note",
    ],
    "rank_difference_tests": [
        "platform_id",
        "metric",
        "n_configs",
        "n_trial_shifts",
        "n_excluded_flops",
        "test",
        "p_value",
        "effect_size",
        "effect_size_kind",
        "cohens_d",
        "mean_flops_rank_shift",
        "mean_trial_rank_shift",
        "note",
    ],
}


def flops_levels(values: np.ndarray, tolerance: float = FLOPS_TOLERANCE) -> np.ndarray:
    """Level of each value, 0 = cheapest: sorted ascending, a value more than `tolerance`
    (relative) above the first value of the current level starts the next one, so a level
    never spans more than the tolerance. nan gets -1."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"analysis.flops_tolerance: {tolerance!r} is not a relative tolerance in [0, 1)")
    values = np.asarray(values, dtype=float)
    levels = np.full(values.size, -1, dtype=np.int64)
    level, start = -1, None
    for index in np.argsort(values, kind="stable"):
        value = values[index]
        if not np.isfinite(value):
            continue
        if start is None or value - start > tolerance * abs(start):
            level, start = level + 1, value
        levels[index] = level
    return levels


def level_positions(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) rank position (1-based) each member's level occupies."""
    sizes = np.bincount(levels)
    last = np.cumsum(sizes)
    return (last - sizes + 1)[levels].astype(float), last[levels].astype(float)


def rank_shift(measured_rank: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """How far each measured rank lies outside its FLOPs level's positions (signed; 0 inside)."""
    return np.where(
        measured_rank > last, measured_rank - last, np.where(measured_rank < first, measured_rank - first, 0.0)
    )


def flops_exclusion(table: pd.DataFrame) -> list[str | None]:
    """Why each row's FLOPs cannot rank it (None: usable). Missing FLOPs columns (tables
    from before the FLOPs engine recorded its confidence) count as usable."""
    flops = (
        metric_values(table, "flops_per_output_token")
        if "flops_per_output_token" in table
        else np.full(len(table), np.nan)
    )
    confidence = (
        table["flops_confidence"].astype(object)
        if "flops_confidence" in table
        else pd.Series([None] * len(table), index=table.index)
    )
    reason = (
        table["flops_reason"].astype(object)
        if "flops_reason" in table
        else pd.Series([None] * len(table), index=table.index)
    )
    out: list[str | None] = []
    for value, level, why in zip(flops, confidence, reason, strict=True):
        if level == UNSUPPORTED:
            out.append(
                f"flops_confidence unsupported: {why}"
                if isinstance(why, str) and why
                else "flops_confidence unsupported"
            )
        elif not np.isfinite(value):
            out.append("no FLOPs count")
        else:
            out.append(None)
    return out


def flops_rank_comparison(
    summary: pd.DataFrame,
    metrics: Sequence[str] = RANKED_METRICS,
    min_disagreement: int = DISAGREEMENT_POSITIONS,
    tolerance: float = FLOPS_TOLERANCE,
) -> pd.DataFrame:
    """One row per (configuration, metric) of each platform and workload: its FLOPs level
    and rank, its measured rank, the shift outside its level and whether that is at least
    `min_disagreement` positions. Configurations whose FLOPs cannot rank them keep a row
    with empty ranks and the reason (`flops_excluded`)."""
    require_columns(summary, [*GROUP_KEYS, *CHOICE_KEYS], "summary")
    rows: list[dict] = []
    for key, group in usable(summary).groupby(GROUP_KEYS, sort=True):
        excluded = np.array(flops_exclusion(group), dtype=object)
        flops = (
            metric_values(group, "flops_per_output_token")
            if "flops_per_output_token" in group
            else np.full(len(group), np.nan)
        )
        for metric in metrics:
            measured = metric_values(group, metric)
            keep = np.isfinite(measured) & np.array([why is None for why in excluded])
            levels = np.full(len(group), -1)
            first = last = measured_rank = np.full(len(group), np.nan)
            if keep.any():
                levels[keep] = flops_levels(flops[keep], tolerance)
                first, last = np.full(len(group), np.nan), np.full(len(group), np.nan)
                first[keep], last[keep] = level_positions(levels[keep])
                measured_rank = np.full(len(group), np.nan)
                measured_rank[keep] = cost_rank(measured[keep], metric)
            shift = rank_shift(measured_rank, first, last)
            for i, (_, config) in enumerate(group.iterrows()):
                if not np.isfinite(measured[i]):
                    continue  # nothing measured: not part of this ranking
                flops_rank = (first[i] + last[i]) / 2.0
                rows.append(
                    {
                        **dict(zip(GROUP_KEYS, key, strict=True)),
                        **{k: config[k] for k in CHOICE_KEYS},
                        "metric": metric,
                        "flops_per_output_token": float(flops[i]),
                        "value": float(measured[i]),
                        "flops_level": int(levels[i]) + 1 if keep[i] else None,
                        "flops_rank": float(flops_rank),
                        "measured_rank": float(measured_rank[i]),
                        "rank_difference": float(measured_rank[i] - flops_rank),
                        "rank_shift": float(shift[i]),
                        "disagrees": bool(keep[i] and abs(shift[i]) >= min_disagreement),
                        "flops_excluded": excluded[i],
                    }
                )
    return frame(COLUMNS["flops_ranks"], rows)


def _discordant_pairs(levels: np.ndarray, measured_rank: np.ndarray) -> int:
    lower_level = levels[:, None] < levels[None, :]
    return int((lower_level & (measured_rank[:, None] > measured_rank[None, :])).sum())


def rank_agreement(flops_ranks: pd.DataFrame) -> pd.DataFrame:
    """Per platform, workload and metric: configurations ranked and left out, FLOPs levels,
    disagreements (listed as ``model/quant/backend (+shift)``), discordant pairs across
    levels, and Spearman's rho between FLOPs level and measured rank with its interval."""
    rows: list[dict] = []
    for key, group in flops_ranks.groupby([*GROUP_KEYS, "metric"], sort=True):
        ranked = group[group["flops_excluded"].isna()]
        levels = pd.to_numeric(ranked["flops_level"]).to_numpy(float)
        measured = ranked["measured_rank"].to_numpy(float)
        n, n_levels = len(ranked), int(np.unique(levels).size)
        rho = float(intervals.row_spearman(levels, measured)) if n >= 3 and n_levels > 1 else np.nan
        low, high = intervals.spearman_interval(np.array(rho), n)
        disagreeing = ranked[ranked["disagrees"].astype(bool)]
        if n_levels <= 1:
            note = (
                (f"all {n} configurations on one FLOPs level (within the tolerance): FLOPs cannot order them")
                if n
                else "no configuration with usable FLOPs"
            )
        elif n < intervals.MIN_CORRELATION_PAIRS:
            note = f"{n} configurations: no interval for rho (needs {intervals.MIN_CORRELATION_PAIRS})"
        else:
            note = None
        rows.append(
            {
                **dict(zip([*GROUP_KEYS, "metric"], key, strict=True)),
                "n_configs": n,
                "n_excluded_flops": len(group) - n,
                "n_flops_levels": n_levels,
                "n_disagreements": len(disagreeing),
                "n_discordant_pairs": _discordant_pairs(levels, measured),
                "spearman_rho": rho,
                "spearman_ci_low": float(low),
                "spearman_ci_high": float(high),
                "ci_method": intervals.SPEARMAN_FISHER_Z if np.isfinite(low) else None,
                "disagreements": "; ".join(f"{label(r)} ({r['rank_shift']:+g})" for _, r in disagreeing.iterrows()),
                "note": note,
            }
        )
    return frame(COLUMNS["flops_rank_agreement"], rows)


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """(mean(a) - mean(b)) over the pooled standard deviation (n-1 weighting)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return np.nan
    pooled = np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else np.nan


def cliffs_delta(a: np.ndarray, b: np.ndarray) -> float:
    """P(a > b) - P(a < b) over every pair: Mann-Whitney's U rescaled to [-1, 1]."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        return np.nan
    return float(np.sign(a[:, None] - b[None, :]).mean())


def _trial_shifts(trials: pd.DataFrame, group: pd.DataFrame, metric: str, median_rank: np.ndarray) -> list[float]:
    """|rank in one trial - rank of the medians| of each configuration of `group`, for every
    (replicate, trial) in which all of them succeeded."""
    labels = [label(r) for _, r in group.iterrows()]
    values = trials.assign(
        _label=[label(r) for _, r in trials.iterrows()],
        _replicate=replicates_of(trials),
        _value=pd.to_numeric(trials[metric], errors="coerce").astype(float),
    )
    wide = values.pivot_table(index=["_replicate", "trial"], columns="_label", values="_value", aggfunc="first")
    wide = wide.reindex(columns=labels).dropna()
    shifts: list[float] = []
    for row in wide.to_numpy(float):
        shifts.extend(np.abs(cost_rank(row, metric) - median_rank).tolist())
    return shifts


def rank_difference_tests(
    measurements: pd.DataFrame,
    summary: pd.DataFrame,
    metrics: Sequence[str] = RANKED_METRICS,
    tolerance: float = FLOPS_TOLERANCE,
) -> pd.DataFrame:
    """Per platform and metric: do FLOPs-vs-measured rank shifts exceed the measurement's own
    trial-to-trial rank shifts? (`RANK_SHIFT_TEST`; see the module docstring.)"""
    require_columns(measurements, [*GROUP_KEYS, *CHOICE_KEYS, "trial", "status"], "measurements")
    ok = measurements[(measurements["status"].astype(object) == "ok").to_numpy(dtype=bool)]
    trials_by_group = dict(list(ok.groupby(GROUP_KEYS, sort=False)))
    summary = usable(summary)
    rows: list[dict] = []
    for platform in platforms(summary):
        part = summary[summary["platform_id"].astype(object) == platform]
        for metric in metrics:
            flops_shifts: list[float] = []
            trial_shifts: list[float] = []
            n_excluded = 0
            for key, group in part.groupby(GROUP_KEYS, sort=True):
                measured = metric_values(group, metric)
                excluded = np.array([why is not None for why in flops_exclusion(group)])
                n_excluded += int((excluded & np.isfinite(measured)).sum())
                group = group[np.isfinite(measured) & ~excluded]
                if len(group) < 2:
                    continue
                levels = flops_levels(metric_values(group, "flops_per_output_token"), tolerance)
                median_rank = cost_rank(metric_values(group, metric), metric)
                flops_shifts.extend(np.abs(rank_shift(median_rank, *level_positions(levels))).tolist())
                trials = trials_by_group.get(key, ok.iloc[:0])
                trials = trials.merge(group[CHOICE_KEYS], on=CHOICE_KEYS)
                trial_shifts.extend(_trial_shifts(trials, group, metric, median_rank))
            a, b = np.array(flops_shifts), np.array(trial_shifts)
            note = None
            if a.size == 0 or b.size == 0:
                p = delta = np.nan
                note = "no workload with two ranked configurations and a trial in which all succeeded"
            elif np.ptp(np.concatenate([a, b])) == 0:
                p, delta = 1.0, 0.0  # every shift equal: no evidence either way
                note = "every rank shift is equal: nothing to test"
            else:
                p = float(scipy_stats.mannwhitneyu(a, b, alternative="greater").pvalue)
                delta = cliffs_delta(a, b)
            rows.append(
                {
                    "platform_id": platform,
                    "metric": metric,
                    "n_configs": int(a.size),
                    "n_trial_shifts": int(b.size),
                    "n_excluded_flops": n_excluded,
                    "test": RANK_SHIFT_TEST,
                    "p_value": p,
                    "effect_size": delta,
                    "effect_size_kind": "cliffs_delta",
                    "cohens_d": cohens_d(a, b),
                    "mean_flops_rank_shift": float(a.mean()) if a.size else np.nan,
                    "mean_trial_rank_shift": float(b.mean()) if b.size else np.nan,
                    "note": note,
                }
            )
    return frame(COLUMNS["rank_difference_tests"], rows)
