"""The LoRA adapter figure and table, from the `adapter_overhead` analysis (adapter_analysis.py).

Figure: one row of panels per backend, tokens/s on the left and J/token on the right, each
point a ratio of medians with its order-statistic interval (coverage bound in ci_coverage) (unmerged/base, merged/base,
unmerged/merged) per adapter and workload; a line at 1 is no overhead. Where no sensor read
the energy, the J/token panel says so instead of drawing an estimate. Registered in
figures.FIGURES and tables.TABLES under the name `adapter_overhead`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .adapter_analysis import COMPARISONS, METRICS, NO_SENSOR

Tables = Mapping[str, pd.DataFrame]
METRIC_TITLES = {"tokens_per_s": "Tokens/s ratio", "energy_j_per_output_token": "J/token ratio"}


def _label(row: pd.Series) -> str:
    return f"{row['model']} {row['quant']} {row['adapter']} b{int(row['batch_size'])} s{int(row['prompt_tokens'])}"


def adapter_overhead_figure(data: Tables):
    from .figures import style as base

    table = data.get("adapter_overhead")
    if table is None or table.empty:
        return base._message("No LoRA adapter was measured: add models.<m>.adapters to the study.")
    backends = sorted(table["backend"].astype(str).unique())
    fig, axes = base._grid(len(backends) * len(METRICS), max_cols=len(METRICS), width=base.PAGE_WIDTH_IN)
    notes = []
    for row_index, backend in enumerate(backends):
        part = table[table["backend"].astype(str) == backend]
        labels = sorted({_label(r) for _, r in part.iterrows()})
        for column, metric in enumerate(METRICS):
            ax = axes[row_index * len(METRICS) + column]
            cells = part[part["metric"] == metric]
            ax.set_title(f"{backend}: {METRIC_TITLES[metric]}")
            if not np.isfinite(pd.to_numeric(cells["ratio"], errors="coerce")).any():
                reason = NO_SENSOR if (cells["note"] == NO_SENSOR).any() else "no energy reading"
                sources = ", ".join(sorted({s for s in cells["energy_source"].dropna().astype(str)}))
                ax.axis("off")
                ax.text(
                    0.5, 0.5, f"{reason}\n({sources or 'no source'})", ha="center", va="center", wrap=True, fontsize=6
                )
                continue
            for offset, (comparison, _, _) in enumerate(COMPARISONS):
                points = cells[cells["comparison"] == comparison]
                y = [labels.index(_label(r)) + (offset - 1) * 0.22 for _, r in points.iterrows()]
                ratio = pd.to_numeric(points["ratio"], errors="coerce").to_numpy(float)
                low = pd.to_numeric(points["ci_low"], errors="coerce").to_numpy(float)
                high = pd.to_numeric(points["ci_high"], errors="coerce").to_numpy(float)
                error = np.vstack([np.nan_to_num(ratio - low), np.nan_to_num(high - ratio)])
                ax.errorbar(
                    ratio,
                    y,
                    xerr=error,
                    fmt=base.MARKERS[offset],
                    color=base.OKABE_ITO[offset],
                    label=comparison,
                    markersize=3,
                    capsize=2,
                    linewidth=0.8,
                )
            ax.axvline(1.0, color=base.GREY, linewidth=0.6, linestyle="--")
            ax.set_yticks(range(len(labels)), labels, fontsize=5)
            ax.set_xlabel("ratio of medians (95% CI)")
        merge = pd.to_numeric(part["adapter_merge_s"], errors="coerce").dropna()
        if len(merge):
            notes.append(f"{backend}: merge_and_unload took {merge.median():.3g} s (outside the measured windows).")
    drawn = [ax for ax in axes if ax.get_legend_handles_labels()[0]]
    if drawn:
        drawn[0].legend(fontsize=5, loc="best", frameon=False)
    base._footnote(fig, notes)
    fig.tight_layout()
    return fig


def adapter_overhead_table(data: Tables) -> pd.DataFrame:
    from .tables import _none, number, with_interval

    table = data.get("adapter_overhead")
    if table is None or table.empty:
        return _none("No LoRA adapter was measured.")
    rows = []
    keys = ["platform_id", "backend", "model", "quant", "adapter", "adapter_rank", "batch_size", "prompt_tokens"]
    for key, group in table.groupby(keys, sort=True, dropna=False):
        row = dict(
            zip(["platform", "backend", "model", "variant", "adapter", "rank", "batch", "prompt"], key, strict=True)
        )
        for comparison, _, _ in COMPARISONS:
            for metric, unit in (("tokens_per_s", "tok/s"), ("energy_j_per_output_token", "J/tok")):
                cell = group[(group["comparison"] == comparison) & (group["metric"] == metric)]
                if cell.empty:
                    text = "--"
                elif cell["note"].iloc[0] == NO_SENSOR:
                    text = "no sensor"
                else:
                    text = with_interval(cell["ratio"].iloc[0], cell["ci_low"].iloc[0], cell["ci_high"].iloc[0])
                row[f"{unit} {comparison}"] = text
        row["merge s"] = number(group["adapter_merge_s"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows).astype(str)
