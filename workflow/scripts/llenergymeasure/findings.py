"""The study's findings as one table the pipeline writes: no number typed into prose.

Each row is one finding in one scope (a platform, an engine pair, a family, a variant) with
its value, an interval and what kind of interval it is, the count behind it and, where a
test was made, its p-value. Kinds of interval, never mixed up:

* ``bonett_wright_95`` / ``clopper_pearson_95``: a 95 % confidence interval (Spearman's rho,
  `intervals.spearman_interval`; a binomial rate, exact Clopper-Pearson, which treats the
  ranked configurations as independent);
* ``order_statistic (coverage c)``: the interval of a median or ratio of medians, with its
  exact coverage (`intervals.py`);
* ``range over <units>``: the smallest and largest of the per-workload (or per-configuration)
  values a summary row condenses; a spread, not a confidence interval.

The findings (`build`): the FLOPs disagreement rate and the rank-shift test against
measurement noise (`rank_tests`), compound-measure stability, cross-platform and cross-engine
rank correlation and Pareto F1, the 2N formula's error on the study's own configurations
(the rows' ``flops_2n_reference`` against ``flops_total``), the quantisation effect per engine
(latency, and sensor energy where there is any, over the engine's unquantised variant) and
fidelity per variant. Written as LaTeX (`tables`) and Markdown (`write_markdown`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from . import intervals
from .energy_analysis import baseline_quant, unit_values
from .latex import number, with_interval
from .ranking import frame, usable
from .stats import CONFIG_KEYS

COLUMNS = ["finding", "scope", "metric", "value", "ci_low", "ci_high", "interval", "n", "p_value", "source", "note"]
CLOPPER_PEARSON = "clopper_pearson_95"
BONETT_WRIGHT = "bonett_wright_95"
QUANTISATION_METRICS = ("latency_s", "energy_j_per_output_token")


def clopper_pearson(k: int, n: int, confidence: float = intervals.CONFIDENCE) -> tuple[float, float]:
    """Exact binomial interval of k successes in n (nan for n = 0)."""
    if n == 0:
        return np.nan, np.nan
    ci = scipy_stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def _row(
    finding: str,
    scope: str,
    metric: str | None,
    value: float,
    low: float = np.nan,
    high: float = np.nan,
    interval: str | None = None,
    n: int | None = None,
    p_value: float = np.nan,
    source: str = "",
    note: str | None = None,
) -> dict:
    return {
        "finding": finding,
        "scope": scope,
        "metric": metric,
        "value": float(value),
        "ci_low": float(low),
        "ci_high": float(high),
        "interval": interval if np.isfinite(low) else None,
        "n": n,
        "p_value": float(p_value),
        "source": source,
        "note": note,
    }


def _spread(
    values: pd.Series, finding: str, scope: str, metric: str | None, units: str, source: str, note: str | None = None
) -> dict | None:
    """Median of per-unit values with their range (or the single value)."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return None
    interval = f"range over {len(values)} {units}" if len(values) > 1 else None
    low, high = (values.min(), values.max()) if len(values) > 1 else (np.nan, np.nan)
    return _row(finding, scope, metric, values.median(), low, high, interval, len(values), source=source, note=note)


def flops_findings(results: Mapping[str, pd.DataFrame]) -> list[dict]:
    """Disagreement rate (Clopper-Pearson) and the rank-shift test, per platform and metric."""
    rows = []
    agreement = results["flops_rank_agreement"]
    for (platform, metric), group in agreement.groupby(["platform_id", "metric"], sort=True):
        k, n = int(group["n_disagreements"].sum()), int(group["n_configs"].sum())
        if n == 0:
            continue
        low, high = clopper_pearson(k, n)
        rows.append(
            _row(
                "FLOPs disagreement rate",
                str(platform),
                metric,
                k / n,
                low,
                high,
                CLOPPER_PEARSON,
                n,
                source="flops_rank_agreement",
                note=f"{k} of {n} (configuration, workload) rankings two or more positions outside their FLOPs level",
            )
        )
    for _, test in results["rank_difference_tests"].iterrows():
        if not np.isfinite(float(test["effect_size"])):
            continue
        rows.append(
            _row(
                "FLOPs rank shift vs trial-to-trial shift (Cliff's delta)",
                str(test["platform_id"]),
                test["metric"],
                test["effect_size"],
                n=int(test["n_configs"]),
                p_value=test["p_value"],
                source="rank_difference_tests",
                note=f"one-sided Mann-Whitney U; Cohen's d "
                f"{float(test['cohens_d']):.3g}; {int(test['n_trial_shifts'])} trial shifts",
            )
        )
    return rows


def stability_findings(results: Mapping[str, pd.DataFrame]) -> list[dict]:
    """Mean trial-to-trial Spearman rho of the compound ranking, per platform."""
    table = results["compound_stability"]
    rows = []
    for platform, group in table.groupby("platform_id", sort=True):
        per_workload = group.groupby(["batch_size", "prompt_tokens", "output_tokens"])["group_trial_rho_mean"].first()
        row = _spread(
            per_workload,
            "Compound ranking stability (trial-to-trial rho)",
            str(platform),
            "compound",
            "workloads",
            "compound_stability",
        )
        rows += [row] if row else []
    return rows


def transfer_findings(results: Mapping[str, pd.DataFrame]) -> list[dict]:
    """Cross-platform and cross-engine Spearman rho (and engine Pareto F1)."""
    rows = []
    specs = [
        ("ranking_transfer", ["platform_a", "platform_b"], "Cross-platform rank correlation (Spearman)"),
        ("engine_transfer", ["platform_id", "backend_a", "backend_b"], "Cross-engine rank correlation (Spearman)"),
    ]
    for name, keys, finding in specs:
        table = results[name]
        for key, group in table.groupby([*keys, "metric"], sort=True):
            *scope, metric = key
            group = group[np.isfinite(group["spearman_rho"].astype(float))]
            if group.empty:
                continue
            n_items = "n_items" if "n_items" in group else "n_configs"
            if len(group) == 1:
                r = group.iloc[0]
                rows.append(
                    _row(
                        finding,
                        " / ".join(map(str, scope)),
                        metric,
                        r["spearman_rho"],
                        r["spearman_ci_low"],
                        r["spearman_ci_high"],
                        BONETT_WRIGHT,
                        int(r[n_items]),
                        source=name,
                    )
                )
                continue
            bw = group[np.isfinite(group["spearman_ci_low"].astype(float))]
            note = (
                f"per-workload Bonett-Wright intervals in {name}; narrowest "
                f"[{bw['spearman_ci_low'].max():.2f}, {bw['spearman_ci_high'].min():.2f}]"
                if len(bw)
                else f"fewer than {intervals.MIN_CORRELATION_PAIRS} items per workload: no interval"
            )
            note += f"; {int(group[n_items].min())}-{int(group[n_items].max())} items per workload"
            rows.append(
                _spread(group["spearman_rho"], finding, " / ".join(map(str, scope)), metric, "workloads", name, note)
            )
    for key, group in results["engine_pareto_transfer"].groupby(
        ["platform_id", "backend_a", "backend_b", "efficiency_metric"], sort=True
    ):
        *scope, metric = key
        row = _spread(
            group["f1"],
            "Cross-engine Pareto F1 (fidelity vs cost)",
            " / ".join(map(str, scope)),
            metric,
            "workloads",
            "engine_pareto_transfer",
        )
        rows += [row] if row else []
    return rows


def two_n_findings(summary: pd.DataFrame, results: Mapping[str, pd.DataFrame]) -> list[dict]:
    """(2N - exact) / exact per family over the study's configurations (else the sweep)."""
    rows = []
    table = usable(summary)
    if {"flops_2n_reference", "flops_total"} <= set(table.columns) and len(table):
        exact = pd.to_numeric(table["flops_total"], errors="coerce")
        error = (pd.to_numeric(table["flops_2n_reference"], errors="coerce") - exact) / exact
        family = table["model_family"] if "model_family" in table else table["model"]
        per = pd.DataFrame(
            {
                "family": family.astype(str),
                "model": table["model"],
                "backend": table["backend"],
                "error": error,
                "batch": table["batch_size"],
                "prompt": table["prompt_tokens"],
            }
        )
        # variants share their FLOPs count; engines need not (pytorch-compiled's static cache
        # attends over its whole length), so one count per model, engine and workload
        per = per.drop_duplicates(["model", "backend", "batch", "prompt"])
        for name, group in per.groupby("family", sort=True):
            row = _spread(
                group["error"],
                "2N formula relative error",
                name,
                "flops_total",
                "model-engine workloads",
                "summary (flops_2n_reference vs flops_total)",
            )
            rows += [row] if row else []
        return rows
    for name, group in results["two_n_error"].groupby("family", sort=True):
        row = _spread(
            group["relative_error"], "2N formula relative error", name, "flops_total", "prompt lengths", "two_n_error"
        )
        rows += [row] if row else []
    return rows


def quantisation_findings(measurements: pd.DataFrame, summary: pd.DataFrame) -> list[dict]:
    """Per engine and variant: the median over models and workloads of the metric's ratio to
    the engine's unquantised variant (`energy_analysis.baseline_quant`), with the range; a
    single configuration keeps its order-statistic ratio interval."""
    configs = usable(summary)
    keys = {tuple(row[k] for k in CONFIG_KEYS) for _, row in configs.iterrows()}
    rows = []
    for metric in QUANTISATION_METRICS:
        if metric not in measurements.columns:
            continue
        units = unit_values(measurements, metric)
        ratios: dict[tuple[str, str, str], list[tuple[float, float, float, float]]] = {}
        for _, config in configs.iterrows():
            base = baseline_quant(keys, config)
            key = tuple(config[k] for k in CONFIG_KEYS)
            base_key = tuple(base if k == "quant" else config[k] for k in CONFIG_KEYS)
            if base is None or base == config["quant"] or key not in units or base_key not in units:
                continue
            ratio = intervals.ratio_of_medians(units[key][0], units[base_key][0])
            if np.isfinite(ratio[0]):
                ratios.setdefault((config["backend"], config["quant"], base), []).append(ratio)
        for (backend, quant, base), values in sorted(ratios.items()):
            scope = f"{backend}: {quant} / {base}"
            if len(values) == 1:
                ratio, low, high, coverage = values[0]
                rows.append(
                    _row(
                        "Quantisation effect (ratio to unquantised)",
                        scope,
                        metric,
                        ratio,
                        low,
                        high,
                        f"order_statistic (coverage {coverage:.3g})",
                        1,
                        source="measurements",
                    )
                )
            else:
                row = _spread(
                    pd.Series([v[0] for v in values]),
                    "Quantisation effect (ratio to unquantised)",
                    scope,
                    metric,
                    "model workloads",
                    "measurements",
                    "each ratio's order-statistic interval: quantisation analyses",
                )
                rows += [row] if row else []
    return rows


def fidelity_findings(fidelity: pd.DataFrame) -> list[dict]:
    """Mean KL from the float32 parent and top-1 agreement per variant, over models."""
    rows = []
    if fidelity is None or fidelity.empty:
        return rows
    for quant, group in fidelity.groupby("quant", sort=True):
        for column, finding in (
            ("fidelity_kl_mean", "Fidelity: KL from float32 parent (nats/token)"),
            ("fidelity_top1_mean", "Fidelity: top-1 agreement with float32 parent"),
        ):
            if len(group) == 1:
                r = group.iloc[0]
                stem = column.removesuffix("_mean")
                rows.append(
                    _row(
                        finding,
                        str(quant),
                        f"{stem}_window_median",
                        r[f"{stem}_window_median"],
                        r[f"{stem}_ci_low"],
                        r[f"{stem}_ci_high"],
                        f"order_statistic over windows (coverage {float(r['fidelity_ci_coverage']):.3g}); "
                        "median of window means",
                        int(r["fidelity_tokens"]),
                        source="fidelity",
                    )
                )
                continue
            row = _spread(
                group[column],
                finding,
                str(quant),
                column,
                "models",
                "fidelity",
                f"engine: {', '.join(sorted(group['fidelity_engine'].astype(str).unique()))}",
            )
            rows += [row] if row else []
    return rows


def build(results: Mapping[str, pd.DataFrame], measurements: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Every finding of the study (module docstring), one row each."""
    rows = [
        *flops_findings(results),
        *stability_findings(results),
        *transfer_findings(results),
        *two_n_findings(summary, results),
        *quantisation_findings(measurements, summary),
        *fidelity_findings(results.get("fidelity")),
    ]
    return frame(COLUMNS, [r for r in rows if r is not None])


# Formatting ---------------------------------------------------------------------------------


def cells(findings: pd.DataFrame) -> pd.DataFrame:
    """The findings as formatted cells (LaTeX and Markdown share them)."""
    if findings.empty:
        return pd.DataFrame({"": ["No findings: the study has no successful configuration."]})
    value = [with_interval(r.value, r.ci_low, r.ci_high) for r in findings.itertuples()]
    return pd.DataFrame(
        {
            "Finding": findings["finding"],
            "Scope": findings["scope"],
            "Metric": findings["metric"].fillna(""),
            "Value [interval]": value,
            "Interval": findings["interval"].fillna("--"),
            "n": findings["n"].map(lambda v: "--" if v is None or pd.isna(v) else str(int(v))),
            "p": findings["p_value"].map(lambda v: number(v, 2)),
            "Note": findings["note"].fillna(""),
        }
    )


def table(data: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The `tables` registry's function: the findings analysis as cells."""
    return cells(data["findings"])


def markdown(findings: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of `cells`."""
    formatted = cells(findings)
    escape = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(formatted.columns) + " |", "|" + "---|" * len(formatted.columns)]
    lines += ["| " + " | ".join(escape(v) for v in row) + " |" for row in formatted.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_markdown(data: Mapping[str, pd.DataFrame], path: str | Path) -> None:
    """The findings table as Markdown at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Findings\n\nGenerated by the pipeline (llenergymeasure/findings.py); intervals as "
        "labelled in the Interval column.\n\n" + markdown(data["findings"])
    )
