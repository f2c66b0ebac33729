"""The study's figures: one style, one registry, PDF and PNG for each.

Every figure function takes the study's tables (``measurements``, ``summary`` and every
analysis of `analysis.ANALYSES`, by name) and returns a matplotlib Figure. `FIGURES` maps a
figure's name to its function and caption; the caption lives in
``workflow/report/<name>.rst`` (also used by ``snakemake --report``). Figures draw from one
platform or many. Energy figures draw sensor energy only (`energy_analysis.sensor_energy_only`);
a platform without a sensor gets a panel saying so instead of a proxy, unless the study opted
in to estimates, which are then drawn with open markers and named in a footnote.
Random-weight models' perplexities are greyed out.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .adapter_figures import adapter_overhead_figure  # noqa: E402
from .energy_analysis import study_energy  # noqa: E402
from .tables import METRIC_LABELS  # noqa: E402
from .variants import BACKEND_NAMES, VARIANTS  # noqa: E402

log = logging.getLogger(__name__)

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
REPORT_DIR = Path(__file__).resolve().parents[2] / "report"
SHORT_LABELS = {"energy_j_per_output_token": "Energy/token", "latency_s": "Latency",
                "tokens_per_s": "Tokens/s", "compound": "Compound"}

Tables = Mapping[str, pd.DataFrame]
WORKLOAD_COLUMNS = ["batch_size", "prompt_tokens", "output_tokens"]


# Layout helpers -------------------------------------------------------------------------------


def _grid(
    n_panels: int, max_cols: int = 3, sharey: bool = False, width: float | None = None
) -> tuple[Figure, list[plt.Axes]]:
    """A figure of `n_panels` axes: column width for one panel, page width for more
    (or `width` inches)."""
    n_panels = max(1, n_panels)
    cols = min(max_cols, n_panels)
    rows = int(np.ceil(n_panels / cols))
    width = width or (COLUMN_WIDTH_IN if cols == 1 else PAGE_WIDTH_IN)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width, PANEL_HEIGHT_IN * rows + 0.4), squeeze=False, sharey=sharey
    )
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
        ax.text(0.5, 0.5, textwrap.fill(
            f"{platform}: no sensor energy (source: {sources}). Estimates are not plotted; "
            "a study may opt in with analysis.use_estimated_energy: true.", 40),
            ha="center", va="center", fontsize=6, transform=ax.transAxes)


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
        if "energy_source" in group else str(platform)
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
    backends = sorted(set(summary["backend"].dropna().astype(str)),
                      key=lambda b: (BACKEND_NAMES.index(b) if b in BACKEND_NAMES else 99, b))
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


# Figures ---------------------------------------------------------------------------------------


def _metric_vs_batch(summary: pd.DataFrame, metric: str, ylabel: str, log_y: bool = True,
                     sensorless: Mapping[str, str] | None = None) -> Figure:
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
    _sensorless_panels(axes[len(panels):], sensorless)
    for ax, ((platform, model), panel) in zip(axes, panels):
        for label, line in _by_label(panel, styles):
            line = line.sort_values("batch_size")
            colour, marker = styles[label]
            median = line[f"{metric}_median"].astype(float).to_numpy()
            low = line.get(f"{metric}_ci_low", line[f"{metric}_median"]).astype(float).to_numpy()
            high = line.get(f"{metric}_ci_high", line[f"{metric}_median"]).astype(float).to_numpy()
            estimate = line.get("energy_is_estimate", pd.Series([False])).map(_is_true).any()
            ax.errorbar(
                line["batch_size"], median, yerr=[median - low, high - median], color=colour,
                marker=marker, mfc="none" if (estimate and "energy" in metric) else colour,
                capsize=1.5, label=label,
            )
        _log2_batch_axis(ax, panel["batch_size"])
        if log_y:
            _scale(ax, [*panel[f"{metric}_median"].astype(float),
                        *panel.get(f"{metric}_ci_low", pd.Series(dtype=float)).astype(float),
                        *panel.get(f"{metric}_ci_high", pd.Series(dtype=float)).astype(float)])
        ax.set_title(f"{model} · {platform}")
        ax.set_xlabel("Batch size")
        ax.set_ylabel(ylabel)
    _legend(fig, axes[: len(panels)])
    _footnote(fig, [_estimate_note(data) if "energy" in metric else "",
                    "Error bars: order-statistic interval of the median (over trials, or over replicate "
                    "medians), exact coverage in the summary's ci_coverage."])
    return fig


def energy_vs_batch(data: Tables) -> Figure:
    summary, sensorless = study_energy(data)
    return _metric_vs_batch(summary, "energy_j_per_output_token", "Energy per output token (J)",
                            sensorless=sensorless)


def latency_vs_batch(data: Tables) -> Figure:
    return _metric_vs_batch(data["summary"], "latency_s", "End-to-end latency (s)")


def flops_rank_vs_measured(data: Tables) -> Figure:
    """FLOPs rank against measured rank per platform and metric; points two or more positions
    off the diagonal are the disagreements."""
    ranks = data["flops_ranks"]
    if ranks.empty:
        return _message("No configuration has both FLOPs and a measurement.")
    metric_names = {"energy_j_per_output_token": "energy/token", "latency_s": "latency",
                    "tokens_per_s": "tokens/s"}
    panels = list(ranks.groupby(["platform_id", "metric"], sort=True))
    fig, axes = _grid(len(panels))
    batch_styles = _colour_map(ranks["batch_size"].astype(int).map("{:04d}".format))
    for ax, ((platform, metric), panel) in zip(axes, panels, strict=True):
        top = float(max(panel["flops_rank"].max(), panel["measured_rank"].max())) + 0.5
        ax.fill_between([0.5, top], [0.5 - 2, top - 2], [0.5 + 2, top + 2], color="#EEEEEE",
                        zorder=0, lw=0)
        ax.plot([0.5, top], [0.5, top], color=GREY, lw=0.6, zorder=1)
        workloads = list(panel.groupby(WORKLOAD_COLUMNS, sort=True))
        for i, (workload, points) in enumerate(workloads):
            batch = workload[0]
            colour, marker = batch_styles[f"{int(batch):04d}"]
            off = points["disagrees"].astype(bool).to_numpy()
            x = points["flops_rank"].to_numpy(float) + 0.12 * (i - (len(workloads) - 1) / 2)
            y = points["measured_rank"].to_numpy(float)
            ax.scatter(x[~off], y[~off], color=colour, marker=marker, s=12,
                       label=f"batch {int(batch)}", zorder=2)
            ax.scatter(x[off], y[off], facecolor=colour, edgecolor="black", linewidth=0.8,
                       marker=marker, s=18, zorder=3)
        ax.set_xlim(0.5, top)
        ax.set_ylim(0.5, top)
        n_off = int(panel["disagrees"].astype(bool).sum())
        # two short lines: the platform, then the metric and its disagreement count
        ax.set_title(f"{platform}\n{metric_names.get(metric, metric)}: {n_off} off by ≥2", fontsize="small")
        ax.set_xlabel("Rank by FLOPs per output token")
        ax.set_ylabel("Rank by measurement")
    _legend(fig, axes)
    _footnote(fig, ["Rank 1 = cheapest; FLOPs within the tolerance (0.5 % by default) are one level at its "
                    "average rank; outlined points lie two or more positions outside their level's positions.",
                    _estimated_platforms_note(data["summary"])])
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
    groups = [(title, table[table["model"].isin(worst.index[select])])
              for title, select in (("", worst <= 100), ("error above 100%", worst > 100))]
    groups = [(title, part) for title, part in groups if not part.empty]
    styles = _colour_map(table["model"])
    fig, axes = plt.subplots(len(groups), 1, figsize=(COLUMN_WIDTH_IN, 1.6 + 1.2 * len(groups)),
                             squeeze=False, sharex=True, height_ratios=[3, 1][: len(groups)])
    axes = list(axes.flat)
    for ax, (title, part) in zip(axes, groups, strict=True):
        for model, line in part.groupby("model", sort=True):
            line = line.sort_values("prompt_tokens")
            colour, marker = styles[model]
            ax.plot(line["prompt_tokens"], line["percent"], color=colour, marker=marker,
                    label=f"{model} ({line['family'].iloc[0]})")
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


def quantisation_energy(data: Tables) -> Figure:
    """Energy per output token of each quantised variant over its model's baseline variant."""
    table = data["quantisation_energy"]
    _, sensorless = study_energy(data)
    if table.empty:
        return _sensorless_message("No quantised variant has its backend's unquantised variant "
                                   "measured beside it.", sensorless)
    table = table.assign(label=_choice_label(table))
    styles = _choice_styles(data["summary"])
    panels = list(table.groupby(["platform_id", "model"], sort=True))
    fig, axes = _grid(len(panels) + len(sensorless))
    _sensorless_panels(axes[len(panels):], sensorless)
    for ax, ((platform, model), panel) in zip(axes, panels):
        for label, line in _by_label(panel, styles):
            line = line.sort_values("batch_size")
            colour, marker = styles[label]
            ratio = line["energy_ratio"].astype(float).to_numpy()
            yerr = [ratio - line["ci_low"].astype(float).to_numpy(),
                    line["ci_high"].astype(float).to_numpy() - ratio]
            estimate = line["energy_is_estimate"].map(_is_true).any()
            ax.errorbar(line["batch_size"], ratio, yerr=yerr, color=colour, marker=marker,
                        mfc="none" if estimate else colour, capsize=1.5, label=label)
        ax.axhline(1.0, color=GREY, lw=0.6)
        _log2_batch_axis(ax, panel["batch_size"])
        _scale(ax, [*panel["ci_low"].astype(float), *panel["ci_high"].astype(float), 1.0])
        base = f"{panel['baseline_quant'].iloc[0]} ({panel['baseline_backend'].iloc[0]})"
        ax.set_title(f"{model} · {platform}")
        ax.set_xlabel("Batch size")
        ax.set_ylabel(f"Energy/token ÷ {base}")
    _legend(fig, axes[: len(panels)])
    _footnote(fig, [_estimate_note(table),
                    "Below 1: the variant spends less energy per token than its backend's unquantised "
                    "variant. Error bars: ratio of the medians' order-statistic intervals (coverage in the table)."])
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
    _sensorless_panels(axes[len(panels):], sensorless)
    for ax, ((platform, model), panel) in zip(axes, panels):
        for label, line in _by_label(panel, styles):
            line = line.sort_values("batch_size")
            colour, marker = styles[label]
            share = 100 * line["prefill_share_median"].astype(float).to_numpy()
            yerr = [share - 100 * line["prefill_share_ci_low"].astype(float).to_numpy(),
                    100 * line["prefill_share_ci_high"].astype(float).to_numpy() - share]
            estimate = line["energy_is_estimate"].map(_is_true).any()
            ax.errorbar(line["batch_size"], share, yerr=yerr, color=colour, marker=marker,
                        mfc="none" if estimate else colour, capsize=1.5, label=label)
        _log2_batch_axis(ax, panel["batch_size"])
        ax.set_title(f"{model} · {platform}")
        ax.set_xlabel("Batch size")
        ax.set_ylabel("Prefill share of energy (%)")
    # after every panel is drawn: the shared limits then cover all of them (a negative share
    # from noise stays visible)
    low = min(0.0, 100 * float(table["prefill_share_ci_low"].astype(float).min()))
    axes[0].set_ylim(bottom=low)
    _legend(fig, axes[: len(panels)])
    _footnote(fig, [_estimate_note(table),
                    "Decode's share is the remainder (100 − prefill). Error bars: order-statistic "
                    "interval of the median (coverage in the table)."])
    return fig


def ranking_transfer(data: Tables) -> Figure:
    """Spearman's rho (interval) and Kendall's tau between every two platforms' rankings,
    per workload and metric."""
    table = data["ranking_transfer"]
    platforms = sorted(data["summary"]["platform_id"].dropna().astype(str).unique())
    if table.empty:
        return _message(
            f"One platform in this study ({', '.join(platforms) or 'none'}): "
            "ranking transfer needs two."
        )
    pairs = list(table.groupby(["platform_a", "platform_b"], sort=True))
    fig, axes = _grid(len(pairs), max_cols=2, sharey=True)
    for ax, ((a, b), panel) in zip(axes, pairs, strict=True):
        panel = panel.sort_values(["metric", *WORKLOAD_COLUMNS])
        ticks = [f"{SHORT_LABELS.get(m, m)}\nb{int(batch)}" for m, batch in zip(panel["metric"], panel["batch_size"], strict=True)]
        x = np.arange(len(panel))
        rho = panel["spearman_rho"].astype(float).to_numpy()
        low = panel["spearman_ci_low"].astype(float).to_numpy()
        high = panel["spearman_ci_high"].astype(float).to_numpy()
        ax.errorbar(x - 0.12, rho, yerr=[rho - low, high - rho], fmt="o", color=OKABE_ITO[0],
                    capsize=1.5, label="Spearman ρ (95 % interval)")
        ax.scatter(x + 0.12, panel["kendall_tau"].astype(float), marker="s", color=OKABE_ITO[1], s=10,
                   label="Kendall τ")
        ax.axhline(0, color=GREY, lw=0.6)
        ax.set_xticks(x, ticks, fontsize=5)
        ax.set_ylim(-1.05, 1.05)
        n = int(panel["n_configs"].max())
        ax.set_title(f"{a} → {b} (up to {n} common configurations per workload)")
        ax.set_ylabel("Rank correlation")
    _legend(fig, axes)
    _footnote(fig, ["Per workload (b: batch size). Error bars: Bonett–Wright interval of Spearman's ρ.",
                    _estimated_platforms_note(data["summary"])])
    return fig


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
    _sensorless_panels(axes[len(panels):], sensorless)
    any_random = False
    for ax, ((platform, batch, prompt, output), panel) in zip(axes, panels):
        for _, point in panel.iterrows():
            random = str(point.get("weights")) == "random"
            any_random |= random
            colour, marker = styles[point["model"]]
            colour = GREY if random else colour
            estimate = _is_true(point.get("energy_is_estimate"))
            ax.scatter(point["efficiency"], point["quality"], marker=marker, s=14,
                       facecolor="none" if estimate else colour, edgecolor=colour, linewidth=0.8,
                       label=point["model"] + (" (random weights)" if random else ""), zorder=2)
        frontier = panel[panel["on_frontier"].astype(bool)].sort_values("efficiency")
        ax.scatter(frontier["efficiency"], frontier["quality"], s=40, facecolor="none",
                   edgecolor="black", linewidth=0.6, zorder=3)
        ax.step(frontier["efficiency"], frontier["quality"], where="post", color="black", lw=0.7,
                zorder=1, label="Pareto frontier")
        _scale(ax, panel["efficiency"].astype(float), axis="x")
        ax.set_title(f"{platform} · batch {int(batch)}, {int(prompt)}+{int(output)} tokens")
        ax.set_xlabel(_metric_label(panel["efficiency_metric"].iloc[0]))
        ax.set_ylabel("Perplexity (lower is better)")
    _legend(fig, axes[: len(panels)])
    _footnote(fig, [
        "Ringed points lie on the frontier. "
        + ("Grey: random-weight models; their perplexity measures nothing about quality." if any_random else ""),
        _estimate_note(table),
    ])
    return fig


def compound_efficiency(data: Tables) -> Figure:
    """The compound measure (geometric mean of cost ratios to the reference) per configuration,
    with each configuration's rank range over trials."""
    compound = data["compound"].dropna(subset=["compound"])
    if compound.empty:
        uses_energy = data["compound"]["metrics"].astype(str).str.contains("energy").any()
        return _sensorless_message("The compound measure is empty: the reference or a metric is missing.",
                                   study_energy(data)[1] if uses_energy else {})
    stability = data["compound_stability"]
    panels = list(compound.groupby("platform_id", sort=True))
    styles = _colour_map(compound["batch_size"].astype(int).map("{:04d}".format))
    fig, axes = _grid(len(panels), max_cols=2, width=PAGE_WIDTH_IN)  # long labels
    for ax, (platform, panel) in zip(axes, panels, strict=True):
        labels = sorted((panel["model"] + "/" + _choice_label(panel)).unique())
        y = {label: i for i, label in enumerate(labels)}
        for batch, points in panel.groupby("batch_size", sort=True):
            colour, marker = styles[f"{int(batch):04d}"]
            ax.scatter(points["compound"].astype(float),
                       (points["model"] + "/" + _choice_label(points)).map(y),
                       color=colour, marker=marker, s=12, label=f"batch {int(batch)}")
        ax.axvline(1.0, color=GREY, lw=0.6)
        _scale(ax, [*panel["compound"].astype(float), 1.0], axis="x")
        ax.set_yticks(range(len(labels)), labels)
        rho = stability[stability["platform_id"] == platform]["group_trial_rho_mean"]
        rho_text = f", trial-to-trial ρ {rho.mean():.2f}" if rho.notna().any() else ""
        ax.set_title(f"{platform}{rho_text}")
        ax.set_xlabel(f"Compound cost (× {panel['reference'].iloc[0]})")
    _legend(fig, axes)
    _footnote(fig, [f"Geometric mean of ratios over: {compound['metrics'].iloc[0].replace(',', ', ')}. "
                    "Below 1 is cheaper than the reference.", _estimated_platforms_note(data["summary"])])
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
                ax.annotate(f"p={p:.2g}", (xi, d), ha="center", va="bottom" if d >= 0 else "top",
                            fontsize=5)
    ax.axhline(0, color=GREY, lw=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xticks(np.arange(len(metrics)), [SHORT_LABELS.get(m, m) for m in metrics])
    ax.set_ylabel("Cliff's δ (FLOPs shift vs trial shift)")
    ax.set_title("Do FLOPs mis-rank beyond the measurement's own noise?")
    ax.legend()
    _footnote(fig, ["Above 0: configurations move further between FLOPs and measured ranks than single "
                    "trials move around the medians; p: one-sided Mann–Whitney U.",
                    _estimated_platforms_note(data["summary"])])
    return fig


def family_transfer_error(data: Tables) -> Figure:
    """Per architecture family: rank shift between platforms, over the largest possible shift."""
    table = data["family_transfer_error"]
    if table.empty:
        platforms = sorted(data["summary"]["platform_id"].dropna().astype(str).unique())
        return _message(
            f"One platform in this study ({', '.join(platforms) or 'none'}): "
            "transfer error needs two."
        )
    pairs = list(table.groupby(["platform_a", "platform_b"], sort=True))
    fig, axes = _grid(len(pairs), max_cols=2, sharey=True)
    for ax, ((a, b), panel) in zip(axes, pairs, strict=True):
        families = sorted(panel["family"].unique())
        metrics = sorted(panel["metric"].unique())
        width = 0.8 / len(metrics)
        for i, metric in enumerate(metrics):
            part = panel[panel["metric"] == metric].set_index("family").reindex(families)
            x = np.arange(len(families)) + (i - (len(metrics) - 1) / 2) * width
            ax.bar(x, part["normalised_rank_shift"].astype(float), width=width,
                   color=OKABE_ITO[i % 8], label=_metric_label(metric))
        ax.set_xticks(np.arange(len(families)), families)
        ax.set_ylim(0, 1)
        ax.set_title(f"{a} ↔ {b}")
        ax.set_ylabel("Mean rank shift / (n − 1)")
    _legend(fig, axes)
    _footnote(fig, [_estimated_platforms_note(data["summary"])])
    return fig


# Registry and rendering -------------------------------------------------------------------


def caption(name: str) -> str:
    """A figure's caption: the text of ``workflow/report/<name>.rst``."""
    path = REPORT_DIR / f"{name}.rst"
    if not path.exists():
        raise FileNotFoundError(f"figure {name!r}: caption file {path} is missing; write it")
    return path.read_text().strip()


from . import engine_figures  # noqa: E402  (it draws with the helpers above)

_FUNCTIONS: dict[str, Callable[[Tables], Figure]] = {
    "energy_vs_batch": energy_vs_batch,
    "latency_vs_batch": latency_vs_batch,
    "flops_rank_vs_measured": flops_rank_vs_measured,
    "two_n_error": two_n_error,
    "quantisation_energy": quantisation_energy,
    "energy_phase_shares": energy_phase_shares,
    "ranking_transfer": ranking_transfer,
    "pareto": pareto,
    "compound_efficiency": compound_efficiency,
    "rank_difference_tests": rank_difference_tests,
    "family_transfer_error": family_transfer_error,
    "adapter_overhead": adapter_overhead_figure,  # LoRA adapters (adapter_figures.py)
    "engine_transfer": engine_figures.engine_transfer,
    "fidelity": engine_figures.fidelity,
}
# name -> (function, caption); the rules expand over these names.
FIGURES: dict[str, tuple[Callable[[Tables], Figure], str]] = {
    name: (function, caption(name)) for name, function in _FUNCTIONS.items()
}


def render(name: str, data: Tables, pdf_path: str | Path, png_path: str | Path) -> None:
    """Draw figure `name` in the study style and save it as PDF and PNG."""
    function, _ = FIGURES[name]
    with plt.rc_context(STYLE):
        fig = function(data)
        try:
            for path in (Path(pdf_path), Path(png_path)):
                path.parent.mkdir(parents=True, exist_ok=True)
                fig.savefig(path, metadata={"Creator": "llenergymeasure"} if path.suffix == ".png"
                            else {"Creator": "llenergymeasure", "CreationDate": None})
        finally:
            plt.close(fig)
    log.info("figure %s -> %s, %s", name, pdf_path, png_path)


def render_all(data: Tables, directory: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Every registered figure (or `names`) as ``<directory>/<name>.pdf`` and ``.png``."""
    directory = Path(directory)
    written = []
    for name in names or FIGURES:
        pdf, png = directory / f"{name}.pdf", directory / f"{name}.png"
        render(name, data, pdf, png)
        written += [pdf, png]
    return written


def load_study(
    measurements_path: str | Path, summary_path: str | Path, analysis_paths: Mapping[str, str | Path],
    use_estimated_energy: bool = False,
) -> dict[str, object]:
    """The tables every figure and table function reads, by name, and whether the study
    opted in to estimated energy (``use_estimated_energy``, the config's analysis key).
    Base-model rows only: adapters are drawn from the adapter_overhead analysis."""
    from .adapter_analysis import base_rows

    data: dict[str, object] = {"measurements": base_rows(pd.read_parquet(measurements_path)),
                               "summary": base_rows(pd.read_parquet(summary_path))}
    data.update({name: pd.read_parquet(path) for name, path in analysis_paths.items()})
    data["use_estimated_energy"] = bool(use_estimated_energy)
    return data


def draw_files(
    data: Tables, figure_outputs: Mapping[str, tuple[str, str]], table_outputs: Mapping[str, str],
    findings_markdown: str | Path | None = None,
) -> None:
    """Every figure to its (pdf, png) paths, every table to its .tex path, and the findings
    table also as Markdown."""
    from . import findings, tables

    for name, (pdf, png) in figure_outputs.items():
        render(name, data, pdf, png)
    for name, path in table_outputs.items():
        tables.write(name, data, path)
    if findings_markdown is not None:
        findings.write_markdown(data, findings_markdown)


def figure_paths(directory: str) -> dict[str, str]:
    """Output key -> path of every figure (``<name>_pdf``, ``<name>_png`` under
    ``<directory>/figures/``) and table (``table_<name>`` under ``<directory>/tables/``)."""
    from .tables import TABLES

    paths = {}
    for name in FIGURES:
        paths[f"{name}_pdf"] = f"{directory}/figures/{name}.pdf"
        paths[f"{name}_png"] = f"{directory}/figures/{name}.png"
    for name in TABLES:
        paths[f"table_{name}"] = f"{directory}/tables/{name}.tex"
    paths["findings_md"] = f"{directory}/tables/findings.md"
    return paths


def all_figure_outputs() -> list[str]:
    """Every figure and table of the pipeline (``results/figures/``, ``results/tables/``)."""
    return list(figure_paths("results").values())
