"""The study's outputs by name: every analysis, figure and table, where each is written and
what each reads.

This is the one registry the rules import, so it imports nothing heavy (no pandas, numpy,
scipy or matplotlib): planning the DAG must not pay for drawing it. `analysis`, `figures`
and `tables` register their functions under these names and check, on import, that the
names agree.

Every output lives under a *root*: ``results`` for this run's study (its tables from rule
aggregate) and ``results/paper_figures`` for the shipped study in ``paper/data/`` (rule
paper_figures). Under a root: ``analysis/<name>.parquet``, ``figures/<name>.{pdf,png}``,
``tables/<name>.tex`` and ``tables/findings.md``. The same rules (analyse, figure,
latex_tables) build both roots; `SOURCES` says where each root's inputs come from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Analysis name -> one Parquet each, in the order `analysis.run_all` returns them.
ANALYSES: tuple[str, ...] = (
    "flops_ranks",
    "flops_rank_agreement",
    "compound",
    "compound_stability",
    "ranking_transfer",
    "pareto",
    "pareto_transfer",
    "rank_difference_tests",
    "family_transfer_error",
    "two_n_error",
    "quantisation_energy",
    "energy_phase_shares",
    "engine_matches",
    "engine_transfer",
    "engine_pareto_transfer",
    "fidelity",
    "findings",
    "adapter_overhead",
)

# Figure families: one `snakemake --report` category each.
MEASURED_COST = "Measured cost"
FLOPS_VS_MEASURED = "FLOPs against measurement"
TRANSFER = "Ranking transfer"
TRADE_OFFS = "Quality and efficiency trade-offs"
ADAPTERS = "LoRA adapters"


@dataclass(frozen=True)
class FigureSpec:
    """A figure's report category and the analyses it draws from (every figure also reads
    the aggregate tables, measurements and summary)."""

    family: str
    reads: tuple[str, ...] = ()


FIGURES: dict[str, FigureSpec] = {
    "energy_vs_batch": FigureSpec(MEASURED_COST),
    "latency_vs_batch": FigureSpec(MEASURED_COST),
    "quantisation_energy": FigureSpec(MEASURED_COST, ("quantisation_energy",)),
    "energy_phase_shares": FigureSpec(MEASURED_COST, ("energy_phase_shares",)),
    "flops_rank_vs_measured": FigureSpec(FLOPS_VS_MEASURED, ("flops_ranks",)),
    "two_n_error": FigureSpec(FLOPS_VS_MEASURED, ("two_n_error",)),
    "rank_difference_tests": FigureSpec(FLOPS_VS_MEASURED, ("rank_difference_tests",)),
    "ranking_transfer": FigureSpec(TRANSFER, ("ranking_transfer",)),
    "family_transfer_error": FigureSpec(TRANSFER, ("family_transfer_error",)),
    "engine_transfer": FigureSpec(TRANSFER, ("engine_transfer",)),
    "pareto": FigureSpec(TRADE_OFFS, ("pareto",)),
    "compound_efficiency": FigureSpec(TRADE_OFFS, ("compound", "compound_stability")),
    "fidelity": FigureSpec(TRADE_OFFS, ("fidelity",)),
    "adapter_overhead": FigureSpec(ADAPTERS, ("adapter_overhead",)),
}

# Scenario serving's figures (`serving.figures`, rule serving_figures), under results/figures/.
SERVING_FIGURES: tuple[str, ...] = ("serving_latency", "serving_energy")

# LaTeX table name -> the analyses it reads (besides measurements and summary).
TABLES: dict[str, tuple[str, ...]] = {
    "summary": (),
    "flops_rank_agreement": ("flops_rank_agreement",),
    "ranking_transfer": ("ranking_transfer",),
    "pareto_transfer": ("pareto_transfer",),
    "rank_difference_tests": ("rank_difference_tests",),
    "family_transfer_error": ("family_transfer_error",),
    "two_n_error": ("two_n_error",),
    "compound": ("compound", "compound_stability"),
    "quantisation_energy": ("quantisation_energy",),
    "adapter_overhead": ("adapter_overhead",),
    "engine_transfer": ("engine_transfer",),
    "findings": ("findings",),
}
# every analysis a table reads, in `ANALYSES` order (the findings Markdown reads findings)
TABLE_READS: tuple[str, ...] = tuple(name for name in ANALYSES if any(name in reads for reads in TABLES.values()))

REPORT_DIR = Path(__file__).resolve().parents[2] / "report"


def caption_path(name: str) -> Path:
    """Where figure `name`'s caption lives: ``workflow/report/<name>.rst``."""
    return REPORT_DIR / f"{name}.rst"


def caption(name: str) -> str:
    """A figure's caption: the text of ``workflow/report/<name>.rst``."""
    path = caption_path(name)
    if not path.exists():
        raise FileNotFoundError(f"figure {name!r}: caption file {path} is missing; write it")
    return path.read_text().strip()


# Roots and their sources -------------------------------------------------------------------

STUDY_ROOT = "results"
PAPER_ROOT = "results/paper_figures"


@dataclass(frozen=True)
class Source:
    """Where a root's inputs come from: the directory holding measurements.parquet,
    summary.parquet and fidelity.parquet, whether fidelity may be absent (older shipped
    studies have none), and the manifest whose ``analysis`` section the study was run
    with (None: the current config's)."""

    tables: str
    fidelity_optional: bool
    manifest: str | None = None


SOURCES: dict[str, Source] = {
    STUDY_ROOT: Source("results/aggregate", fidelity_optional=False),
    PAPER_ROOT: Source("paper/data", fidelity_optional=True, manifest="paper/data/manifest.json"),
}


def root_pattern() -> str:
    """The regular expression of the ``{root}`` wildcard: exactly the roots of `SOURCES`."""
    return "|".join(sorted(SOURCES, key=len, reverse=True))


def analysis_paths(directory: str) -> dict[str, str]:
    """Analysis name -> its Parquet under `directory` (``<root>/analysis``)."""
    return {name: f"{directory}/{name}.parquet" for name in ANALYSES}


def figure_files(root: str, name: str) -> tuple[str, str]:
    """(pdf, png) of figure `name` under `root`."""
    return f"{root}/figures/{name}.pdf", f"{root}/figures/{name}.png"


def table_paths(root: str) -> dict[str, str]:
    """Output key -> path of every LaTeX table (``table_<name>``) and the findings Markdown
    (``findings_md``) under ``<root>/tables/``."""
    paths = {f"table_{name}": f"{root}/tables/{name}.tex" for name in TABLES}
    paths["findings_md"] = f"{root}/tables/findings.md"
    return paths


def figure_paths(root: str) -> dict[str, str]:
    """Output key -> path of every figure (``<name>_pdf``, ``<name>_png`` under
    ``<root>/figures/``) and table (`table_paths`)."""
    paths = {}
    for name in FIGURES:
        paths[f"{name}_pdf"], paths[f"{name}_png"] = figure_files(root, name)
    return paths | table_paths(root)


def all_analysis_outputs(root: str = STUDY_ROOT) -> list[str]:
    """Every analysis Parquet under `root` (``results/analysis/`` by default), for rule all."""
    return list(analysis_paths(f"{root}/analysis").values())


def all_figure_outputs(root: str = STUDY_ROOT) -> list[str]:
    """Every figure and table under `root` (``results/figures/``, ``results/tables/``)."""
    return list(figure_paths(root).values())


def _shipped_section(manifest_path: str | Path, section: str) -> dict[str, Any]:
    """One section of a shipped study's manifest; empty where there is no manifest or section."""
    path = Path(manifest_path)
    return dict(json.loads(path.read_text()).get(section) or {}) if path.exists() else {}


def shipped_analysis_config(manifest_path: str | Path, default: Mapping[str, Any]) -> dict[str, Any]:
    """The analysis section a shipped study was run with (its manifest's ``analysis``),
    else `default` (the current config's)."""
    return _shipped_section(manifest_path, "analysis") or dict(default)


def shipped_new_tokens(manifest_path: str | Path, default: int) -> int:
    """The tokens per sequence a shipped study generated (its manifest's ``workload``), else
    `default` (the current config's): the 2N-formula sweep runs at the study's own length."""
    return int(_shipped_section(manifest_path, "workload").get("new_tokens") or default)


def study_new_tokens(root: str, default: int) -> int:
    """`shipped_new_tokens` for a shipped study under `root`, else `default`."""
    manifest = SOURCES[root].manifest
    return shipped_new_tokens(manifest, default) if manifest else int(default)


def analysis_settings(root: str, config_analysis: Mapping[str, Any]) -> dict[str, Any]:
    """The analysis section the study under `root` is analysed with: the shipped manifest's
    for a shipped study, else the config's."""
    manifest = SOURCES[root].manifest
    return shipped_analysis_config(manifest, config_analysis) if manifest else dict(config_analysis)


# the regular expression of the ``{figure}`` wildcard: exactly the registered figures
FIGURE_PATTERN = "|".join(sorted(FIGURES, key=len, reverse=True))
