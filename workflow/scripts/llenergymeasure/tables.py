"""The study's LaTeX tables (booktabs), one registry like the figures'.

Each table function takes the study's tables (as for `figures`) and returns a DataFrame of
already formatted cells; `write` wraps it in a ``table`` environment with ``\\toprule``,
``\\midrule`` and ``\\bottomrule`` (the document needs ``\\usepackage{booktabs}``). An analysis
that has nothing to show (one platform for a transfer table) still gets a table, whose single
row says why, so every output file exists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

Tables = Mapping[str, pd.DataFrame]

from .adapter_figures import adapter_overhead_table  # noqa: E402  (LoRA adapters)
from .latex import ESTIMATE_MARK, booktabs, escape, number, with_interval  # noqa: E402, F401 (escape: the tables' API)

METRIC_LABELS = {
    "energy_j_per_output_token": "Energy per output token (J)",
    "latency_s": "Latency (s)",
    "tokens_per_s": "Tokens/s",
    "flops_per_output_token": "FLOPs per output token",
    "peak_memory_bytes": "Peak memory (bytes)",
    "ttft_s": "Time to first token (s)",
    "tpot_s": "Time per output token (s)",
    "compound": "Compound",
}


def _none(message: str) -> pd.DataFrame:
    return pd.DataFrame({"": [message]})


def _platforms(data: Tables) -> str:
    return ", ".join(sorted(data["summary"]["platform_id"].dropna().astype(str).unique())) or "none"


def _estimate_flag(frame: pd.DataFrame) -> pd.Series:
    if "energy_is_estimate" not in frame.columns:
        return pd.Series([""] * len(frame), index=frame.index)
    return frame["energy_is_estimate"].map(
        lambda v: ESTIMATE_MARK if v is not None and not pd.isna(v) and bool(v) else ""
    )


# Tables -------------------------------------------------------------------------------------


def _coverage(summary: pd.DataFrame) -> pd.Series:
    """The interval's exact coverage in percent ("--" without an interval; shipped summaries
    from before coverage was recorded say nothing)."""
    if "ci_coverage" not in summary.columns:
        return pd.Series(["--"] * len(summary), index=summary.index)
    return summary["ci_coverage"].map(lambda v: number(100 * float(v), 4) if v is not None and not pd.isna(v) else "--")


def summary_table(data: Tables) -> pd.DataFrame:
    """Per configuration: energy per output token (sensor energy only unless the study opted
    in), throughput and latency (median [interval]) and the interval's exact coverage."""
    from .energy_analysis import study_energy

    summary = study_energy(data)[0].sort_values(
        ["platform_id", "model", "backend", "quant", "batch_size", "prompt_tokens"]
    )
    flag = _estimate_flag(summary)
    return pd.DataFrame(
        {
            "Platform": summary["platform_id"],
            "Model": summary["model"],
            "Variant": summary["quant"] + " (" + summary["backend"] + ")",
            "Batch": summary["batch_size"].astype(int).astype(str),
            "Prompt": summary["prompt_tokens"].astype(int).astype(str),
            "J/token": [
                with_interval(
                    r["energy_j_per_output_token_median"],
                    r["energy_j_per_output_token_ci_low"],
                    r["energy_j_per_output_token_ci_high"],
                )
                + f
                for (_, r), f in zip(summary.iterrows(), flag, strict=True)
            ],
            "Tokens/s": [
                with_interval(r["tokens_per_s_median"], r["tokens_per_s_ci_low"], r["tokens_per_s_ci_high"])
                for _, r in summary.iterrows()
            ],
            "Latency (s)": [
                with_interval(r["latency_s_median"], r["latency_s_ci_low"], r["latency_s_ci_high"])
                for _, r in summary.iterrows()
            ],
            "Cover. (%)": _coverage(summary),
            "OK/trials": summary["n_ok"].astype(int).astype(str) + "/" + summary["n_trials"].astype(int).astype(str),
            "CV>5%": summary["cv_flag"].map(lambda f: "yes" if bool(f) else ""),
        }
    )


def flops_rank_agreement_table(data: Tables) -> pd.DataFrame:
    table = data["flops_rank_agreement"]
    if table.empty:
        return _none("No configuration has both FLOPs and a measurement.")
    return pd.DataFrame(
        {
            "Platform": table["platform_id"],
            "Batch": table["batch_size"].astype(int).astype(str),
            "Prompt": table["prompt_tokens"].astype(int).astype(str),
            "Metric": table["metric"].map(lambda m: METRIC_LABELS.get(m, m)),
            "Configs": table["n_configs"].astype(int).astype(str),
            "Left out": table["n_excluded_flops"].astype(int).astype(str),
            "FLOPs levels": table["n_flops_levels"].astype(int).astype(str),
            "Off by >=2": table["n_disagreements"].astype(int).astype(str),
            "Spearman rho [95% CI]": [
                with_interval(r["spearman_rho"], r["spearman_ci_low"], r["spearman_ci_high"], 2)
                for _, r in table.iterrows()
            ],
        }
    )


def ranking_transfer_table(data: Tables) -> pd.DataFrame:
    table = data["ranking_transfer"]
    if table.empty:
        return _none(f"One platform in this study ({_platforms(data)}): no transfer to measure.")
    return pd.DataFrame(
        {
            "Platforms": table["platform_a"] + " / " + table["platform_b"],
            "Batch": table["batch_size"].astype(int).astype(str),
            "Metric": table["metric"].map(lambda m: METRIC_LABELS.get(m, m)),
            "n": table["n_configs"].astype(int).astype(str),
            "Spearman rho [95% CI]": [
                with_interval(r["spearman_rho"], r["spearman_ci_low"], r["spearman_ci_high"], 2)
                for _, r in table.iterrows()
            ],
            "Kendall tau": table["kendall_tau"].map(lambda v: number(v, 2)),
        }
    )


def pareto_transfer_table(data: Tables) -> pd.DataFrame:
    table = data["pareto_transfer"]
    if table.empty:
        return _none(f"One platform in this study ({_platforms(data)}): no frontier to transfer.")
    return pd.DataFrame(
        {
            "Source": table["source_platform"],
            "Target": table["target_platform"],
            "Batch": table["batch_size"].astype(int).astype(str),
            "Common": table["n_common"].astype(int).astype(str),
            "Precision": table["precision"].map(lambda v: number(v, 2)),
            "Recall": table["recall"].map(lambda v: number(v, 2)),
            "F1": table["f1"].map(lambda v: number(v, 2)),
        }
    )


def rank_difference_tests_table(data: Tables) -> pd.DataFrame:
    table = data["rank_difference_tests"]
    if table.empty:
        return _none("Too few configurations to compare FLOPs-based and measured costs.")
    return pd.DataFrame(
        {
            "Platform": table["platform_id"],
            "Metric": table["metric"].map(lambda m: METRIC_LABELS.get(m, m)),
            "n": table["n_configs"].astype(int).astype(str),
            "Trial shifts": table["n_trial_shifts"].astype(int).astype(str),
            "Mean shift (FLOPs)": table["mean_flops_rank_shift"].map(lambda v: number(v, 2)),
            "Mean shift (trials)": table["mean_trial_rank_shift"].map(lambda v: number(v, 2)),
            "p (one-sided)": table["p_value"].map(lambda v: number(v, 2)),
            "Cliff's delta": table["effect_size"].map(lambda v: number(v, 2)),
            "Cohen's d": table["cohens_d"].map(lambda v: number(v, 2)),
        }
    )


def family_transfer_error_table(data: Tables) -> pd.DataFrame:
    table = data["family_transfer_error"]
    if table.empty:
        return _none(f"One platform in this study ({_platforms(data)}): no transfer error to measure.")
    return pd.DataFrame(
        {
            "Platforms": table["platform_a"] + " / " + table["platform_b"],
            "Metric": table["metric"].map(lambda m: METRIC_LABELS.get(m, m)),
            "Family": table["family"],
            "n": table["n_configs"].astype(int).astype(str),
            "Rank shift / (n-1)": table["normalised_rank_shift"].map(lambda v: number(v, 2)),
            "Median |log error|": table["median_abs_log_error"].map(lambda v: number(v, 2)),
        }
    )


def two_n_error_table(data: Tables) -> pd.DataFrame:
    table = data["two_n_error"]
    if table.empty:
        return _none("No architecture configs were given for the 2N sweep.")
    wide = table.pivot_table(
        index=["model", "family"], columns="prompt_tokens", values="relative_error", aggfunc="first"
    )
    out = pd.DataFrame({"Architecture": [f"{m} ({f})" for m, f in wide.index]})
    for prompt in wide.columns:
        out[f"S={int(prompt)}"] = [number(100 * v, 3) for v in wide[prompt]]
    return out


def compound_table(data: Tables) -> pd.DataFrame:
    table = data["compound"].dropna(subset=["compound"])
    if table.empty:
        return _none("The compound measure is empty: the reference or a metric is missing.")
    stability = data["compound_stability"].set_index(
        ["platform_id", "batch_size", "prompt_tokens", "output_tokens", "model", "quant", "backend"]
    )
    rows = []
    for _, r in table.sort_values(["platform_id", "batch_size", "compound_rank"]).iterrows():
        key = (
            r["platform_id"],
            r["batch_size"],
            r["prompt_tokens"],
            r["output_tokens"],
            r["model"],
            r["quant"],
            r["backend"],
        )
        spread = stability.loc[key] if key in stability.index else None
        rows.append(
            {
                "Platform": r["platform_id"],
                "Batch": str(int(r["batch_size"])),
                "Configuration": f"{r['model']}/{r['quant']} ({r['backend']})",
                "Compound": number(r["compound"]),
                "Rank": number(r["compound_rank"]),
                "Rank over trials": "--"
                if spread is None
                else f"{number(spread['rank_min'])}--{number(spread['rank_max'])}",
            }
        )
    return pd.DataFrame(rows)


def quantisation_energy_table(data: Tables) -> pd.DataFrame:
    table = data["quantisation_energy"]
    if table.empty:
        return _none(
            "No quantised variant has its backend's unquantised variant measured beside it "
            "(or no platform has sensor energy)."
        )
    table = table.sort_values(["platform_id", "model", "quant", "batch_size"])
    flag = _estimate_flag(table)
    return pd.DataFrame(
        {
            "Platform": table["platform_id"],
            "Model": table["model"],
            "Variant": table["quant"] + " (" + table["backend"] + ")",
            "Batch": table["batch_size"].astype(int).astype(str),
            "Baseline": table["baseline_quant"],
            "Energy ratio [interval]": [
                with_interval(r["energy_ratio"], r["ci_low"], r["ci_high"], 3) + f
                for (_, r), f in zip(table.iterrows(), flag, strict=True)
            ],
            "Cover. (%)": _coverage(table),
        }
    )


def engine_transfer_table(data: Tables) -> pd.DataFrame:
    table = data["engine_transfer"]
    if table.empty:
        return _none("No two engines measured three or more matched (model, variant) items.")
    return pd.DataFrame(
        {
            "Engines": table["backend_a"] + " / " + table["backend_b"],
            "Batch": table["batch_size"].astype(int).astype(str),
            "Prompt": table["prompt_tokens"].astype(int).astype(str),
            "Metric": table["metric"].map(lambda m: METRIC_LABELS.get(m, m)),
            "n (class-matched)": [f"{int(r['n_items'])} ({int(r['n_class_matched'])})" for _, r in table.iterrows()],
            "Spearman rho [95% CI]": [
                with_interval(r["spearman_rho"], r["spearman_ci_low"], r["spearman_ci_high"], 2)
                for _, r in table.iterrows()
            ],
            "Kendall tau": table["kendall_tau"].map(lambda v: number(v, 2)),
        }
    )


def _findings_table(data: Tables) -> pd.DataFrame:
    from .findings import table

    return table(data)


# name -> (function, caption); captions are LaTeX captions (plain text, escaped on output).
TABLES: dict[str, tuple[Callable[[Tables], pd.DataFrame], str]] = {
    "summary": (
        summary_table,
        "Measured cost per configuration: medians over trials (over replicate "
        "medians where there are several) with distribution-free order-statistic intervals; "
        "Cover. is each interval's exact coverage. Energy only where a sensor measured it, "
        "unless the study opted in to estimates (†: estimated).",
    ),
    "flops_rank_agreement": (
        flops_rank_agreement_table,
        "FLOPs per output token against measurement: "
        "FLOPs within 0.5% form one level; configurations measured two or more "
        "positions outside their level's positions, and Spearman's rho (Bonett-Wright "
        "95% interval), per platform and workload.",
    ),
    "ranking_transfer": (
        ranking_transfer_table,
        "Ranking transfer between platforms, per workload: "
        "Spearman's rho with its Bonett-Wright 95% interval and Kendall's tau over the "
        "configurations both measured.",
    ),
    "pareto_transfer": (
        pareto_transfer_table,
        "How well one platform's quality-efficiency Pareto frontier predicts another's.",
    ),
    "rank_difference_tests": (
        rank_difference_tests_table,
        "Do FLOPs-vs-measured rank shifts exceed the "
        "measurement's own trial-to-trial rank shifts? One-sided Mann-Whitney U, "
        "Cliff's delta and Cohen's d.",
    ),
    "family_transfer_error": (family_transfer_error_table, "Transfer error per architecture family between platforms."),
    "two_n_error": (
        two_n_error_table,
        "Error (%) of the 2N estimate against the exact FLOP count of generate, by prompt length S (batch 1).",
    ),
    "compound": (
        compound_table,
        "Compound efficiency: geometric mean of cost ratios to the reference "
        "configuration, with its rank range over repeated trials.",
    ),
    "quantisation_energy": (
        quantisation_energy_table,
        "Energy per output token of each variant over "
        "the unquantised variant of the same model on the same backend, with the ratio "
        "of the medians' order-statistic intervals and its coverage. †: energy estimated, "
        "not measured by a sensor.",
    ),
    "adapter_overhead": (
        adapter_overhead_table,
        "LoRA adapter overhead: ratios of medians of tokens/s "
        "and J/token, unmerged over base, merged over base and unmerged over merged, "
        "with order-statistic intervals (their coverage bound is the ci_coverage column); 'no sensor': energy was estimated, not measured.",
    ),
    "engine_transfer": (
        engine_transfer_table,
        "Cross-engine transfer on one platform, per workload: "
        "Spearman's rho (Bonett-Wright 95% interval) and Kendall's tau (no interval: the "
        "usual one under-covers) between two engines' rankings of the (model, variant) items "
        "both measured; variants matched by name, else by weight class (in brackets: how many).",
    ),
    "findings": (
        _findings_table,
        "The study's findings, generated by the pipeline: each value with its "
        "interval and the interval's kind (95% confidence interval, order-statistic interval "
        "with its exact coverage, or the range of the values summarised).",
    ),
}


from .outputs import TABLES as _REGISTERED  # noqa: E402

if list(TABLES) != list(_REGISTERED):
    raise AssertionError(f"tables {list(TABLES)} differ from outputs.TABLES {list(_REGISTERED)}")


def write(name: str, data: Tables, path: str | Path) -> None:
    """Write table `name` as a LaTeX file."""
    function, caption = TABLES[name]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(booktabs(function(data), caption, label=f"tab:{name}"))
    log.info("table %s -> %s", name, path)


def write_all(data: Tables, directory: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Every registered table (or `names`) as ``<directory>/<name>.tex``."""
    written = []
    for name in names or TABLES:
        path = Path(directory) / f"{name}.tex"
        write(name, data, path)
        written.append(path)
    return written
