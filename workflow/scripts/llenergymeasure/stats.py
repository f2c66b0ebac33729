"""Per-configuration summary statistics and the bootstrap machinery behind every interval.

`summarise(measurements)` turns the per-trial table (one row per trial, see
docs/ARCHITECTURE.md, "Rows") into one row per configuration: median, mean, standard
deviation, coefficient of variation and a percentile-bootstrap 95% interval of the median
for the headline metrics, medians for the secondary ones, trial counts and a flag when the
spread is too large to trust a single number. Only rows with ``status == "ok"`` enter a
statistic; a configuration whose trials all failed still gets a row, with ``n_ok = 0`` and
empty statistics, so a sweep's failures stay visible.

Every bootstrap here is vectorised numpy with a fixed seed, so the same table always gives
the same intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

# What identifies one measured configuration.
CONFIG_KEYS: list[str] = [
    "platform_id",
    "model",
    "quant",
    "backend",
    "batch_size",
    "prompt_tokens",
    "output_tokens",
]
# The implementation choice (what gets ranked) and the workload it ran (what must match).
CHOICE_KEYS: list[str] = ["model", "quant", "backend"]
WORKLOAD_KEYS: list[str] = ["batch_size", "prompt_tokens", "output_tokens"]

# Metrics summarised in full: median, mean, std, CV and bootstrap interval.
HEADLINE_METRICS: list[str] = ["energy_j_per_output_token", "tokens_per_s", "latency_s"]
# Metrics summarised by their median only (those absent from the table are skipped).
MEDIAN_METRICS: list[str] = [
    "ttft_s",
    "tpot_s",
    "energy_j",
    "energy_net_j",
    "energy_uncertainty_j",
    "energy_prefill_j",
    "energy_decode_j",
    "peak_memory_bytes",
    "mfu_prefill",
    "mbu_decode",
]
# Descriptive columns constant within a configuration: the first non-empty value is kept.
CARRIED_COLUMNS: list[str] = [
    "dtype",
    "quant_method",
    "weight_bits",
    "compute_dtype",
    "weights",
    "perplexity",
    "weight_bytes_disk",
    "weight_bytes_memory",
    "kernel_path",
    "device",
    "device_name",
    "energy_source",
    "energy_is_estimate",
    "model_family",
    "backend_version",
    "flops_prefill",
    "flops_decode",
    "flops_total",
    "flops_per_output_token",
    "flops_attention",
    "flops_attention_causal",
    "flops_lm_head",
    "flops_2n_reference",
    "flops_method",
    "flops_confidence",
    "int_ops_total",
    "config_hash",
    "git_commit",
]

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20240611
CONFIDENCE = 0.95


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


def _median_interval_of_sorted_rows(
    sorted_rows: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
    chunk_elements: int = 4_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of the median of each row of `sorted_rows` (g, n).

    Every row must be sorted ascending and finite. Resamples are drawn from the sorted
    values with ``default_rng(seed).integers(0, n, (resamples, n))``, the same index draws
    for every row. Because a row is sorted, the median of resample b is the mean of the
    row's values at the middle positions of b's sorted indices, so no resample is ever
    materialised; with odd n even the order of the resample medians is known without
    looking at the values. Equal to ``np.percentile(np.median(row[index], axis=1), ...)``
    (the generic path of `bootstrap_interval`) up to rounding.
    """
    groups, n = sorted_rows.shape
    tail = (1.0 - confidence) / 2.0 * 100.0
    empty = np.empty(0, dtype=float)
    if groups == 0:
        return empty, empty
    index = np.sort(np.random.default_rng(seed).integers(0, n, size=(resamples, n)), axis=1)
    lower_middle, upper_middle = index[:, (n - 1) // 2], index[:, n // 2]
    # np.percentile's "linear" rule: position q * (resamples - 1) between two order statistics
    positions = (resamples - 1) * (np.array([tail, 100.0 - tail]) / 100.0)
    below = np.floor(positions).astype(int)
    above = np.minimum(below + 1, resamples - 1)
    weight = positions - below
    if n % 2:  # the resample medians are the values at these positions, in this order
        order = np.sort(lower_middle)
        at_below, at_above = sorted_rows[:, order[below]], sorted_rows[:, order[above]]
    else:
        at_below = np.empty((groups, 2))
        at_above = np.empty((groups, 2))
        kth = np.unique(np.concatenate([below, above]))
        step = max(1, chunk_elements // resamples)
        for start in range(0, groups, step):
            rows = sorted_rows[start : start + step]
            medians = (rows[:, lower_middle] + rows[:, upper_middle]) / 2.0
            medians.partition(kth, axis=1)
            at_below[start : start + step] = medians[:, below]
            at_above[start : start + step] = medians[:, above]
    # numpy's lerp, including its symmetric form for weights of one half and above
    interval = np.where(
        weight < 0.5,
        at_below + (at_above - at_below) * weight,
        at_above - (at_above - at_below) * (1.0 - weight),
    )
    return interval[:, 0], interval[:, 1]


def bootstrap_interval(
    values: np.ndarray,
    statistic: Callable[..., np.ndarray] = np.median,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of `statistic` over the finite entries of `values`.

    `statistic` must accept ``axis=1``. Resamples are drawn (fixed seed) from the sorted
    finite values, which leaves the bootstrap distribution of any statistic that ignores
    order unchanged and lets the median take the fast path `summarise` uses for every
    configuration at once. Returns (nan, nan) with no finite value; a single value gives a
    zero-width interval at that value (the bootstrap cannot see spread it never observed,
    which the CV and ``n_ok`` columns make plain).
    """
    finite = np.asarray(values, dtype=float)
    finite = np.sort(finite[np.isfinite(finite)])
    if finite.size == 0:
        return (np.nan, np.nan)
    if statistic is np.median:
        low, high = _median_interval_of_sorted_rows(finite[None, :], resamples, seed, confidence)
        return (float(low[0]), float(high[0]))
    rng = np.random.default_rng(seed)
    draws = finite[rng.integers(0, finite.size, size=(resamples, finite.size))]
    estimates = statistic(draws, axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(estimates, [tail, 100.0 - tail])
    return (float(low), float(high))


def bootstrap_ratio_of_medians(
    numerator: np.ndarray,
    denominator: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """median(numerator) / median(denominator) with a bootstrap interval.

    The two samples are independent trials, so each is resampled on its own.
    Returns (ratio, low, high); all nan when either side has no finite value.
    """
    top = np.asarray(numerator, dtype=float)
    bottom = np.asarray(denominator, dtype=float)
    top, bottom = top[np.isfinite(top)], bottom[np.isfinite(bottom)]
    if top.size == 0 or bottom.size == 0 or np.median(bottom) == 0:
        return (np.nan, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    top_draws = np.median(top[rng.integers(0, top.size, size=(resamples, top.size))], axis=1)
    bottom_draws = np.median(
        bottom[rng.integers(0, bottom.size, size=(resamples, bottom.size))], axis=1
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = top_draws / bottom_draws
    ratios = ratios[np.isfinite(ratios)]
    ratio = float(np.median(top) / np.median(bottom))
    if ratios.size == 0:
        return (ratio, np.nan, np.nan)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(ratios, [tail, 100.0 - tail])
    return (ratio, float(low), float(high))


def _numeric(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


class _GroupedSample:
    """The finite values of one metric in each group, sorted within their group.

    `values[offsets[g] : offsets[g] + counts[g]]` are group g's values, ascending.
    """

    def __init__(self, values: np.ndarray, codes: np.ndarray, n_groups: int) -> None:
        keep = np.isfinite(values)
        values, codes = values[keep], codes[keep]
        order = np.lexsort((values, codes))
        self.values = values[order]
        self.counts = np.bincount(codes, minlength=n_groups)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]])

    def medians(self) -> np.ndarray:
        """Median of each group (nan for a group without values)."""
        out = np.full(self.counts.size, np.nan)
        has = self.counts > 0
        low = self.offsets[has] + (self.counts[has] - 1) // 2
        high = self.offsets[has] + self.counts[has] // 2
        out[has] = (self.values[low] + self.values[high]) / 2.0
        return out

    def describe(self) -> dict[str, np.ndarray]:
        """Median, mean, std (n-1), CV and bootstrap interval of the median, per group."""
        n_groups = self.counts.size
        out = {name: np.full(n_groups, np.nan) for name in ("mean", "std", "ci_low", "ci_high")}
        out["median"] = self.medians()
        for size in np.unique(self.counts[self.counts > 0]):
            groups = np.flatnonzero(self.counts == size)
            rows = self.values[self.offsets[groups][:, None] + np.arange(size)]
            out["mean"][groups] = rows.mean(axis=1)
            if size > 1:
                out["std"][groups] = rows.std(axis=1, ddof=1)
            out["ci_low"][groups], out["ci_high"][groups] = _median_interval_of_sorted_rows(rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            cv = out["std"] / np.abs(out["mean"])
        out["cv"] = np.where((out["mean"] != 0) & np.isfinite(out["std"]), cv, np.nan)
        return {name: out[name] for name in ("median", "mean", "std", "cv", "ci_low", "ci_high")}


def _python_objects(column: pd.Series) -> list:
    """Values as Python scalars with None for missing, so the summary infers its dtypes
    from values rather than inheriting the trial table's (nullable) dtypes."""
    values = column.astype(object)
    return [
        value.item() if isinstance(value, np.generic) else value
        for value in values.where(values.notna(), None).tolist()
    ]


def summarise(measurements: pd.DataFrame, cv_threshold: float = 0.05) -> pd.DataFrame:
    """One row per configuration (`CONFIG_KEYS`) of the per-trial `measurements` table.

    Columns: the keys; `CARRIED_COLUMNS` present in the input (first non-empty value);
    ``n_trials``, ``n_ok``, ``n_failed``; for each of `HEADLINE_METRICS`
    ``<metric>_{median,mean,std,cv,ci_low,ci_high}`` (interval: percentile bootstrap of the
    median, 95%); ``<metric>_median`` for each of `MEDIAN_METRICS` present; ``cv_flag``
    (any headline CV above `cv_threshold`) and ``cv_flagged_metrics`` naming them.
    Rows are sorted by the keys. Every statistic is computed for all configurations at once.
    """
    if not 0 < cv_threshold < 10:
        raise StatsInputError(
            f"cv_threshold: {cv_threshold!r} is not a coefficient of variation; use e.g. 0.05"
        )
    require_columns(measurements, [*CONFIG_KEYS, "status", *HEADLINE_METRICS], "measurements")
    unknown_status = set(measurements["status"].dropna().unique()) - {"ok", "failed"}
    if unknown_status:
        raise StatsInputError(
            f"measurements.status: unexpected value {sorted(unknown_status)[0]!r}; "
            f"allowed: 'ok', 'failed'"
        )
    carried = [column for column in CARRIED_COLUMNS if column in measurements.columns]
    medians = [column for column in MEDIAN_METRICS if column in measurements.columns]
    statistics = ("median", "mean", "std", "cv", "ci_low", "ci_high")
    columns = [
        *CONFIG_KEYS,
        *carried,
        "n_trials",
        "n_ok",
        "n_failed",
        *[f"{metric}_{name}" for metric in HEADLINE_METRICS for name in statistics],
        *[f"{metric}_median" for metric in medians],
        "cv_flag",
        "cv_flagged_metrics",
    ]

    grouped = measurements.groupby(CONFIG_KEYS, sort=True, dropna=False)
    codes = grouped.ngroup().to_numpy(dtype=np.int64)
    keys = grouped.size().index.to_frame(index=False)
    n_groups = len(keys)
    status = measurements["status"]
    ok = status.isin(["ok"]).to_numpy(dtype=bool)

    data: dict[str, object] = {key: _python_objects(keys[key]) for key in CONFIG_KEYS}
    if carried:
        first = measurements[carried].groupby(codes, sort=True).first()
        for column in carried:
            data[column] = _python_objects(first[column])
    data["n_trials"] = np.bincount(codes, minlength=n_groups)
    data["n_ok"] = np.bincount(codes[ok], minlength=n_groups)
    failed = status.isin(["failed"]).to_numpy(dtype=bool)
    data["n_failed"] = np.bincount(codes[failed], minlength=n_groups)
    flagged = np.zeros((n_groups, len(HEADLINE_METRICS)), dtype=bool)
    for index, metric in enumerate(HEADLINE_METRICS):
        sample = _GroupedSample(_numeric(measurements[metric])[ok], codes[ok], n_groups)
        described = sample.describe()
        for name in statistics:
            data[f"{metric}_{name}"] = described[name]
        cv = described["cv"]
        flagged[:, index] = np.isfinite(cv) & (cv > cv_threshold)
    for metric in medians:
        sample = _GroupedSample(_numeric(measurements[metric])[ok], codes[ok], n_groups)
        data[f"{metric}_median"] = sample.medians()
    data["cv_flag"] = flagged.any(axis=1)
    data["cv_flagged_metrics"] = [
        ",".join(metric for metric, hit in zip(HEADLINE_METRICS, row) if hit)
        for row in flagged.tolist()
    ]

    summary = pd.DataFrame(data, columns=columns) if n_groups else pd.DataFrame(columns=columns)
    for column in ("n_trials", "n_ok", "n_failed", "batch_size", "prompt_tokens", "output_tokens"):
        summary[column] = summary[column].astype("int64")
    summary["cv_flag"] = summary["cv_flag"].astype(bool)
    return summary


def _row_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of two (resamples, n) arrays (average ranks for ties)."""
    from scipy.stats import rankdata

    rank_x = rankdata(x, axis=1)
    rank_y = rankdata(y, axis=1)
    rank_x -= rank_x.mean(axis=1, keepdims=True)
    rank_y -= rank_y.mean(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (rank_x * rank_y).sum(axis=1) / np.sqrt(
            (rank_x**2).sum(axis=1) * (rank_y**2).sum(axis=1)
        )


def _row_kendall_tau_b(x: np.ndarray, y: np.ndarray, chunk_elements: int = 4_000_000) -> np.ndarray:
    """Kendall's tau-b of each row pair of two (resamples, n) arrays, in memory-bounded chunks.

    With s = sign of every ordered pair's difference, tau-b = sum(sx*sy) / sqrt(sum(sx^2) sum(sy^2)),
    which counts ties in either variable exactly as scipy's tau-b does.
    """
    resamples, n = x.shape
    step = max(1, chunk_elements // max(1, n * n))
    out = np.empty(resamples)
    for start in range(0, resamples, step):
        xs, ys = x[start : start + step], y[start : start + step]
        sign_x = np.sign(xs[:, :, None] - xs[:, None, :])
        sign_y = np.sign(ys[:, :, None] - ys[:, None, :])
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start : start + step] = (sign_x * sign_y).sum(axis=(1, 2)) / np.sqrt(
                (sign_x**2).sum(axis=(1, 2)) * (sign_y**2).sum(axis=(1, 2))
            )
    return out


def rank_correlations(
    x: np.ndarray,
    y: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> dict[str, float]:
    """Spearman's rho and Kendall's tau-b of paired samples with bootstrap intervals.

    Pairs are resampled together; resamples in which either side is constant (the
    correlation is undefined) are left out of the interval. Fewer than three pairs give nan.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keys = ("spearman_rho", "spearman_ci_low", "spearman_ci_high",
            "kendall_tau", "kendall_ci_low", "kendall_ci_high")
    if x.shape != y.shape or x.ndim != 1:
        raise StatsInputError(f"rank_correlations: x{x.shape} and y{y.shape} must be equal 1-D arrays")
    if x.size < 3:
        return dict.fromkeys(keys, np.nan)
    rho = float(_row_spearman(x[None, :], y[None, :])[0])
    tau = float(_row_kendall_tau_b(x[None, :], y[None, :])[0])
    rng = np.random.default_rng(seed)
    index = rng.integers(0, x.size, size=(resamples, x.size))
    tail = (1.0 - confidence) / 2.0 * 100.0

    def interval(draws: np.ndarray) -> tuple[float, float]:
        draws = draws[np.isfinite(draws)]
        if draws.size == 0:
            return (np.nan, np.nan)
        low, high = np.percentile(draws, [tail, 100.0 - tail])
        return (float(low), float(high))

    rho_low, rho_high = interval(_row_spearman(x[index], y[index]))
    tau_low, tau_high = interval(_row_kendall_tau_b(x[index], y[index]))
    return dict(zip(keys, (rho, rho_low, rho_high, tau, tau_low, tau_high), strict=True))
