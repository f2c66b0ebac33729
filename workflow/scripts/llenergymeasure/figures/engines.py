"""Figures of the cross-engine transfer and of fidelity, in the study style (`figures.style`).

Registered in `figures.FIGURES` with the other figures; each takes the study's tables by
name and returns a matplotlib Figure, or one that says why there is nothing to draw.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .style import (
    GREY,
    OKABE_ITO,
    PAGE_WIDTH_IN,
    SHORT_LABELS,
    Tables,
    _footnote,
    _grid,
    _legend,
    _message,
)


def engine_transfer(data: Tables) -> Figure:
    """Spearman's rho (Bonett-Wright interval) and Kendall's tau between every two engines of
    a platform, per workload and metric, over their matched (model, variant) items."""
    table = data["engine_transfer"]
    table = table[np.isfinite(table["spearman_rho"].astype(float))] if len(table) else table
    if table.empty:
        engines = sorted(data["summary"]["backend"].dropna().astype(str).unique())
        return _message(
            f"Engines in this study: {', '.join(engines) or 'none'}. Cross-engine transfer needs "
            "two engines measuring three or more matched (model, variant) items."
        )
    pairs = list(table.groupby(["platform_id", "backend_a", "backend_b"], sort=True))
    # one pair per row at page width: a panel holds metric x workload ticks (15 in the CPU study)
    fig, axes = _grid(len(pairs), max_cols=1, sharey=True, width=PAGE_WIDTH_IN)
    for ax, ((platform, a, b), panel) in zip(axes, pairs, strict=True):
        panel = panel.sort_values(["metric", "batch_size", "prompt_tokens"])
        ticks = [
            f"{SHORT_LABELS.get(m, m.split('_')[0])} b{int(batch)} p{int(prompt)}"
            for m, batch, prompt in zip(panel["metric"], panel["batch_size"], panel["prompt_tokens"], strict=True)
        ]
        x = np.arange(len(panel))
        rho = panel["spearman_rho"].astype(float).to_numpy()
        low = panel["spearman_ci_low"].astype(float).to_numpy()
        high = panel["spearman_ci_high"].astype(float).to_numpy()
        has = np.isfinite(low)
        ax.errorbar(
            x[has] - 0.12,
            rho[has],
            yerr=[rho[has] - low[has], high[has] - rho[has]],
            fmt="o",
            color=OKABE_ITO[0],
            capsize=1.5,
            label="Spearman ρ (95 % interval)",
        )
        ax.scatter(
            x[~has] - 0.12,
            rho[~has],
            marker="o",
            facecolors="none",
            edgecolors=OKABE_ITO[0],
            s=10,
            label="Spearman ρ (n < 5: no interval)",
        )
        ax.scatter(
            x + 0.12,
            panel["kendall_tau"].astype(float),
            marker="s",
            color=OKABE_ITO[1],
            s=10,
            label="Kendall τ (no interval)",
        )
        ax.axhline(0, color=GREY, lw=0.6)
        ax.set_xticks(x, ticks, fontsize=5, rotation=40, ha="right", rotation_mode="anchor")
        ax.set_ylim(-1.05, 1.05)
        matched = int(panel["n_class_matched"].max())
        ax.set_title(
            f"{a} → {b} ({platform}; up to {int(panel['n_items'].max())} items, {matched} class-matched)", fontsize=6
        )
        ax.set_ylabel("Rank correlation")
    _legend(fig, axes)
    _footnote(
        fig,
        [
            "Items: (model, variant) measured on both engines; variants matched by name, else by "
            "weight class (engine_matches). b: batch size, p: prompt tokens."
        ],
    )
    return fig


def fidelity(data: Tables) -> Figure:
    """Each variant's KL divergence from its float32 parent and top-1 agreement, per model."""
    table = data["fidelity"]
    if table.empty:
        return _message("No fidelity table in this study (rule fidelity_table): nothing to draw.")
    table = table[table["quant"] != "none-float32"]
    if table.empty:
        return _message("Only float32 parents in this study: fidelity compares a variant with its parent.")
    fig, axes = _grid(2, max_cols=2)
    quants = sorted(table["quant"].unique())
    models = sorted(table["model"].unique())
    width = 0.8 / max(len(models), 1)
    for ax, (column, label) in zip(
        axes,
        (("fidelity_kl", "KL from float32 parent (nats/token)"), ("fidelity_top1", "Top-1 agreement with parent")),
        strict=True,
    ):
        for i, model in enumerate(models):
            part = table[table["model"] == model].set_index("quant").reindex(quants)
            x = np.arange(len(quants)) + (i - (len(models) - 1) / 2) * width
            mid = part[f"{column}_window_median"].astype(float).to_numpy()
            low = part[f"{column}_ci_low"].astype(float).to_numpy()
            high = part[f"{column}_ci_high"].astype(float).to_numpy()
            ax.errorbar(
                x,
                mid,
                yerr=[np.nan_to_num(mid - low), np.nan_to_num(high - mid)],
                fmt="o",
                capsize=1,
                color=OKABE_ITO[i % len(OKABE_ITO)],
                label=model,
                markersize=2.5,
            )
        ax.set_xticks(np.arange(len(quants)), quants, rotation=45, ha="right", fontsize=5)
        ax.set_ylabel(label)
        if column == "fidelity_kl":
            ax.set_yscale("symlog", linthresh=1e-4)
    _legend(fig, axes)
    engines = ", ".join(sorted(table["fidelity_engine"].astype(str).unique()))
    _footnote(
        fig,
        [
            f"Fidelity, not quality: next-token distributions against the model's own float32 parent on "
            f"the evaluation text (scored by {engines}). Median of per-window means with its "
            "order-statistic interval."
        ],
    )
    return fig
