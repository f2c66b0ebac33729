"""Figures of ranking transfer between platforms (family "Ranking transfer"): rank
correlations per workload and the transfer error per architecture family.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .style import (
    GREY,
    OKABE_ITO,
    SHORT_LABELS,
    WORKLOAD_COLUMNS,
    Tables,
    _estimated_platforms_note,
    _footnote,
    _grid,
    _legend,
    _message,
    _metric_label,
)


def ranking_transfer(data: Tables) -> Figure:
    """Spearman's rho (interval) and Kendall's tau between every two platforms' rankings,
    per workload and metric."""
    table = data["ranking_transfer"]
    platforms = sorted(data["summary"]["platform_id"].dropna().astype(str).unique())
    if table.empty:
        return _message(f"One platform in this study ({', '.join(platforms) or 'none'}): ranking transfer needs two.")
    pairs = list(table.groupby(["platform_a", "platform_b"], sort=True))
    fig, axes = _grid(len(pairs), max_cols=2, sharey=True)
    for ax, ((a, b), panel) in zip(axes, pairs, strict=True):
        panel = panel.sort_values(["metric", *WORKLOAD_COLUMNS])
        ticks = [
            f"{SHORT_LABELS.get(m, m)}\nb{int(batch)}"
            for m, batch in zip(panel["metric"], panel["batch_size"], strict=True)
        ]
        x = np.arange(len(panel))
        rho = panel["spearman_rho"].astype(float).to_numpy()
        low = panel["spearman_ci_low"].astype(float).to_numpy()
        high = panel["spearman_ci_high"].astype(float).to_numpy()
        ax.errorbar(
            x - 0.12,
            rho,
            yerr=[rho - low, high - rho],
            fmt="o",
            color=OKABE_ITO[0],
            capsize=1.5,
            label="Spearman ρ (95 % interval)",
        )
        ax.scatter(
            x + 0.12, panel["kendall_tau"].astype(float), marker="s", color=OKABE_ITO[1], s=10, label="Kendall τ"
        )
        ax.axhline(0, color=GREY, lw=0.6)
        ax.set_xticks(x, ticks, fontsize=5)
        ax.set_ylim(-1.05, 1.05)
        n = int(panel["n_configs"].max())
        ax.set_title(f"{a} → {b} (up to {n} common configurations per workload)")
        ax.set_ylabel("Rank correlation")
    _legend(fig, axes)
    _footnote(
        fig,
        [
            "Per workload (b: batch size). Error bars: Bonett–Wright interval of Spearman's ρ.",
            _estimated_platforms_note(data["summary"]),
        ],
    )
    return fig


def family_transfer_error(data: Tables) -> Figure:
    """Per architecture family: rank shift between platforms, over the largest possible shift."""
    table = data["family_transfer_error"]
    if table.empty:
        platforms = sorted(data["summary"]["platform_id"].dropna().astype(str).unique())
        return _message(f"One platform in this study ({', '.join(platforms) or 'none'}): transfer error needs two.")
    pairs = list(table.groupby(["platform_a", "platform_b"], sort=True))
    fig, axes = _grid(len(pairs), max_cols=2, sharey=True)
    for ax, ((a, b), panel) in zip(axes, pairs, strict=True):
        families = sorted(panel["family"].unique())
        metrics = sorted(panel["metric"].unique())
        width = 0.8 / len(metrics)
        for i, metric in enumerate(metrics):
            part = panel[panel["metric"] == metric].set_index("family").reindex(families)
            x = np.arange(len(families)) + (i - (len(metrics) - 1) / 2) * width
            ax.bar(
                x,
                part["normalised_rank_shift"].astype(float),
                width=width,
                color=OKABE_ITO[i % 8],
                label=_metric_label(metric),
            )
        ax.set_xticks(np.arange(len(families)), families)
        ax.set_ylim(0, 1)
        ax.set_title(f"{a} ↔ {b}")
        ax.set_ylabel("Mean rank shift / (n − 1)")
    _legend(fig, axes)
    _footnote(fig, [_estimated_platforms_note(data["summary"])])
    return fig
