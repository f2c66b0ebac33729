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


def bootstrap_interval(
    values: np.ndarray,
    statistic: Callable[..., np.ndarray] = np.median,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of `statistic` over the finite entries of `values`.

    `statistic` must accept ``axis=1``. Returns (nan, nan) with no finite value; a single
    value gives a zero-width interval at that value (the bootstrap cannot see spread it
    never observed, which the CV and ``n_ok`` columns make plain).
    """
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (np.nan, np.nan)
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


def _describe(values: np.ndarray) -> dict[str, float]:
    """Median, mean, std (n-1), CV and bootstrap interval of the finite entries."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return dict.fromkeys(("median", "mean", "std", "cv", "ci_low", "ci_high"), np.nan)
    mean = float(np.mean(finite))
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else np.nan
    low, high = bootstrap_interval(finite)
    return {
        "median": float(np.median(finite)),
        "mean": mean,
        "std": std,
        "cv": std / abs(mean) if mean != 0 and np.isfinite(std) else np.nan,
        "ci_low": low,
        "ci_high": high,
    }


def _numeric(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def summarise(measurements: pd.DataFrame, cv_threshold: float = 0.05) -> pd.DataFrame:
    """One row per configuration (`CONFIG_KEYS`) of the per-trial `measurements` table.

    Columns: the keys; `CARRIED_COLUMNS` present in the input (first non-empty value);
    ``n_trials``, ``n_ok``, ``n_failed``; for each of `HEADLINE_METRICS`
    ``<metric>_{median,mean,std,cv,ci_low,ci_high}`` (interval: percentile bootstrap of the
    median, 95%); ``<metric>_median`` for each of `MEDIAN_METRICS` present; ``cv_flag``
    (any headline CV above `cv_threshold`) and ``cv_flagged_metrics`` naming them.
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

    rows: list[dict] = []
    for key, group in measurements.groupby(CONFIG_KEYS, sort=True, dropna=False):
        row: dict = dict(zip(CONFIG_KEYS, key, strict=True))
        for column in carried:
            present = group[column].dropna()
            row[column] = present.iloc[0] if len(present) else None
            if isinstance(row[column], np.generic):
                row[column] = row[column].item()
        status = group["status"].astype(object)
        ok = group[(status == "ok").to_numpy(dtype=bool)]
        row["n_trials"] = len(group)
        row["n_ok"] = len(ok)
        row["n_failed"] = int((status == "failed").sum())
        flagged: list[str] = []
        for metric in HEADLINE_METRICS:
            described = _describe(_numeric(ok[metric]))
            for name, value in described.items():
                row[f"{metric}_{name}"] = value
            if np.isfinite(described["cv"]) and described["cv"] > cv_threshold:
                flagged.append(metric)
        for metric in medians:
            values = _numeric(ok[metric])
            values = values[np.isfinite(values)]
            row[f"{metric}_median"] = float(np.median(values)) if values.size else np.nan
        row["cv_flag"] = bool(flagged)
        row["cv_flagged_metrics"] = ",".join(flagged)
        rows.append(row)

    columns = [
        *CONFIG_KEYS,
        *carried,
        "n_trials",
        "n_ok",
        "n_failed",
        *[
            f"{metric}_{name}"
            for metric in HEADLINE_METRICS
            for name in ("median", "mean", "std", "cv", "ci_low", "ci_high")
        ],
        *[f"{metric}_median" for metric in medians],
        "cv_flag",
        "cv_flagged_metrics",
    ]
    summary = pd.DataFrame(rows, columns=columns)
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
