"""Figures of FLOPs against measurement (family "FLOPs against measurement"): FLOPs ranks
against measured ranks, the 2N formula's error, and whether FLOPs mis-rank beyond noise.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .style import (
    COLUMN_WIDTH_IN,
    GREY,
    OKABE_ITO,
    SHORT_LABELS,
    WORKLOAD_COLUMNS,
    Tables,
    _colour_map,
    _estimated_platforms_note,
    _footnote,
    _grid,
    _legend,
    _message,
)


def flops_rank_vs_measured(data: Tables) -> Figure:
    """FLOPs rank against measured rank per platform and metric; points two or more positions
    off the diagonal are the disagreements."""
    ranks = data["flops_ranks"]
    if ranks.empty:
        return _message("No configuration has both FLOPs and a measurement.")
    metric_names = {"energy_j_per_output_token": "energy/token", "latency_s": "latency", "tokens_per_s": "tokens/s"}
    panels = list(ranks.groupby(["platform_id", "metric"], sort=True))
    fig, axes = _grid(len(panels))
    batch_styles = _colour_map(ranks["batch_size"].astype(int).map("{:04d}".format))
    for ax, ((platform, metric), panel) in zip(axes, panels, strict=True):
        top = float(max(panel["flops_rank"].max(), panel["measured_rank"].max())) + 0.5
        ax.fill_between([0.5, top], [0.5 - 2, top - 2], [0.5 + 2, top + 2], color="#EEEEEE", zorder=0, lw=0)
        ax.plot([0.5, top], [0.5, top], color=GREY, lw=0.6, zorder=1)
        workloads = list(panel.groupby(WORKLOAD_COLUMNS, sort=True))
        for i, (workload, points) in enumerate(workloads):
            batch = workload[0]
            colour, marker = batch_styles[f"{int(batch):04d}"]
            off = points["disagrees"].astype(bool).to_numpy()
            x = points["flops_rank"].to_numpy(float) + 0.12 * (i - (len(workloads) - 1) / 2)
            y = points["measured_rank"].to_numpy(float)
            ax.scatter(x[~off], y[~off], color=colour, marker=marker, s=12, label=f"batch {int(batch)}", zorder=2)
            ax.scatter(
                x[off], y[off], facecolor=colour, edgecolor="black", linewidth=0.8, marker=marker, s=18, zorder=3
            )
        ax.set_xlim(0.5, top)
        ax.set_ylim(0.5, top)
        n_off = int(panel["disagrees"].astype(bool).sum())
        # two short lines: the platform, then the metric and its disagreement count
        ax.set_title(f"{platform}\n{metric_names.get(metric, metric)}: {n_off} off by ≥2", fontsize="small")
        ax.set_xlabel("Rank by FLOPs per output token")
        ax.set_ylabel("Rank by measurement")
    _legend(fig, axes)
    _footnote(
        fig,
        [
            "Rank 1 = cheapest; FLOPs within the tolerance (0.5 % by default) are one level at its "
            "average rank; outlined points lie two or more positions outside their level's positions.",
            _estimated_platforms_note(data["summary"]),
        ],
    )
    return fig


def two_n_error(data: Tables) -> Figure:
    """The 2N formula's error against the exact count, by prompt length, per architecture.
    Architectures whose error exceeds 100% anywhere (MoE counted with total parameters) get
    their own panel so that they do not flatten the dense ones."""
    table = data["two_n_error"]
    if table.empty:
        return _message("No architecture configs were given for the 2N sweep.")
    table = table.assign(percent=100 * table["relative_error"].astype(float))
    worst = table.groupby("model")["percent"].apply(lambda p: p.abs().max())
    groups = [
        (title, table[table["model"].isin(worst.index[select])])
        for title, select in (("", worst <= 100), ("error above 100%", worst > 100))
    ]
    groups = [(title, part) for title, part in groups if not part.empty]
    styles = _colour_map(table["model"])
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(COLUMN_WIDTH_IN, 1.6 + 1.2 * len(groups)),
        squeeze=False,
        sharex=True,
        height_ratios=[3, 1][: len(groups)],
    )
    axes = list(axes.flat)
    for ax, (title, part) in zip(axes, groups, strict=True):
        for model, line in part.groupby("model", sort=True):
            line = line.sort_values("prompt_tokens")
            colour, marker = styles[model]
            ax.plot(
                line["prompt_tokens"],
                line["percent"],
                color=colour,
                marker=marker,
                label=f"{model} ({line['family'].iloc[0]})",
            )
        ax.axhline(0, color=GREY, lw=0.6)
        ax.set_xscale("log", base=2)
        lengths = sorted(table["prompt_tokens"].astype(int).unique())
        ax.set_xticks(lengths, [str(n) for n in lengths], rotation=45)
        ax.minorticks_off()
        ax.set_ylabel("2N error (%)")
        if title:
            ax.set_title(title, fontsize=6)
        ax.legend(loc="best", fontsize=5.5)
    axes[-1].set_xlabel("Prompt length (tokens)")
    new = int(table["output_tokens"].iloc[0])
    axes[0].set_title(f"2 × N × tokens vs exact FLOPs (batch 1, {new} new tokens)")
    return fig


def rank_difference_tests(data: Tables) -> Figure:
    """Cliff's delta of FLOPs-vs-measured rank shifts over trial-to-trial rank shifts, per
    platform and metric, labelled with the one-sided Mann-Whitney p-value."""
    table = data["rank_difference_tests"].dropna(subset=["effect_size"])
    if table.empty:
        return _message("Too few ranked configurations to compare FLOPs and measured rank shifts.")
    fig, axes = _grid(1)
    ax = axes[0]
    platforms = sorted(table["platform_id"].unique())
    metrics = sorted(table["metric"].unique())
    width = 0.8 / len(platforms)
    for i, platform in enumerate(platforms):
        part = table[table["platform_id"] == platform].set_index("metric").reindex(metrics)
        x = np.arange(len(metrics)) + (i - (len(platforms) - 1) / 2) * width
        ax.bar(x, part["effect_size"].astype(float), width=width, color=OKABE_ITO[i % 8], label=platform)
        for xi, (d, p) in zip(x, zip(part["effect_size"], part["p_value"], strict=True), strict=True):
            if np.isfinite(d):
                ax.annotate(f"p={p:.2g}", (xi, d), ha="center", va="bottom" if d >= 0 else "top", fontsize=5)
    ax.axhline(0, color=GREY, lw=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xticks(np.arange(len(metrics)), [SHORT_LABELS.get(m, m) for m in metrics])
    ax.set_ylabel("Cliff's δ (FLOPs shift vs trial shift)")
    ax.set_title("Do FLOPs mis-rank beyond the measurement's own noise?")
    ax.legend()
    _footnote(
        fig,
        [
            "Above 0: configurations move further between FLOPs and measured ranks than single "
            "trials move around the medians; p: one-sided Mann–Whitney U.",
            _estimated_platforms_note(data["summary"]),
        ],
    )
    return fig
