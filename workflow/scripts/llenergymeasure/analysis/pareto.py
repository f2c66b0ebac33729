"""4. Pareto frontiers of quality against efficiency, and how well one platform's frontier
predicts another's.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ..rank_tests import GROUP_KEYS
from ..ranking import cost as _cost
from ..ranking import metric_values
from ..ranking import platforms as _platforms
from ..ranking import usable as _usable
from ..stats import CHOICE_KEYS, WORKLOAD_KEYS
from .columns import frame as _frame


def pareto_mask(quality: np.ndarray, efficiency: np.ndarray) -> np.ndarray:
    """True for points no other point dominates, both coordinates minimised."""
    q = np.asarray(quality, dtype=float)
    e = np.asarray(efficiency, dtype=float)
    no_worse = (q[None, :] <= q[:, None]) & (e[None, :] <= e[:, None])  # [i, j]: j vs i
    better = (q[None, :] < q[:, None]) | (e[None, :] < e[:, None])
    return ~(no_worse & better).any(axis=1)


def _pareto_inputs(summary: pd.DataFrame, quality: str, efficiency: str) -> pd.DataFrame:
    """Configurations with both values; none when the table has no column for either (a
    study without perplexities)."""
    usable = _usable(summary)
    if not all(f"{m}_median" in usable.columns or m in usable.columns for m in (quality, efficiency)):
        return usable.iloc[:0].assign(_quality=pd.Series(dtype=float), _efficiency=pd.Series(dtype=float))
    table = usable.assign(
        _quality=metric_values(usable, quality),
        _efficiency=_cost(metric_values(usable, efficiency), efficiency),
    )
    return table[np.isfinite(table["_quality"]) & np.isfinite(table["_efficiency"])]


def pareto_frontiers(
    summary: pd.DataFrame,
    quality: str = "perplexity",
    efficiency: str = "energy_j_per_output_token",
) -> pd.DataFrame:
    """Each platform's and workload's configurations with whether they lie on the frontier of
    `quality` (lower is better) against `efficiency` (a cost; throughput is inverted).
    Configurations without a quality or efficiency value are left out."""
    table = _pareto_inputs(summary, quality, efficiency)
    rows: list[dict] = []
    for key, group in table.groupby(GROUP_KEYS, sort=True):
        frontier = pareto_mask(group["_quality"].to_numpy(), group["_efficiency"].to_numpy())
        for i, (_, config) in enumerate(group.iterrows()):
            rows.append(
                {
                    **dict(zip(GROUP_KEYS, key, strict=True)),
                    **{k: config[k] for k in CHOICE_KEYS},
                    "quality": float(config["_quality"]),
                    "efficiency": float(metric_values(group.iloc[[i]], efficiency)[0]),
                    "quality_metric": quality,
                    "efficiency_metric": efficiency,
                    "on_frontier": bool(frontier[i]),
                    "weights": config.get("weights"),
                    "energy_is_estimate": config.get("energy_is_estimate"),
                }
            )
    return _frame("pareto", rows)


def pareto_transfer(
    summary: pd.DataFrame,
    quality: str = "perplexity",
    efficiency: str = "energy_j_per_output_token",
) -> pd.DataFrame:
    """How well a source platform's frontier predicts a target platform's at each workload:
    both frontiers recomputed over the configurations the two share, then precision (share
    of the source frontier also on the target's), recall and F1."""
    table = _pareto_inputs(summary, quality, efficiency)
    platforms = _platforms(table) if len(table) else []
    rows: list[dict] = []
    for source, target in itertools.permutations(platforms, 2):
        for workload, group in table.groupby(WORKLOAD_KEYS, sort=True):
            src = group[group["platform_id"].astype(object) == source].set_index(CHOICE_KEYS)
            tgt = group[group["platform_id"].astype(object) == target].set_index(CHOICE_KEYS)
            common = src.index.intersection(tgt.index)
            if len(common) == 0:
                continue
            src, tgt = src.loc[common], tgt.loc[common]
            on_src = pareto_mask(src["_quality"].to_numpy(), src["_efficiency"].to_numpy())
            on_tgt = pareto_mask(tgt["_quality"].to_numpy(), tgt["_efficiency"].to_numpy())
            shared = int((on_src & on_tgt).sum())
            precision = shared / on_src.sum()
            recall = shared / on_tgt.sum()
            f1 = 2 * precision * recall / (precision + recall) if shared else 0.0
            rows.append(
                {
                    "source_platform": source,
                    "target_platform": target,
                    **dict(zip(WORKLOAD_KEYS, workload, strict=True)),
                    "n_common": len(common),
                    "n_frontier_source": int(on_src.sum()),
                    "n_frontier_target": int(on_tgt.sum()),
                    "n_shared": shared,
                    "precision": float(precision),
                    "recall": float(recall),
                    "f1": float(f1),
                }
            )
    return _frame("pareto_transfer", rows)
