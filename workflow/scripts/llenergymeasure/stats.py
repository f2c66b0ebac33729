"""Per-configuration summary statistics of the per-trial table.

`summarise(measurements)` turns the per-trial table (one row per trial, see
docs/ARCHITECTURE.md, "Rows") into one row per configuration: median, mean, standard
deviation, coefficient of variation and a distribution-free order-statistic interval of the
median (`intervals.py`), with its exact coverage, for the headline metrics; medians for the
secondary ones; trial and replicate counts; and flags when there are too few trials or the
spread is too large to trust a single number. Only rows with ``status == "ok"`` enter a
statistic; a configuration whose trials all failed still gets a row, with ``n_ok = 0`` and
empty statistics, so a sweep's failures stay visible. Where a configuration was measured in
several replicates (fresh processes), its statistics are over the replicates' medians.

Every statistic is computed for all configurations at once (vectorised numpy), and none
depends on a random draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from . import intervals, schema

# The lists below come from the column contract (config/schema/measurements.schema.yaml, schema.py).
# What identifies one measured configuration: platform_id, model, quant, backend, batch_size,
# prompt_tokens, output_tokens.
CONFIG_KEYS: list[str] = schema.keys("platform", "choice", "workload")
# The implementation choice (what gets ranked) and the workload it ran (what must match).
CHOICE_KEYS: list[str] = schema.keys("choice")
WORKLOAD_KEYS: list[str] = schema.keys("workload")

# Metrics summarised in full: median, mean, std, CV and interval of the median.
HEADLINE_METRICS: list[str] = schema.summary("headline")
# Metrics summarised by their median only (those absent from the table are skipped).
MEDIAN_METRICS: list[str] = schema.summary("median")
# Descriptive columns constant within a configuration: the first non-empty value is kept.
CARRIED_COLUMNS: list[str] = schema.summary("carried")

CONFIDENCE = intervals.CONFIDENCE
REPLICATE_COLUMN = "replicate"  # fresh-process repeats of one configuration; absent = one (0)
FEW_TRIALS = 3  # `few_trials_flag` below this many successful trials
SORT_BY_SIZE_LIMIT = 16  # _GroupedSample sorts group by group size up to this many distinct sizes


class StatsInputError(ValueError):
    """A table handed to this module lacks a column or holds an unusable value."""


def require_columns(table: pd.DataFrame, columns: Sequence[str], table_name: str) -> None:
    """Raise a one-line error naming the first missing column of `table`."""
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise StatsInputError(
            f"{table_name}: missing column {missing[0]!r} (also missing: {missing[1:]}); "
            f"regenerate it with the aggregate rule or add the column"
        )


def percentile_min_samples(q: float) -> int:
    """Fewest values whose q-th percentile is not just their extreme: a percentile above the
    median needs at least 1 / (1 - q/100) values (p90: 10, p95: 20, p99: 100) so that some
    value lies above it; the median and lower need one."""
    if not 0 <= q <= 100:
        raise StatsInputError(f"percentile: q={q!r} is not in [0, 100]")
    if q <= 50:
        return 1
    return math.ceil(round(100.0 / (100.0 - q), 9)) if q < 100 else math.inf


def tail_percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (numpy's linear rule) of the finite `values`, or None when they
    are fewer than `percentile_min_samples(q)`: p99 of 31 intervals would be their maximum."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0 or finite.size < percentile_min_samples(q):
        return None
    return float(np.percentile(finite, q))


def replicates_of(measurements: pd.DataFrame) -> np.ndarray:
    """Each row's replicate number (int); a table without the column, or an empty cell, is
    replicate 0."""
    if REPLICATE_COLUMN not in measurements.columns:
        return np.zeros(len(measurements), dtype=np.int64)
    values = pd.to_numeric(measurements[REPLICATE_COLUMN], errors="coerce")
    return values.fillna(0).to_numpy(dtype=np.int64)


def _numeric(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def group_order(codes: np.ndarray) -> np.ndarray:
    """Indices that put rows in group order, keeping their order within a group (stable)."""
    return np.argsort(codes, kind="stable")


class _GroupedSample:
    """The finite values of one metric in each group, sorted within their group.

    `values[offsets[g] : offsets[g] + counts[g]]` are group g's values, ascending.
    """

    def __init__(self, values: np.ndarray, codes: np.ndarray, n_groups: int, order: np.ndarray | None = None) -> None:
        """`order`: `group_order(codes)`, where several metrics share one grouping."""
        order = group_order(codes) if order is None else order
        values, codes = values[order], codes[order]  # grouped (a copy, sorted in place below)
        keep = np.isfinite(values)
        values, codes = values[keep], codes[keep]
        self.counts = np.bincount(codes, minlength=n_groups)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        sizes = np.unique(self.counts[self.counts > 1])
        if sizes.size <= SORT_BY_SIZE_LIMIT:
            # each group sorted: the groups of one size at a time, as the rows of a matrix (a
            # million trials in groups of 5: a fifth of the time of one argsort of them all)
            for size in sizes:
                index = self.offsets[self.counts == size][:, None] + np.arange(size)
                values[index] = np.sort(values[index], axis=1)
        else:  # many sizes: one sort by (group, value rank), as np.lexsort orders them
            rank = np.empty(values.size, dtype=np.int64)
            rank[np.argsort(values)] = np.arange(values.size)
            values = values[np.argsort(codes.astype(np.int64) * max(values.size, 1) + rank)]
        self.values = values

    def medians(self) -> np.ndarray:
        """Median of each group (nan for a group without values)."""
        out = np.full(self.counts.size, np.nan)
        has = self.counts > 0
        low = self.offsets[has] + (self.counts[has] - 1) // 2
        high = self.offsets[has] + self.counts[has] // 2
        out[has] = (self.values[low] + self.values[high]) / 2.0
        return out

    def describe(self, confidence: float = CONFIDENCE) -> dict[str, np.ndarray]:
        """Median, mean, std (n-1), CV, order-statistic interval of the median with its exact
        coverage, and the count of values, per group."""
        n_groups = self.counts.size
        names = ("mean", "std", "ci_low", "ci_high", "ci_coverage")
        out = {name: np.full(n_groups, np.nan) for name in names}
        out["median"] = self.medians()
        out["count"] = self.counts.copy()
        for size in np.unique(self.counts[self.counts > 0]):
            groups = np.flatnonzero(self.counts == size)
            rows = self.values[self.offsets[groups][:, None] + np.arange(size)]
            out["mean"][groups] = rows.mean(axis=1)
            if size > 1:
                out["std"][groups] = rows.std(axis=1, ddof=1)
            low, high, coverage = intervals.median_intervals_of_sorted_rows(rows, confidence)
            out["ci_low"][groups], out["ci_high"][groups], out["ci_coverage"][groups] = low, high, coverage
        with np.errstate(divide="ignore", invalid="ignore"):
            cv = out["std"] / np.abs(out["mean"])
        out["cv"] = np.where((out["mean"] != 0) & np.isfinite(out["std"]), cv, np.nan)
        return out


def _described(
    values: np.ndarray,
    codes: np.ndarray,
    replicate_codes: np.ndarray,
    replicate_group: np.ndarray,
    multi: np.ndarray,
    confidence: float,
    orders: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """`_GroupedSample.describe` of each group's trials, or, for groups with several
    replicates (`multi`), of the medians of their replicates. `orders`: the `group_order`s of
    `codes` and `replicate_codes`, shared by every metric."""
    n_groups = multi.size
    by_group, by_replicate = orders if orders is not None else (None, None)
    out = _GroupedSample(values, codes, n_groups, by_group).describe(confidence)
    if multi.any():
        replicate_medians = _GroupedSample(values, replicate_codes, replicate_group.size, by_replicate).medians()
        between = _GroupedSample(replicate_medians, replicate_group, n_groups).describe(confidence)
        out = {name: np.where(multi, between[name], out[name]) for name in out}
    return out


def _python_objects(column: pd.Series) -> list:
    """Values as Python scalars with None for missing, so the summary infers its dtypes
    from values rather than inheriting the trial table's (nullable) dtypes."""
    values = column.to_numpy(dtype=object, na_value=None)  # numpy and masked arrays: Python scalars
    if column.dtype == object:  # an object column may hold NumPy scalars
        return [value.item() if isinstance(value, np.generic) else value for value in values.tolist()]
    return values.tolist()


def _objects(values: list) -> np.ndarray:
    """A 1-D object array of `values` (strings or None), whatever their shape."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


STATISTICS = ("median", "mean", "std", "cv", "ci_low", "ci_high", "ci_coverage")


def _interval_note(n_ok: int, units: int, multi: bool, coverage: float, confidence: float) -> str | None:
    """Why a configuration's intervals are empty or short of `confidence`, else None."""
    if n_ok == 0:
        return "no successful trial: no statistic"
    kind = "replicate medians" if multi else "successful trials"
    if units < 2:
        return f"{units} {kind[:-1] if units == 1 else kind}: an interval of the median needs 2 or more"
    if np.isfinite(coverage) and coverage < confidence:
        needed = math.ceil(1 + math.log2(1 / (1 - confidence)))  # [min, max] covers 1 - 2^(1-n)
        return (
            f"[min, max] of {units} {kind}: exact coverage {100 * coverage:.4g} %, "
            f"below {100 * confidence:.4g} % (reached from {needed})"
        )
    return None


def summarise(measurements: pd.DataFrame, cv_threshold: float = 0.05, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per configuration (`CONFIG_KEYS`) of the per-trial `measurements` table.

    Columns: the keys; `CARRIED_COLUMNS` present in the input (first non-empty value);
    ``n_trials``, ``n_ok``, ``n_failed``, ``n_replicates``; for each of `HEADLINE_METRICS`
    ``<metric>_{median,mean,std,cv,ci_low,ci_high,ci_coverage}``; ``<metric>_median`` for
    each of `MEDIAN_METRICS` present; ``ci_method``, ``ci_coverage`` (the smallest of the
    headline intervals' exact coverages) and ``ci_note`` (why an interval is empty or short of
    `confidence`); ``few_trials_flag`` (``n_ok < 3``); ``cv_flag`` and ``cv_flagged_metrics``
    (a headline metric whose CV is above `cv_threshold`, or undefined although it has values).

    With one replicate (the ``replicate`` column absent or constant among a configuration's
    successful trials) the statistics are over its trials and the interval is
    ``order_statistic_trials``. With several, every headline statistic is over the
    replicates' medians (each replicate a fresh process: the variance between sessions,
    which trials of one session do not see) and the interval is
    ``order_statistic_replicate_medians``. Rows are sorted by the keys.
    """
    if not 0 < cv_threshold < 10:
        raise StatsInputError(f"cv_threshold: {cv_threshold!r} is not a coefficient of variation; use e.g. 0.05")
    require_columns(measurements, [*CONFIG_KEYS, "status", *HEADLINE_METRICS], "measurements")
    unknown_status = set(measurements["status"].dropna().unique()) - {"ok", "failed"}
    if unknown_status:
        raise StatsInputError(
            f"measurements.status: unexpected value {sorted(unknown_status)[0]!r}; allowed: 'ok', 'failed'"
        )
    carried = [column for column in CARRIED_COLUMNS if column in measurements.columns]
    medians = [column for column in MEDIAN_METRICS if column in measurements.columns]
    columns = [
        *CONFIG_KEYS,
        *carried,
        "n_trials",
        "n_ok",
        "n_failed",
        "n_replicates",
        *[f"{metric}_{name}" for metric in HEADLINE_METRICS for name in STATISTICS],
        *[f"{metric}_median" for metric in medians],
        "ci_method",
        "ci_coverage",
        "ci_note",
        "few_trials_flag",
        "cv_flag",
        "cv_flagged_metrics",
    ]

    grouped = measurements.groupby(CONFIG_KEYS, sort=True, dropna=False)
    codes = grouped.ngroup().to_numpy(dtype=np.int64)
    keys = grouped.size().index.to_frame(index=False)
    n_groups = len(keys)
    status = measurements["status"]
    ok = status.isin(["ok"]).to_numpy(dtype=bool)
    # (configuration, replicate) pairs among the successful trials
    replicates = replicates_of(measurements)[ok]
    low = replicates.min() if replicates.size else 0
    span = int(replicates.max() - low + 1) if replicates.size else 1
    # one integer per pair, ordered as the (configuration, replicate) pairs sort
    pairs, replicate_codes = np.unique(codes[ok] * span + (replicates - low), return_inverse=True)
    replicate_codes = replicate_codes.reshape(-1)
    replicate_group = pairs // span
    n_replicates = np.bincount(replicate_group, minlength=n_groups)
    multi = n_replicates >= 2

    data: dict[str, object] = {key: _python_objects(keys[key]) for key in CONFIG_KEYS}
    if carried:
        first = measurements[carried].groupby(codes, sort=True).first()
        for column in carried:
            data[column] = _python_objects(first[column])
    data["n_trials"] = np.bincount(codes, minlength=n_groups)
    data["n_ok"] = np.bincount(codes[ok], minlength=n_groups)
    failed = status.isin(["failed"]).to_numpy(dtype=bool)
    data["n_failed"] = np.bincount(codes[failed], minlength=n_groups)
    data["n_replicates"] = n_replicates
    orders = (group_order(codes[ok]), group_order(replicate_codes))  # one sort for every metric
    flagged = np.zeros((n_groups, len(HEADLINE_METRICS)), dtype=bool)
    coverages = np.full((n_groups, len(HEADLINE_METRICS)), np.nan)
    units = np.zeros(n_groups, dtype=np.int64)
    for index, metric in enumerate(HEADLINE_METRICS):
        described = _described(
            _numeric(measurements[metric])[ok], codes[ok], replicate_codes, replicate_group, multi, confidence, orders
        )
        for name in STATISTICS:
            data[f"{metric}_{name}"] = described[name]
        cv, count = described["cv"], described["count"]
        flagged[:, index] = (count > 0) & ~(np.isfinite(cv) & (cv <= cv_threshold))
        coverages[:, index] = described["ci_coverage"]
        units = np.maximum(units, count)
    for metric in medians:
        data[f"{metric}_median"] = _described(
            _numeric(measurements[metric])[ok],
            codes[ok],
            replicate_codes,
            replicate_group,
            multi,
            confidence,
            orders,
        )["median"]
    has_interval = np.isfinite(coverages).any(axis=1)
    smallest = np.where(np.isfinite(coverages), coverages, np.inf).min(axis=1)
    row_coverage = np.where(has_interval, smallest, np.nan)
    methods = np.where(multi, intervals.MEDIAN_REPLICATES, intervals.MEDIAN_TRIALS).astype(object)
    data["ci_method"] = np.where(has_interval, methods, None)
    data["ci_coverage"] = row_coverage
    # a note depends on (no success, units, multi, coverage): written once per distinct case
    cases = np.stack([data["n_ok"] == 0, units, multi, row_coverage.view(np.int64)], axis=1).astype(np.int64)
    _, first, case_of_row = np.unique(cases, axis=0, return_index=True, return_inverse=True)
    notes = [
        _interval_note(int(data["n_ok"][i]), int(units[i]), bool(multi[i]), float(row_coverage[i]), confidence)
        for i in first.tolist()
    ]
    data["ci_note"] = _objects(notes)[case_of_row.reshape(-1)]
    data["few_trials_flag"] = data["n_ok"] < FEW_TRIALS
    data["cv_flag"] = flagged.any(axis=1)
    # the flagged metrics' names, once per distinct pattern of flags
    patterns, pattern_of_row = np.unique(flagged, axis=0, return_inverse=True)
    names = [",".join(m for m, hit in zip(HEADLINE_METRICS, row, strict=True) if hit) for row in patterns.tolist()]
    data["cv_flagged_metrics"] = _objects(names)[pattern_of_row.reshape(-1)]

    summary = pd.DataFrame(data, columns=columns) if n_groups else pd.DataFrame(columns=columns)
    integers = ("n_trials", "n_ok", "n_failed", "n_replicates", "batch_size", "prompt_tokens", "output_tokens")
    for column in integers:
        summary[column] = summary[column].astype("int64")
    for column in ("few_trials_flag", "cv_flag"):
        summary[column] = summary[column].astype(bool)
    return summary
