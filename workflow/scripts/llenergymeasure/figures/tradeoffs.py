"""Figures of quality and efficiency trade-offs (family "Quality and efficiency trade-offs"):
Pareto frontiers and the compound measure.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from ..energy_analysis import study_energy
from .style import (
    GREY,
    PAGE_WIDTH_IN,
    Tables,
    _choice_label,
    _colour_map,
    _estimate_note,
    _estimated_platforms_note,
    _footnote,
    _grid,
    _is_true,
    _legend,
    _metric_label,
    _scale,
    _sensorless_message,
    _sensorless_panels,
)


def pareto(data: Tables) -> Figure:
    """Perplexity against energy per output token per platform and batch size, with the
    Pareto frontier; random-weight models greyed out."""
    table = data["pareto"]
    _, sensorless = study_energy(data)
    if table.empty:
        return _sensorless_message("No configuration has both a perplexity and an efficiency value.", sensorless)
    panels = list(table.groupby(["platform_id", "batch_size", "prompt_tokens", "output_tokens"], sort=True))
    styles = _colour_map(table["model"])
    fig, axes = _grid(len(panels) + len(sensorless))
    _sensorless_panels(axes[len(panels) :], sensorless)
    any_random = False
    for ax, ((platform, batch, prompt, output), panel) in zip(
        axes, panels, strict=False
    ):  # the grid may hold more axes
        for _, point in panel.iterrows():
            random = str(point.get("weights")) == "random"
            any_random |= random
            colour, marker = styles[point["model"]]
            colour = GREY if random else colour
            estimate = _is_true(point.get("energy_is_estimate"))
            ax.scatter(
                point["efficiency"],
                point["quality"],
                marker=marker,
                s=14,
                facecolor="none" if estimate else colour,
                edgecolor=colour,
                linewidth=0.8,
                label=point["model"] + (" (random weights)" if random else ""),
                zorder=2,
            )
        frontier = panel[panel["on_frontier"].astype(bool)].sort_values("efficiency")
        ax.scatter(
            frontier["efficiency"],
            frontier["quality"],
            s=40,
            facecolor="none",
            edgecolor="black",
            linewidth=0.6,
            zorder=3,
        )
        ax.step(
            frontier["efficiency"],
            frontier["quality"],
            where="post",
            color="black",
            lw=0.7,
            zorder=1,
            label="Pareto frontier",
        )
        _scale(ax, panel["efficiency"].astype(float), axis="x")
        ax.set_title(f"{platform} · batch {int(batch)}, {int(prompt)}+{int(output)} tokens")
        ax.set_xlabel(_metric_label(panel["efficiency_metric"].iloc[0]))
        ax.set_ylabel("Perplexity (lower is better)")
    _legend(fig, axes[: len(panels)])
    _footnote(
        fig,
        [
            "Ringed points lie on the frontier. "
            + ("Grey: random-weight models; their perplexity measures nothing about quality." if any_random else ""),
            _estimate_note(table),
        ],
    )
    return fig


def compound_efficiency(data: Tables) -> Figure:
    """The compound measure (geometric mean of cost ratios to the reference) per configuration,
    with each configuration's rank range over trials."""
    compound = data["compound"].dropna(subset=["compound"])
    if compound.empty:
        uses_energy = data["compound"]["metrics"].astype(str).str.contains("energy").any()
        return _sensorless_message(
            "The compound measure is empty: the reference or a metric is missing.",
            study_energy(data)[1] if uses_energy else {},
        )
    stability = data["compound_stability"]
    compound = compound.assign(label=compound["model"] + "/" + _choice_label(compound))
    panels = list(compound.groupby("platform_id", sort=True))
    styles = _colour_map(compound["batch_size"].astype(int).map("{:04d}".format))
    # long labels, one configuration per line: about 0.11 in a label, so that they never overlap
    most = int(compound.groupby("platform_id")["label"].nunique().max())
    fig, axes = _grid(len(panels), max_cols=2, width=PAGE_WIDTH_IN, panel_height=0.11 * most + 0.3)
    for ax, (platform, panel) in zip(axes, panels, strict=True):
        labels = sorted(panel["label"].unique())
        y = {label: i for i, label in enumerate(labels)}
        for batch, points in panel.groupby("batch_size", sort=True):
            colour, marker = styles[f"{int(batch):04d}"]
            ax.scatter(
                points["compound"].astype(float),
                points["label"].map(y),
                color=colour,
                marker=marker,
                s=12,
                label=f"batch {int(batch)}",
            )
        ax.axvline(1.0, color=GREY, lw=0.6)
        _scale(ax, [*panel["compound"].astype(float), 1.0], axis="x")
        ax.set_yticks(range(len(labels)), labels)
        rho = stability[stability["platform_id"] == platform]["group_trial_rho_mean"]
        rho_text = f", trial-to-trial ρ {rho.mean():.2f}" if rho.notna().any() else ""
        ax.set_title(f"{platform}{rho_text}")
        ax.set_xlabel(f"Compound cost (× {panel['reference'].iloc[0]})")
    _legend(fig, axes)
    _footnote(
        fig,
        [
            f"Geometric mean of ratios over: {compound['metrics'].iloc[0].replace(',', ', ')}. "
            "Below 1 is cheaper than the reference.",
            _estimated_platforms_note(data["summary"]),
        ],
    )
    return fig
