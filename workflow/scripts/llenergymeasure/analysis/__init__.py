"""The study's analyses, each a function from the aggregate tables to one tidy DataFrame.

Inputs are the per-trial table (`measurements`, docs/ARCHITECTURE.md "Rows") and the
per-configuration summary made by `stats.summarise`. Conventions shared by all analyses:

* A *configuration* is an implementation choice (`CHOICE_KEYS`: model, quant, backend) run
  at a *workload* (`WORKLOAD_KEYS`: batch size, prompt and output tokens) on a platform.
* Within one platform, choices are compared at the same workload (the FLOPs ranks, the
  compound measure, Pareto frontiers). Across platforms, ranking transfer compares the
  configurations both platforms measured at each workload; the family transfer error ranks
  every common configuration jointly, so it also sees batch-size effects.
* Ranks and metric columns follow `ranking.py`; FLOPs against measurement lives in
  `rank_tests.py`, the energy analyses (and which energy may enter any analysis) in
  `energy_analysis.py`. The numbered sections live in this package's modules (`compound`,
  `transfer`, `pareto`, `two_n`, columns in `columns`); this module runs them all (`run_all`).
* Analyses needing two platforms return an empty table with their usual columns when the
  study holds one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .. import adapter_analysis, cross_engine, findings
from ..energy_analysis import (
    energy_phase_shares,
    quantisation_energy_effect,
    sensor_energy_only,
)
from ..outputs import (
    ANALYSES,
    all_analysis_outputs,
    analysis_paths,
    shipped_analysis_config,
)
from ..rank_tests import (
    FLOPS_TOLERANCE,
    cohens_d,
    flops_rank_comparison,
    rank_agreement,
    rank_difference_tests,
)
from ..ranking import HIGHER_IS_BETTER, cost_rank, metric_column, metric_values
from ..stats import StatsInputError
from .columns import COLUMNS
from .columns import frame as _frame
from .compound import compound_efficiency, compound_rank_stability
from .pareto import pareto_frontiers, pareto_mask, pareto_transfer
from .transfer import (
    FAMILY_COLUMN,
    families_of,
    family_transfer_error,
    ranking_transfer,
)
from .two_n import TWO_N_PROMPT_LENGTHS, load_architectures, two_n_formula_error

log = logging.getLogger(__name__)

__all__ = [
    "ANALYSES",
    "COLUMNS",
    "FAMILY_COLUMN",
    "HIGHER_IS_BETTER",
    "TWO_N_PROMPT_LENGTHS",
    "all_analysis_outputs",
    "analyse_files",
    "analysis_paths",
    "cohens_d",
    "compound_efficiency",
    "compound_rank_stability",
    "cost_rank",
    "energy_phase_shares",
    "families_from_config",
    "families_of",
    "family_transfer_error",
    "flops_rank_comparison",
    "load_architectures",
    "metric_column",
    "metric_values",
    "pareto_frontiers",
    "pareto_mask",
    "pareto_transfer",
    "quantisation_energy_effect",
    "rank_agreement",
    "rank_difference_tests",
    "ranking_transfer",
    "run_all",
    "shipped_analysis_config",
    "two_n_formula_error",
]


# Everything, for the analyse and paper_figures rules -----------------------------------------


def run_all(
    measurements: pd.DataFrame,
    summary: pd.DataFrame,
    config_analysis: Mapping[str, Any],
    *,
    architectures: Mapping[str, Mapping[str, Any]] | None = None,
    families: Mapping[str, str] | None = None,
    new_tokens: int = 32,
    fidelity: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Every analysis, keyed by `ANALYSES` names.

    `config_analysis` is the config's ``analysis`` section: ``reference``,
    ``compound_metrics``, ``flops_tolerance`` (default 0.005) and ``use_estimated_energy``
    (default false: every energy number without a sensor behind it is emptied first,
    `energy_analysis.sensor_energy_only`). `architectures` (name -> Hugging Face config)
    names the families, and those named as a measured model feed the 2N-formula sweep at
    `new_tokens` (the study's own architectures: each count is traced, ~2 s apiece); `families` (model -> family) is used where
    the rows carry no ``model_family``. `fidelity` (rule fidelity_table) feeds the fidelity
    axis of the cross-engine Pareto transfer; without it that transfer is empty.
    """
    overhead = adapter_analysis.adapter_overhead(measurements)
    # the implementation-choice analyses compare base models; adapters have their own
    measurements, summary = adapter_analysis.base_rows(measurements), adapter_analysis.base_rows(summary)
    reference = config_analysis["reference"]
    metrics = list(config_analysis["compound_metrics"])
    tolerance = float(config_analysis.get("flops_tolerance", FLOPS_TOLERANCE))
    use_estimated = bool(config_analysis.get("use_estimated_energy", False))
    measurements = sensor_energy_only(measurements, use_estimated)
    summary = sensor_energy_only(summary, use_estimated)
    families = dict(families or {})
    if architectures:
        families = {name: cfg.get("model_type", name) for name, cfg in architectures.items()} | families
    flops_ranks = flops_rank_comparison(summary, tolerance=tolerance)
    compound = compound_efficiency(summary, reference, metrics)
    results = {
        "flops_ranks": flops_ranks,
        "flops_rank_agreement": rank_agreement(flops_ranks),
        "compound": compound,
        "compound_stability": compound_rank_stability(measurements, summary, reference, metrics),
        "ranking_transfer": ranking_transfer(summary, compound),
        "pareto": pareto_frontiers(summary),
        "pareto_transfer": pareto_transfer(summary),
        "rank_difference_tests": rank_difference_tests(measurements, summary, tolerance=tolerance),
        "family_transfer_error": family_transfer_error(summary, families),
        "two_n_error": two_n_formula_error(_measured(architectures, measurements), new_tokens=new_tokens),
        "quantisation_energy": quantisation_energy_effect(measurements, summary),
        "energy_phase_shares": energy_phase_shares(measurements),
        **cross_engine.run(summary, fidelity),
        "fidelity": _frame("fidelity", []) if fidelity is None else fidelity.reindex(columns=COLUMNS["fidelity"]),
    }
    results["findings"] = findings.build(results, measurements, summary)
    results["adapter_overhead"] = overhead
    assert tuple(results) == ANALYSES
    for name, table in results.items():
        log.info("analysis %s: %d rows", name, len(table))
    return results


def _measured(architectures: Mapping[str, Mapping[str, Any]] | None, measurements: pd.DataFrame) -> dict:
    """The architectures named as a model of the measurements (the study's own)."""
    models = set(measurements["model"]) if "model" in measurements else set()
    return {name: config for name, config in (architectures or {}).items() if name in models}


def families_from_config(models: Mapping[str, Mapping[str, Any]], root: str | Path) -> dict[str, str]:
    """Model name -> architecture family (the ``model_type`` of its architecture config),
    for the config's models that name an architecture file under `root`."""
    families = {}
    for name, entry in models.items():
        path = entry.get("architecture")
        if path and (Path(root) / path).is_file():
            families[name] = json.loads((Path(root) / path).read_text()).get("model_type", name)
    return families


def analyse_files(
    measurements_path: str | Path,
    summary_path: str | Path,
    outputs: Mapping[str, str | Path],
    config_analysis: Mapping[str, Any],
    architecture_paths: Iterable[str | Path] = (),
    families: Mapping[str, str] | None = None,
    new_tokens: int = 32,
    fidelity_path: str | Path | None = None,
) -> dict[str, pd.DataFrame]:
    """Read the aggregate tables (and the fidelity table, where there is one), run every
    analysis and write each to ``outputs[name]`` (Parquet, atomically). Returns the results."""
    from ..io import write_parquet_atomic

    missing = [name for name in ANALYSES if name not in outputs]
    if missing:
        raise StatsInputError(f"outputs: no path for analysis {missing[0]!r}")
    measurements = pd.read_parquet(measurements_path)
    summary = pd.read_parquet(summary_path)
    results = run_all(
        measurements,
        summary,
        config_analysis,
        architectures=load_architectures(architecture_paths),
        families=families,
        new_tokens=new_tokens,
        fidelity=pd.read_parquet(fidelity_path) if fidelity_path else None,
    )
    for name, table in results.items():
        write_parquet_atomic(outputs[name], table)
    return results
