"""3 and 6. Transfer between platforms: rank correlations of two platforms' rankings per
workload and metric (3), and the transfer error per architecture family (6).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import intervals
from ..intervals import rank_correlations
from ..rank_tests import RANKED_METRICS
from ..ranking import cost_rank, metric_column
from ..ranking import platforms as _platforms
from ..ranking import usable as _usable
from ..stats import CHOICE_KEYS, WORKLOAD_KEYS
from .columns import frame as _frame

FAMILY_COLUMN = "model_family"


def _platform_values(table: pd.DataFrame, platform: str, value_column: str) -> pd.Series:
    """One platform's values indexed by the platform-free configuration key."""
    keys = [*CHOICE_KEYS, *WORKLOAD_KEYS]
    part = table[table["platform_id"].astype(object) == platform]
    values = pd.to_numeric(part[value_column], errors="coerce").astype(float)
    return pd.Series(values.to_numpy(), index=pd.MultiIndex.from_frame(part[keys])).dropna()


def _transfer_inputs(
    summary: pd.DataFrame, compound: pd.DataFrame | None, metrics: Sequence[str]
) -> list[tuple[str, pd.DataFrame, str]]:
    """(metric name, table, column) for each raw metric, plus the compound one if given."""
    usable = _usable(summary)
    inputs = [(m, usable, metric_column(usable, m)) for m in metrics]
    if compound is not None and len(compound):
        inputs.append(("compound", compound, "compound"))
    return inputs


def ranking_transfer(
    summary: pd.DataFrame,
    compound: pd.DataFrame | None = None,
    metrics: Sequence[str] = RANKED_METRICS,
) -> pd.DataFrame:
    """Spearman's rho (Bonett-Wright interval) and Kendall's tau-b between every two
    platforms' rankings of the configurations both measured, per workload and metric (and
    compound): pooling workloads would let batch-size effects pass for agreement."""
    platforms = _platforms(summary)
    rows: list[dict] = []
    for metric, table, column in _transfer_inputs(summary, compound, metrics):
        for a, b in itertools.combinations(platforms, 2):
            joined = pd.concat(
                [_platform_values(table, a, column), _platform_values(table, b, column)],
                axis=1,
                join="inner",
            ).dropna()
            workloads = joined.index.to_frame(index=False)[WORKLOAD_KEYS]
            for workload, positions in workloads.groupby(WORKLOAD_KEYS, sort=True).indices.items():
                part = joined.iloc[positions]
                x, y = part.iloc[:, 0].to_numpy(float), part.iloc[:, 1].to_numpy(float)
                correlations = rank_correlations(x, y)
                rows.append(
                    {
                        "platform_a": a,
                        "platform_b": b,
                        **dict(zip(WORKLOAD_KEYS, workload, strict=True)),
                        "metric": metric,
                        "n_configs": len(part),
                        **correlations,
                        "ci_method": intervals.SPEARMAN_FISHER_Z
                        if np.isfinite(correlations["spearman_ci_low"])
                        else None,
                    }
                )
    return _frame("ranking_transfer", rows)


# 6. Transfer error per architecture family --------------------------------------------------


def families_of(summary: pd.DataFrame, families: Mapping[str, str] | None = None) -> pd.Series:
    """Each row's architecture family: the `model_family` column where the rows carry it,
    else `families[model]`, else the model name itself."""
    families = families or {}
    by_model = summary["model"].astype(object).map(lambda m: families.get(m, m))
    if FAMILY_COLUMN in summary.columns:
        return summary[FAMILY_COLUMN].astype(object).where(summary[FAMILY_COLUMN].notna(), by_model)
    return by_model


def family_transfer_error(
    summary: pd.DataFrame,
    families: Mapping[str, str] | None = None,
    metrics: Sequence[str] = RANKED_METRICS,
) -> pd.DataFrame:
    """Per pair of platforms, metric and architecture family: how far the family's
    configurations move between the two platforms' joint rankings (mean absolute shift, and
    that over the largest possible shift), and the median absolute log error of predicting
    the second platform's values from the first's scaled by their median ratio."""
    usable = _usable(summary)
    usable = usable.assign(_family=families_of(usable, families).to_numpy())
    keys = [*CHOICE_KEYS, *WORKLOAD_KEYS]
    rows: list[dict] = []
    for metric in metrics:
        column = metric_column(usable, metric)
        for a, b in itertools.combinations(_platforms(usable), 2):
            part_a = usable[usable["platform_id"].astype(object) == a].set_index(keys)
            part_b = usable[usable["platform_id"].astype(object) == b].set_index(keys)
            common = part_a.index.intersection(part_b.index)
            va = pd.to_numeric(part_a.loc[common, column]).to_numpy(float)
            vb = pd.to_numeric(part_b.loc[common, column]).to_numpy(float)
            keep = np.isfinite(va) & np.isfinite(vb) & (va > 0) & (vb > 0)
            if keep.sum() < 2:
                continue
            va, vb = va[keep], vb[keep]
            family = part_a.loc[common, "_family"].to_numpy(object)[keep]
            shift = np.abs(cost_rank(va, metric) - cost_rank(vb, metric))
            log_ratio = np.log(vb / va)
            log_error = np.abs(log_ratio - np.median(log_ratio))
            for name in sorted(set(family)):
                mine = family == name
                rows.append(
                    {
                        "platform_a": a,
                        "platform_b": b,
                        "metric": metric,
                        "family": name,
                        "n_configs": int(mine.sum()),
                        "mean_abs_rank_shift": float(shift[mine].mean()),
                        "normalised_rank_shift": float(shift[mine].mean() / (va.size - 1)),
                        "median_abs_log_error": float(np.median(log_error[mine])),
                    }
                )
    return _frame("family_transfer_error", rows)
