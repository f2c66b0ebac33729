"""Serving figures: latency and energy per token against request rate (or concurrency).

`serving_latency`: TTFT and inter-token latency (p50 solid, p90 dashed) per variant, one
point per load level (trials pooled as their mean). `serving_energy`: steady-state J per
output token with its spread over trials; where no row has energy it draws no points and
says "no sensor" with the recorded reason, so an empty axis is never mistaken for zero.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..figures import plt, save_figure
from ..outputs import SERVING_FIGURES

log = logging.getLogger(__name__)


def load_rows(paths: Iterable[str | Path]) -> Any:
    import pandas as pd

    frames = [pd.read_parquet(path) for path in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _x(rows: Any) -> tuple[str, str]:
    if rows["request_rate"].notna().any():
        return "request_rate", "request rate (requests/s, Poisson)"
    return "concurrency", "requests in flight (fixed concurrency)"


def _series(ok: Any, x: str, column: str) -> Iterable[tuple[str, Any]]:
    for (model, quant, backend), group in ok.groupby(["model", "quant", "backend"], sort=True):
        yield f"{model} {quant} ({backend})", group.groupby(x)[column].agg(["mean", "min", "max"]).sort_index()


def latency_figure(rows: Any) -> Any:
    ok = rows[rows.status == "ok"]
    x, label = _x(rows)
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8))
    for axis, metric, title in ((axes[0], "ttft", "time to first token"), (axes[1], "itl", "inter-token latency")):
        for index, (name, p50) in enumerate(_series(ok, x, f"{metric}_p50_s")):
            colour = f"C{index}"
            axis.plot(p50.index, p50["mean"] * 1e3, "o-", color=colour, label=f"{name} p50")
            p90 = dict(_series(ok, x, f"{metric}_p90_s"))[name]
            axis.plot(p90.index, p90["mean"] * 1e3, "s--", color=colour, label=f"{name} p90")
        axis.set_xlabel(label)
        axis.set_ylabel("ms")
        axis.set_title(title)
    axes[0].legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def energy_figure(rows: Any) -> Any:
    ok = rows[rows.status == "ok"]
    x, label = _x(rows)
    fig, axis = plt.subplots(figsize=(3.6, 2.8))
    measured = ok[ok.energy_j_per_output_token.notna()]
    for index, (name, series) in enumerate(_series(measured, x, "energy_j_per_output_token")):
        axis.errorbar(
            series.index,
            series["mean"],
            yerr=[series["mean"] - series["min"], series["max"] - series["mean"]],
            fmt="o-",
            color=f"C{index}",
            capsize=2,
            label=name,
        )
    if measured.empty:
        reasons = sorted(set(ok.energy_unavailable_reason.dropna())) or ["no row has energy"]
        axis.text(
            0.5,
            0.5,
            "no sensor: J/token unavailable\n\n" + "\n".join(textwrap.fill(r, 44) for r in reasons),
            transform=axis.transAxes,
            ha="center",
            va="center",
            fontsize="x-small",
        )
        levels = sorted(ok[x].dropna())
        if levels:
            axis.set_xlim(levels[0] * 0.8, levels[-1] * 1.2)
        axis.set_yticks([])
    else:
        axis.legend(fontsize="x-small")
    axis.set_xlabel(label)
    axis.set_ylabel("J per output token (steady state)")
    fig.tight_layout()
    return fig


FIGURES = {"serving_latency": latency_figure, "serving_energy": energy_figure}
if tuple(FIGURES) != SERVING_FIGURES:
    raise AssertionError(f"serving figures {tuple(FIGURES)} differ from outputs.SERVING_FIGURES {SERVING_FIGURES}")


def draw(rows: Any, outputs: dict[str, tuple[str | Path, str | Path]]) -> None:
    """Every serving figure as PDF and PNG: outputs maps name -> (pdf, png)."""
    for name, (pdf, png) in outputs.items():
        save_figure(lambda name=name: FIGURES[name](rows), pdf, png)
        log.info("figure %s -> %s, %s", name, pdf, png)
