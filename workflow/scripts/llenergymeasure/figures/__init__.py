"""The study's figures: one style, one registry, PDF and PNG for each.

Every figure function takes the study's tables (``measurements``, ``summary`` and the
analyses it reads, by name) and returns a matplotlib Figure. `outputs.FIGURES` names each
figure, its family (one report category each) and the analyses it reads; `FIGURES` here maps
the same names to (function, caption), the caption living in ``workflow/report/<name>.rst``
(also used by ``snakemake --report``). Figures draw from one platform or many; the style and
layout helpers are in `style`, the figures themselves one module per family (`cost`,
`flops_vs_measured`, `transfer`, `tradeoffs`, `engines`; the LoRA figure in `adapter_figures`). Energy figures draw sensor energy only (`energy_analysis.sensor_energy_only`);
a platform without a sensor gets a panel saying so instead of a proxy, unless the study opted
in to estimates, which are then drawn with open markers and named in a footnote.
Random-weight models' perplexities are greyed out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from .. import outputs
from ..adapter_figures import adapter_overhead_figure
from ..outputs import all_figure_outputs, caption, figure_paths
from . import engines
from .cost import (
    energy_phase_shares,
    energy_vs_batch,
    latency_vs_batch,
    quantisation_energy,
)
from .flops_vs_measured import (
    flops_rank_vs_measured,
    rank_difference_tests,
    two_n_error,
)
from .style import GREY, STYLE, Tables, plt
from .tradeoffs import compound_efficiency, pareto
from .transfer import family_transfer_error, ranking_transfer

log = logging.getLogger(__name__)

__all__ = [
    "FIGURES",
    "GREY",
    "STYLE",
    "all_figure_outputs",
    "caption",
    "compound_efficiency",
    "draw_files",
    "energy_phase_shares",
    "energy_vs_batch",
    "family_transfer_error",
    "figure_paths",
    "flops_rank_vs_measured",
    "latency_vs_batch",
    "load_study",
    "pareto",
    "plt",
    "quantisation_energy",
    "rank_difference_tests",
    "ranking_transfer",
    "render",
    "render_all",
    "two_n_error",
]

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
    "engine_transfer": engines.engine_transfer,
    "fidelity": engines.fidelity,
}
if set(_FUNCTIONS) != set(outputs.FIGURES):
    raise AssertionError(f"figures {sorted(_FUNCTIONS)} differ from outputs.FIGURES {sorted(outputs.FIGURES)}")
# name -> (function, caption), in the registry's order; the rules expand over these names.
FIGURES: dict[str, tuple[Callable[[Tables], Figure], str]] = {
    name: (_FUNCTIONS[name], caption(name)) for name in outputs.FIGURES
}


def render(name: str, data: Tables, pdf_path: str | Path, png_path: str | Path) -> None:
    """Draw figure `name` in the study style and save it as PDF and PNG."""
    function, _ = FIGURES[name]
    save_figure(lambda: function(data), pdf_path, png_path)
    log.info("figure %s -> %s, %s", name, pdf_path, png_path)


def save_figure(draw: Callable[[], Figure], pdf_path: str | Path, png_path: str | Path) -> None:
    """Draw a figure in the study style and save it as PDF and PNG (no creation date in the
    PDF, so the same data gives the same file); the figure is closed either way."""
    with plt.rc_context(STYLE):
        fig = draw()
        try:
            for path in (Path(pdf_path), Path(png_path)):
                path.parent.mkdir(parents=True, exist_ok=True)
                fig.savefig(
                    path,
                    metadata={"Creator": "llenergymeasure"}
                    if path.suffix == ".png"
                    else {"Creator": "llenergymeasure", "CreationDate": None},
                )
        finally:
            plt.close(fig)


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
    measurements_path: str | Path,
    summary_path: str | Path,
    analysis_paths: Mapping[str, str | Path],
    use_estimated_energy: bool = False,
) -> dict[str, object]:
    """The tables every figure and table function reads, by name, and whether the study
    opted in to estimated energy (``use_estimated_energy``, the config's analysis key).
    Base-model rows only: adapters are drawn from the adapter_overhead analysis."""
    from ..adapter_analysis import base_rows

    data: dict[str, object] = {
        "measurements": base_rows(pd.read_parquet(measurements_path)),
        "summary": base_rows(pd.read_parquet(summary_path)),
    }
    data.update({name: pd.read_parquet(path) for name, path in analysis_paths.items()})
    data["use_estimated_energy"] = bool(use_estimated_energy)
    return data


def draw_files(
    data: Tables,
    figure_outputs: Mapping[str, tuple[str, str]],
    table_outputs: Mapping[str, str],
    findings_markdown: str | Path | None = None,
) -> None:
    """Every figure to its (pdf, png) paths, every table to its .tex path, and the findings
    table also as Markdown."""
    from .. import findings, tables

    for name, (pdf, png) in figure_outputs.items():
        render(name, data, pdf, png)
    for name, path in table_outputs.items():
        tables.write(name, data, path)
    if findings_markdown is not None:
        findings.write_markdown(data, findings_markdown)
