"""The study style shared by every figure: colours, markers, sizes, rc parameters and the
layout helpers (panel grids, messages in place of empty figures, footnotes, legends, scales).

Energy figures draw sensor energy only (`energy_analysis.sensor_energy_only`); a platform
without a sensor gets a panel saying so instead of a proxy (`_sensorless_panels`), unless the
study opted in to estimates, which are then drawn with open markers and named in a footnote.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure

from ..tables import METRIC_LABELS
from ..variants import BACKEND_NAMES, VARIANTS

# Okabe & Ito (2008), "Color Universal Design": distinguishable under common colour-vision deficiencies.
# Yellow last: it is the hardest to see on white.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
GREY = "#999999"
COLUMN_WIDTH_IN = 3.3
PAGE_WIDTH_IN = 6.9
PANEL_HEIGHT_IN = 1.9
STYLE = {
    "font.size": 7,
    "axes.titlesize": 7,
    "axes.labelsize": 7,
    "legend.fontsize": 6,
    "xtick.labelsize": 6,
    "ytick.labelsize": 6,
    "lines.linewidth": 1.0,
    "lines.markersize": 3.5,
    "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.3,
    "grid.alpha": 0.5,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # embed TrueType: editable text, accepted by publishers
    "ps.fonttype": 42,
    "savefig.dpi": 300,
    "figure.constrained_layout.use": True,
}
SHORT_LABELS = {
    "energy_j_per_output_token": "Energy/token",
    "latency_s": "Latency",
    "tokens_per_s": "Tokens/s",
    "peak_memory_bytes": "Peak memory",
    "compound": "Compound",
}

Tables = Mapping[str, pd.DataFrame]
WORKLOAD_COLUMNS = ["batch_size", "prompt_tokens", "output_tokens"]


# Layout helpers -------------------------------------------------------------------------------


def _grid(
    n_panels: int,
    max_cols: int = 3,
    sharey: bool = False,
    width: float | None = None,
    panel_height: float | None = None,
) -> tuple[Figure, list[plt.Axes]]:
    """A figure of `n_panels` axes: column width for one panel, page width for more
    (or `width` inches); each row `PANEL_HEIGHT_IN` tall, or `panel_height` where taller."""
    n_panels = max(1, n_panels)
    cols = min(max_cols, n_panels)
    rows = int(np.ceil(n_panels / cols))
    width = width or (COLUMN_WIDTH_IN if cols == 1 else PAGE_WIDTH_IN)
    height = max(PANEL_HEIGHT_IN, panel_height or 0.0)
    fig, axes = plt.subplots(rows, cols, figsize=(width, height * rows + 0.4), squeeze=False, sharey=sharey)
    flat = list(axes.flat)
    for extra in flat[n_panels:]:
        extra.set_visible(False)
    return fig, flat[:n_panels]


def _message(text: str) -> Figure:
    """A column-width figure that says why there is nothing to draw."""
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def _sensorless_panels(axes: list[plt.Axes], sensorless: Mapping[str, str]) -> None:
    """One panel per platform without sensor energy, saying so (no proxy is drawn)."""
    for ax, (platform, sources) in zip(axes, sensorless.items(), strict=True):
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            textwrap.fill(
                f"{platform}: no sensor energy (source: {sources}). Estimates are not plotted; "
                "a study may opt in with analysis.use_estimated_energy: true.",
                40,
            ),
            ha="center",
            va="center",
            fontsize=6,
            transform=ax.transAxes,
        )


def _sensorless_message(what: str, sensorless: Mapping[str, str]) -> Figure:
    """Nothing to draw: one panel per platform without sensor energy, else `what`."""
    if not sensorless:
        return _message(what)
    fig, axes = _grid(len(sensorless))
    _sensorless_panels(axes, sensorless)
    return fig


def _footnote(fig: Figure, lines: Iterable[str]) -> None:
    """Small notes under the figure, wrapped to its width."""
    chars = int(fig.get_figwidth() * 22)  # about 22 characters per inch at 5.5 pt
    lines = [wrapped for line in lines if line for wrapped in textwrap.wrap(line, chars)]
    if lines:
        fig.supxlabel("\n".join(lines), fontsize=5.5, x=0.0, ha="left", color="#444444")


def _is_true(value) -> bool:
    return bool(value) if value is not None and not pd.isna(value) else False


def _estimate_note(frame: pd.DataFrame) -> str:
    """Footnote naming the energy sources that are estimates, if any."""
    if "energy_is_estimate" not in frame.columns:
        return ""
    estimated = frame[frame["energy_is_estimate"].map(_is_true)]
    if estimated.empty:
        return ""
    sources = ", ".join(sorted(estimated.get("energy_source", pd.Series(["estimate"])).dropna().astype(str).unique()))
    return f"Open markers: energy estimated ({sources}), not measured by a sensor."


def _estimated_platforms_note(summary: pd.DataFrame) -> str:
    """Footnote for figures without per-point markers: which platforms' energy is estimated."""
    if "energy_is_estimate" not in summary.columns:
        return ""
    estimated = summary[summary["energy_is_estimate"].map(_is_true)]
    if estimated.empty:
        return ""
    parts = [
        f"{platform} ({', '.join(sorted(group['energy_source'].dropna().astype(str).unique()))})"
        if "energy_source" in group
        else str(platform)
        for platform, group in estimated.groupby("platform_id", sort=True)
    ]
    return "Energy estimated, not measured by a sensor, on: " + "; ".join(parts) + "."


def _colour_map(labels: Iterable[str]) -> dict[str, tuple[str, str]]:
    """A stable (colour, marker) per label across panels."""
    return {
        label: (OKABE_ITO[i % len(OKABE_ITO)], MARKERS[(i // len(OKABE_ITO) + i) % len(MARKERS)])
        for i, label in enumerate(sorted(set(labels)))
    }


def _choice_styles(summary: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """(colour, marker) per "quant (backend)" label, the same in every figure of a study:
    colour by quantisation (catalogue order among those present), marker by backend."""
    present = set(summary["quant"].dropna().astype(str))
    quants = [q for q in VARIANTS if q in present] + sorted(present - set(VARIANTS))
    backends = sorted(
        set(summary["backend"].dropna().astype(str)),
        key=lambda b: (BACKEND_NAMES.index(b) if b in BACKEND_NAMES else 99, b),
    )
    return {
        f"{quant} ({backend})": (OKABE_ITO[i % len(OKABE_ITO)], MARKERS[j % len(MARKERS)])
        for i, quant in enumerate(quants)
        for j, backend in enumerate(backends)
    }


def _by_label(panel: pd.DataFrame, styles: Mapping[str, tuple[str, str]]):
    """(label, rows) of a panel in the styles' order, so legends follow the catalogue."""
    groups = dict(list(panel.groupby("label", sort=True)))
    order = [label for label in styles if label in groups] + sorted(set(groups) - set(styles))
    return [(label, groups[label]) for label in order]


def _choice_label(frame: pd.DataFrame) -> pd.Series:
    return frame["quant"].astype(str) + " (" + frame["backend"].astype(str) + ")"


def _ok(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[pd.to_numeric(summary["n_ok"]) > 0] if "n_ok" in summary else summary


def _legend(fig: Figure, axes: list[plt.Axes]) -> None:
    """One legend for the figure: inside a lone panel, else outside on the right."""
    if len(axes) == 1:
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend(loc="best")
        return
    handles, labels = {}, []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    if handles:
        fig.legend([handles[label] for label in labels], labels, loc="outside right upper")


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def _scale(ax: plt.Axes, values: Iterable[float], axis: str = "y") -> None:
    """Log scale with plain tick labels (1, 2, 5 per decade) when the values span more than a
    factor of three; linear otherwise (a log axis over a narrow range labels badly)."""
    values = np.asarray([v for v in values if np.isfinite(v) and v > 0], dtype=float)
    if values.size == 0 or values.max() / values.min() <= 3:
        return
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    low, high = values.min() / 1.1, values.max() * 1.1
    decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
    for mantissas in ((1, 2, 5), (1, 2, 3, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0**k for k in decades for m in mantissas if low <= m * 10.0**k <= high]
        if len(ticks) >= 3:
            break
    target.set_major_locator(ticker.FixedLocator(ticks))
    target.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_locator(ticker.NullLocator())


def _log2_batch_axis(ax: plt.Axes, batches: Iterable[int]) -> None:
    batches = sorted({int(b) for b in batches})
    if len(batches) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
