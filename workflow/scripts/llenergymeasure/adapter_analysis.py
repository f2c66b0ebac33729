"""What a LoRA adapter costs: unmerged and merged against the base model, with intervals.

The per-trial table holds base rows (``adapter == 'none'``) and, for each adapter job, rows
of the same variant with the adapter unmerged and merged (lora.py). Here:

* `with_adapter_columns` / `base_rows`: tables written before adapters existed get the base
  row's adapter columns; the study's other analyses and figures see base rows only, so an
  adapter never enters a ranking of implementation choices by accident;
* `summarise`: stats.summarise once per (adapter, merged) state, so no state's trials mix;
* `adapter_overhead`: per platform, backend, variant, adapter and workload, the ratio of
  medians (the order-statistic interval of intervals.ratio_of_medians, with its coverage
  bound in ``ci_coverage``) of unmerged over base,
  merged over base and unmerged over merged, in tokens/s and in J/token. J/token is left
  empty, with the reason, where the energy was estimated rather than read from a sensor.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import intervals, stats
from .lora import KEY_COLUMNS, NO_ADAPTER

COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("unmerged/base", "unmerged", "base"),
    ("merged/base", "merged", "base"),
    ("unmerged/merged", "unmerged", "merged"),
)
METRICS: tuple[str, ...] = ("tokens_per_s", "energy_j_per_output_token")
NO_SENSOR = "energy estimated, not read from a sensor: no J/token ratio"
NO_ENERGY = "no energy reading"
SCOPE = ["platform_id", "model", "quant", "backend", *stats.WORKLOAD_KEYS]
COLUMNS = [
    *SCOPE,
    "adapter",
    "adapter_rank",
    "comparison",
    "metric",
    "ratio",
    "ci_low",
    "ci_high",
    "ci_coverage",
    "n_numerator",
    "n_denominator",
    "adapter_merge_s",
    "energy_source",
    "note",
]
CARRIED = [
    "adapter_source",
    "adapter_rank",
    "adapter_alpha",
    "adapter_target_modules",
    "adapter_bytes",
    "adapter_sha256",
    "adapter_load_s",
    "adapter_merge_s",
]


def with_adapter_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with adapter and adapter_merged filled as on base rows where absent or empty."""
    adapter = frame["adapter"] if "adapter" in frame else pd.Series(pd.NA, index=frame.index, dtype="string")
    merged = (
        frame["adapter_merged"] if "adapter_merged" in frame else pd.Series(pd.NA, index=frame.index, dtype="boolean")
    )
    # assign, not copy: the other columns are shared until written (copy-on-write)
    return frame.assign(
        adapter=adapter.astype("string").fillna(NO_ADAPTER), adapter_merged=merged.astype("boolean").fillna(False)
    )


def base_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The base model's rows (no adapter), adapter columns filled."""
    filled = with_adapter_columns(frame)
    return filled[(filled["adapter"] == NO_ADAPTER).to_numpy(dtype=bool)].reset_index(drop=True)


def summarise(measurements: pd.DataFrame, cv_threshold: float = 0.05) -> pd.DataFrame:
    """stats.summarise per adapter state; the adapter keys and descriptions join the keys."""
    filled = with_adapter_columns(measurements)
    parts = []
    states = filled.groupby(list(KEY_COLUMNS), sort=True)
    # one state (a study without adapters): the table itself, not a copy of it
    groups = [(next(iter(states.groups)), filled)] if states.ngroups == 1 else states
    for (adapter, merged), group in groups:
        part = stats.summarise(group.reset_index(drop=True), cv_threshold=cv_threshold)
        part.insert(len(stats.CONFIG_KEYS), "adapter", adapter)
        part.insert(len(stats.CONFIG_KEYS) + 1, "adapter_merged", bool(merged))
        carried = [c for c in CARRIED if c in group and group[c].notna().any()]
        for column in carried:
            part[column] = group[column].dropna().iloc[0]
        parts.append(part)
    summary = pd.concat(parts, ignore_index=True)
    summary["adapter"] = summary["adapter"].astype("string")
    summary["adapter_merged"] = summary["adapter_merged"].astype("boolean")
    return summary.sort_values([*stats.CONFIG_KEYS, *KEY_COLUMNS], kind="stable").reset_index(drop=True)


def _state(row: pd.Series) -> str:
    if row["adapter"] == NO_ADAPTER:
        return "base"
    return "merged" if bool(row["adapter_merged"]) else "unmerged"


def _values(trials: pd.DataFrame, metric: str) -> np.ndarray:
    return pd.to_numeric(trials[metric], errors="coerce").to_numpy(float, na_value=np.nan)


def adapter_overhead(measurements: pd.DataFrame) -> pd.DataFrame:
    """Ratios of medians (with order-statistic intervals and their coverage) of each adapter's states to each other
    and to the base model, per platform, variant, backend and workload (see module doc)."""
    if "adapter" not in measurements or not len(measurements):
        return pd.DataFrame(columns=COLUMNS)
    table = with_adapter_columns(measurements)
    ok = table[(table["status"].astype(object) == "ok").to_numpy(dtype=bool)].copy()
    ok["state"] = ok.apply(_state, axis=1) if len(ok) else pd.Series(dtype=object)
    rows = []
    for scope, group in ok.groupby(SCOPE, sort=True):
        base = group[group["state"] == "base"]
        for adapter in sorted(set(group["adapter"]) - {NO_ADAPTER}):
            trials = {
                "base": base,
                **{s: group[(group["adapter"] == adapter) & (group["state"] == s)] for s in ("unmerged", "merged")},
            }
            first = trials["unmerged"] if len(trials["unmerged"]) else trials["merged"]
            merge_s = pd.to_numeric(trials["merged"].get("adapter_merge_s"), errors="coerce").median()
            for comparison, top, bottom in COMPARISONS:
                for metric in METRICS:
                    numerator, denominator = trials[top], trials[bottom]
                    ratio = low = high = coverage = np.nan
                    note = None
                    sources = sorted(
                        set(numerator["energy_source"].dropna()) | set(denominator["energy_source"].dropna())
                    )
                    estimated = pd.concat([numerator["energy_is_estimate"], denominator["energy_is_estimate"]])
                    if metric.startswith("energy") and estimated.astype("boolean").fillna(False).any():
                        note = NO_SENSOR
                    elif len(numerator) and len(denominator):
                        ratio, low, high, coverage = intervals.ratio_of_medians(
                            _values(numerator, metric), _values(denominator, metric)
                        )
                        if not np.isfinite(ratio):
                            note = NO_ENERGY if metric.startswith("energy") else "no finite values"
                    else:
                        note = f"no {bottom if not len(denominator) else top} trials measured"
                    rows.append(
                        {
                            **dict(zip(SCOPE, scope, strict=True)),
                            "adapter": adapter,
                            "adapter_rank": first["adapter_rank"].dropna().iloc[0] if len(first) else pd.NA,
                            "comparison": comparison,
                            "metric": metric,
                            "ratio": ratio,
                            "ci_low": low,
                            "ci_high": high,
                            "ci_coverage": coverage,
                            "n_numerator": len(numerator),
                            "n_denominator": len(denominator),
                            "adapter_merge_s": merge_s,
                            "energy_source": ",".join(sources) or None,
                            "note": note,
                        }
                    )
    return pd.DataFrame(rows, columns=COLUMNS)
