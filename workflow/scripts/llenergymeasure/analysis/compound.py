"""2. Compound efficiency: each configuration's geometric mean of cost ratios to a reference
choice at the same platform and workload, and how stable its rank is over repeated trials.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .. import stats
from ..rank_tests import GROUP_KEYS
from ..ranking import cost as _cost
from ..ranking import label as _label
from ..ranking import metric_column, metric_values
from ..ranking import spearman as _spearman
from ..ranking import usable as _usable
from ..stats import CHOICE_KEYS, CONFIG_KEYS, StatsInputError
from .columns import frame as _frame


def _check_reference(summary: pd.DataFrame, reference: Mapping[str, str]) -> None:
    missing = [k for k in CHOICE_KEYS if k not in reference]
    if missing:
        raise StatsInputError(f"analysis.reference: missing {missing[0]!r}; give model, quant and backend")
    matches = np.ones(len(summary), dtype=bool)
    for k in CHOICE_KEYS:
        matches &= (summary[k].astype(object) == reference[k]).to_numpy(dtype=bool)
    if len(summary) and not matches.any():
        known = sorted({_label(r) for _, r in summary.iterrows()})
        raise StatsInputError(
            f"analysis.reference: {_label(reference)} matches no configuration in the "
            f"summary; choose one of {', '.join(known)}"
        )


def _reference_row(group: pd.DataFrame, reference: Mapping[str, str]) -> pd.Series | None:
    mask = np.ones(len(group), dtype=bool)
    for k in CHOICE_KEYS:
        mask &= (group[k].astype(object) == reference[k]).to_numpy(dtype=bool)
    return group[mask].iloc[0] if mask.any() else None


def _geometric_mean_ratio(table: pd.DataFrame, reference: pd.Series, metrics: Sequence[str]) -> np.ndarray:
    """Geometric mean over `metrics` of each row's cost ratio to `reference` (nan if any is)."""
    logs = []
    for metric in metrics:
        column = metric_column(table, metric)
        ref_value = pd.to_numeric(pd.Series([reference[column]]), errors="coerce").iloc[0]
        values = _cost(metric_values(table, metric), metric)
        ref_cost = _cost(np.array([ref_value], dtype=float), metric)[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            logs.append(np.log(values / ref_cost))
    stacked = np.vstack(logs)
    stacked[~np.isfinite(stacked)] = np.nan
    return np.exp(np.mean(stacked, axis=0))  # nan propagates: all metrics or none


def compound_efficiency(summary: pd.DataFrame, reference: Mapping[str, str], metrics: Sequence[str]) -> pd.DataFrame:
    """Geometric mean of each configuration's cost ratios to the reference choice at the same
    platform and workload, over `metrics` (throughput inverted so that every ratio is a cost;
    below 1 is cheaper than the reference). Ranked within platform and workload; a workload
    where the reference has no successful trial gets nan."""
    if not metrics:
        raise StatsInputError("analysis.compound_metrics: empty; list at least one metric")
    usable = _usable(summary)
    _check_reference(usable, reference)
    for metric in metrics:
        metric_column(usable, metric)
    rows: list[dict] = []
    for key, group in usable.groupby(GROUP_KEYS, sort=True):
        ref = _reference_row(group, reference)
        compound = _geometric_mean_ratio(group, ref, metrics) if ref is not None else np.full(len(group), np.nan)
        ranks = np.full(len(group), np.nan)
        finite = np.isfinite(compound)
        ranks[finite] = scipy_stats.rankdata(compound[finite])
        for i, (_, config) in enumerate(group.iterrows()):
            rows.append(
                {
                    **dict(zip(GROUP_KEYS, key, strict=True)),
                    **{k: config[k] for k in CHOICE_KEYS},
                    "compound": float(compound[i]),
                    "compound_rank": float(ranks[i]),
                    "reference": _label(reference),
                    "metrics": ",".join(metrics),
                }
            )
    return _frame("compound", rows)


def compound_rank_stability(
    measurements: pd.DataFrame,
    summary: pd.DataFrame,
    reference: Mapping[str, str],
    metrics: Sequence[str],
) -> pd.DataFrame:
    """How stable the compound ranking is across repeated trials.

    Each trial's compound is the geometric mean of that trial's values over the reference
    choice's medians; configurations are ranked per trial index within platform and workload.
    Per configuration: the median, range and spread of its rank over trials; per group, the
    mean Spearman rho between every two trials' rankings (1 = the same order every trial).
    """
    stats.require_columns(measurements, [*CONFIG_KEYS, "trial", "status", *metrics], "measurements")
    usable = _usable(summary)
    _check_reference(usable, reference)
    ok = measurements[(measurements["status"].astype(object) == "ok").to_numpy(dtype=bool)]
    rows: list[dict] = []
    for key, group in ok.groupby(GROUP_KEYS, sort=True):
        summary_group = usable
        for column, value in zip(GROUP_KEYS, key, strict=True):
            summary_group = summary_group[summary_group[column] == value]
        ref = _reference_row(summary_group, reference)
        if ref is None:
            continue
        # measurements carry raw metric columns; align the reference's medians to their names
        ref_values = pd.Series({m: ref[metric_column(summary_group, m)] for m in metrics})
        trial_compound = group.assign(compound=_geometric_mean_ratio(group, ref_values, metrics))
        trial_compound = trial_compound[np.isfinite(trial_compound["compound"])]
        trial_compound = trial_compound.assign(rank=trial_compound.groupby("trial")["compound"].rank(method="average"))
        ranks = trial_compound.pivot_table(index=CHOICE_KEYS, columns="trial", values="rank", aggfunc="first")
        rhos = []
        for a, b in itertools.combinations(ranks.columns, 2):
            both = ranks[[a, b]].dropna()
            rho = _spearman(both[a].to_numpy(float), both[b].to_numpy(float))
            if np.isfinite(rho):
                rhos.append(rho)
        group_rho = float(np.mean(rhos)) if rhos else np.nan
        for choice, config_ranks in ranks.iterrows():
            present = config_ranks.dropna().to_numpy(float)
            rows.append(
                {
                    **dict(zip(GROUP_KEYS, key, strict=True)),
                    **dict(zip(CHOICE_KEYS, choice, strict=True)),
                    "n_trials_ranked": int(present.size),
                    "rank_median": float(np.median(present)),
                    "rank_min": float(present.min()),
                    "rank_max": float(present.max()),
                    "rank_std": float(np.std(present, ddof=1)) if present.size > 1 else np.nan,
                    "group_trial_rho_mean": group_rho,
                }
            )
    return _frame("compound_stability", rows)
