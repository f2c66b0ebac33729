"""Figures of measured cost (family "Measured cost"): energy and latency against batch size,
the energy effect of quantisation and prefill's share of energy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..energy_analysis import study_energy
from .style import (
    GREY,
    Tables,
    _by_label,
    _choice_label,
    _choice_styles,
    _estimate_note,
    _footnote,
    _grid,
    _is_true,
    _legend,
    _log2_batch_axis,
    _ok,
    _scale,
    _sensorless_message,
    _sensorless_panels,
)


def _metric_vs_batch(
    summary: pd.DataFrame, metric: str, ylabel: str, log_y: bool = True, sensorless: Mapping[str, str] | None = None
) -> Figure:
    """Median `metric` (order-statistic interval) against batch size, one panel per platform
    and model, one line per quantisation and backend; a panel per `sensorless` platform."""
    sensorless = dict(sensorless or {})
    data = _ok(summary).copy()
    data = data[np.isfinite(pd.to_numeric(data[f"{metric}_median"], errors="coerce").astype(float))]
    if data.empty:
        return _sensorless_message(f"No successful measurement of {metric} in this study.", sensorless)
    data["label"] = _choice_label(data)
    styles = _choice_styles(summary)
    panels = list(data.groupby(["platform_id", "model"], sort=True))
    fig, axes = _grid(len(panels) + len(sensorless))
    _sensorless_panels(axes[len(panels) :], sensorless)
    for ax, ((platform, model), panel) in zip(axes, panels, strict=False):  # the grid may hold more axes
        for label, line in _by_label(panel, styles):
            line = line.sort_values("batch_size")
            colour, marker = styles[label]
            median = line[f"{metric}_median"].astype(float).to_numpy()
            low = line.get(f"{metric}_ci_low", line[f"{metric}_median"]).astype(float).to_numpy()
            high = line.get(f"{metric}_ci_high", line[f"{metric}_median"]).astype(float).to_numpy()
            estimate = line.get("energy_is_estimate", pd.Series([False])).map(_is_true).any()
            ax.errorbar(
                line["batch_size"],
                median,
                yerr=[median - low, high - median],
                color=colour,
                marker=marker,
                mfc="none" if (estimate and "energy" in metric) else colour,
                capsize=1.5,
                label=label,
            )
        _log2_batch_axis(ax, panel["batch_size"])
        if log_y:
            _scale(
                ax,
                [
                    *panel[f"{metric}_median"].astype(float),
                    *panel.get(f"{metric}_ci_low", pd.Series(dtype=float)).astype(float),
                    *panel.get(f"{metric}_ci_high", pd.Series(dtype=float)).astype(float),
                ],
            )
        ax.set_title(f"{model} · {platform}")
        ax.set_xlabel("Batch size")
        ax.set_ylabel(ylabel)
    _legend(fig, axes[: len(panels)])
    _footnote(
        fig,
        [
            _estimate_note(data) if "energy" in metric else "",
            "Error bars: order-statistic interval of the median (over trials, or over replicate "
            "medians), exact coverage in the summary's ci_coverage.",
        ],
    )
    return fig


def energy_vs_batch(data: Tables) -> Figure:
    summary, sensorless = study_energy(data)
    return _metric_vs_batch(summary, "energy_j_per_output_token", "Energy per output token (J)", sensorless=sensorless)


def latency_vs_batch(data: Tables) -> Figure:
    return _metric_vs_batch(data["summary"], "latency_s", "End-to-end latency (s)")


def quantisation_energy(data: Tables) -> Figure:
    """Energy per output token of each quantised variant over its model's baseline variant."""
    table = data["quantisation_energy"]
    _, sensorless = study_energy(data)
    if table.empty:
        return _sensorless_message(
            "No quantised variant has its backend's unquantised variant measured beside it.", sensorless
        )
    table = table.assign(label=_choice_label(table))
    styles = _choice_styles(data["summary"])
    panels = list(table.groupby(["platform_id", "model"], sort=True))
    fig, axes = _grid(len(panels) + len(sensorless))
    _sensorless_panels(axes[len(panels) :], sensorless)
    for ax, ((platform, model), panel) in zip(axes, panels, strict=False):  # the grid may hold more axes
        for label, line in _by_label(panel, styles):
            line = line.sort_values("batch_size")
            colour, marker = styles[label]
            ratio = line["energy_ratio"].astype(float).to_numpy()
            yerr = [ratio - line["ci_low"].astype(float).to_numpy(), line["ci_high"].astype(float).to_numpy() - ratio]
            estimate = line["energy_is_estimate"].map(_is_true).any()
            ax.errorbar(
                line["batch_size"],
                ratio,
                yerr=yerr,
                color=colour,
                marker=marker,
                mfc="none" if estimate else colour,
                capsize=1.5,
                label=label,
            )
        ax.axhline(1.0, color=GREY, lw=0.6)
        _log2_batch_axis(ax, panel["batch_size"])
        _scale(ax, [*panel["ci_low"].astype(float), *panel["ci_high"].astype(float), 1.0])
        base = f"{panel['baseline_quant'].iloc[0]} ({panel['baseline_backend'].iloc[0]})"
        ax.set_title(f"{model} · {platform}")
        ax.set_xlabel("Batch size")
        ax.set_ylabel(f"Energy/token ÷ {base}")
    _legend(fig, axes[: len(panels)])
    _footnote(
        fig,
        [
            _estimate_note(table),
            "Below 1: the variant spends less energy per token than its backend's unquantised "
            "variant. Error bars: ratio of the medians' order-statistic intervals (coverage in the table).",
        ],
    )
    return fig


def energy_phase_shares(data: Tables) -> Figure:
    """Prefill's share of one generate call's energy against batch size (decode is the rest)."""
    table = data["energy_phase_shares"]
    _, sensorless = study_energy(data)
    if table.empty:
        return _sensorless_message("No trial measured prefill and decode energy apart.", sensorless)
    table = table.assign(label=_choice_label(table))
    styles = _choice_styles(data["summary"])
    panels = list(table.groupby(["platform_id", "model"], sort=True))
    fig, axes = _grid(len(panels) + len(sensorless), sharey=True)
    _sensorless_panels(axes[len(panels) :], sensorless)
    for ax, ((platform, model), panel) in zip(axes, panels, strict=False):  # the grid may hold more axes
        for label, line in _by_label(panel, styles):
            line = line.sort_values("batch_size")
            colour, marker = styles[label]
            share = 100 * line["prefill_share_median"].astype(float).to_numpy()
            yerr = [
                share - 100 * line["prefill_share_ci_low"].astype(float).to_numpy(),
                100 * line["prefill_share_ci_high"].astype(float).to_numpy() - share,
            ]
            estimate = line["energy_is_estimate"].map(_is_true).any()
            ax.errorbar(
                line["batch_size"],
                share,
                yerr=yerr,
                color=colour,
                marker=marker,
                mfc="none" if estimate else colour,
                capsize=1.5,
                label=label,
            )
        _log2_batch_axis(ax, panel["batch_size"])
        ax.set_title(f"{model} · {platform}")
        ax.set_xlabel("Batch size")
        ax.set_ylabel("Prefill share of energy (%)")
    # after every panel is drawn: the shared limits then cover all of them (a negative share
    # from noise stays visible)
    low = min(0.0, 100 * float(table["prefill_share_ci_low"].astype(float).min()))
    axes[0].set_ylim(bottom=low)
    _legend(fig, axes[: len(panels)])
    _footnote(
        fig,
        [
            _estimate_note(table),
            "Decode's share is the remainder (100 − prefill). Error bars: order-statistic "
            "interval of the median (coverage in the table).",
        ],
    )
    return fig
