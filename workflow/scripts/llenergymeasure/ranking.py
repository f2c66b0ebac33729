"""How the analyses read a metric from the summary and rank configurations by it.

Shared by `analysis`, `rank_tests` and `energy_analysis`:

* Rank 1 is the cheapest: costs (energy, latency, memory, FLOPs) rank ascending,
  throughput (`tokens_per_s`) descending. Ties get their average rank.
* A metric named ``m`` is read from the summary's ``m_median`` when it has one (measured
  metrics), else from ``m`` itself (FLOPs columns, constant per configuration).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .stats import StatsInputError

HIGHER_IS_BETTER: frozenset[str] = frozenset({"tokens_per_s"})


def frame(columns: Sequence[str], rows: list[dict]) -> pd.DataFrame:
    """`rows` as a table of exactly `columns` (an empty one keeps them, typed object)."""
    if rows:
        return pd.DataFrame(rows, columns=list(columns))
    return pd.DataFrame({column: pd.Series(dtype=object) for column in columns})


def metric_column(table: pd.DataFrame, metric: str) -> str:
    """The column holding `metric` in a summary table (``<metric>_median`` or ``<metric>``)."""
    for column in (f"{metric}_median", metric):
        if column in table.columns:
            return column
    raise StatsInputError(
        f"summary: no column for metric {metric!r} (looked for '{metric}_median' and "
        f"'{metric}'); choose a metric the summary holds"
    )


def metric_values(table: pd.DataFrame, metric: str) -> np.ndarray:
    """`metric` as a float array (nan where empty)."""
    return pd.to_numeric(table[metric_column(table, metric)], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def cost_rank(values: np.ndarray, metric: str) -> np.ndarray:
    """Average ranks, 1 = cheapest (highest for throughput metrics)."""
    values = np.asarray(values, dtype=float)
    return scipy_stats.rankdata(-values if metric in HIGHER_IS_BETTER else values)


def cost(values: np.ndarray, metric: str) -> np.ndarray:
    """Values oriented as costs (lower is better): throughput is inverted."""
    values = np.asarray(values, dtype=float)
    if metric in HIGHER_IS_BETTER:
        with np.errstate(divide="ignore"):
            return 1.0 / values
    return values


def usable(summary: pd.DataFrame) -> pd.DataFrame:
    """Configurations with at least one successful trial."""
    if "n_ok" in summary.columns:
        return summary[pd.to_numeric(summary["n_ok"]).to_numpy() > 0]
    return summary


def label(row: Mapping[str, Any]) -> str:
    return f"{row['model']}/{row['quant']}/{row['backend']}"


def platforms(summary: pd.DataFrame) -> list[str]:
    return sorted(str(p) for p in summary["platform_id"].dropna().unique())


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho of three or more pairs, nan when either side is constant."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan
    return float(scipy_stats.spearmanr(x, y).statistic)
