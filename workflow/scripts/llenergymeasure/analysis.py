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
  `energy_analysis.py`. This module runs them all (`run_all`).
* Analyses needing two platforms return an empty table with their usual columns when the
  study holds one.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from . import adapter_analysis, cross_engine, findings, intervals, stats
from .fidelity import COLUMNS as FIDELITY_COLUMNS
from .energy_analysis import COLUMNS as ENERGY_COLUMNS
from .energy_analysis import energy_phase_shares, quantisation_energy_effect, sensor_energy_only
from .intervals import rank_correlations
from .rank_tests import COLUMNS as RANK_COLUMNS
from .rank_tests import (
    FLOPS_TOLERANCE, GROUP_KEYS, RANKED_METRICS, cohens_d, flops_rank_comparison,
    rank_agreement, rank_difference_tests,
)
from .ranking import HIGHER_IS_BETTER, cost_rank, metric_column, metric_values
from .ranking import cost as _cost
from .ranking import label as _label
from .ranking import platforms as _platforms
from .ranking import spearman as _spearman
from .ranking import usable as _usable
from .stats import CHOICE_KEYS, CONFIG_KEYS, WORKLOAD_KEYS, StatsInputError

log = logging.getLogger(__name__)

__all__ = ["HIGHER_IS_BETTER", "cohens_d", "cost_rank", "energy_phase_shares", "flops_rank_comparison",
           "metric_column", "metric_values", "quantisation_energy_effect", "rank_agreement",
           "rank_difference_tests"]
FAMILY_COLUMN = "model_family"
TWO_N_PROMPT_LENGTHS: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)

# Output name -> columns; run_all returns exactly these tables, in this order.
COLUMNS: dict[str, list[str]] = {
    "flops_ranks": RANK_COLUMNS["flops_ranks"],
    "flops_rank_agreement": RANK_COLUMNS["flops_rank_agreement"],
    "compound": [
        *GROUP_KEYS, *CHOICE_KEYS, "compound", "compound_rank", "reference", "metrics",
    ],
    "compound_stability": [
        *GROUP_KEYS, *CHOICE_KEYS, "n_trials_ranked", "rank_median", "rank_min", "rank_max",
        "rank_std", "group_trial_rho_mean",
    ],
    "ranking_transfer": [
        "platform_a", "platform_b", *WORKLOAD_KEYS, "metric", "n_configs", "spearman_rho",
        "spearman_ci_low", "spearman_ci_high", "ci_method", "kendall_tau",
    ],
    "pareto": [
        *GROUP_KEYS, *CHOICE_KEYS, "quality", "efficiency", "quality_metric",
        "efficiency_metric", "on_frontier", "weights", "energy_is_estimate",
    ],
    "pareto_transfer": [
        "source_platform", "target_platform", *WORKLOAD_KEYS, "n_common", "n_frontier_source",
        "n_frontier_target", "n_shared", "precision", "recall", "f1",
    ],
    "rank_difference_tests": RANK_COLUMNS["rank_difference_tests"],
    "family_transfer_error": [
        "platform_a", "platform_b", "metric", "family", "n_configs", "mean_abs_rank_shift",
        "normalised_rank_shift", "median_abs_log_error",
    ],
    "two_n_error": [
        "model", "family", "batch_size", "prompt_tokens", "output_tokens", "flops_total",
        "flops_2n_reference", "relative_error", "flops_confidence", "flops_2n_parameters",
    ],
    "quantisation_energy": ENERGY_COLUMNS["quantisation_energy"],
    "energy_phase_shares": ENERGY_COLUMNS["energy_phase_shares"],
    # cross-engine transfer on one platform (cross_engine.py), fidelity (fidelity.py), findings
    **cross_engine.COLUMNS,
    "fidelity": FIDELITY_COLUMNS,
    "findings": findings.COLUMNS,
}
COLUMNS["adapter_overhead"] = adapter_analysis.COLUMNS  # LoRA adapters (adapter_analysis.py)
ANALYSES: tuple[str, ...] = tuple(COLUMNS)


def _empty(name: str) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=object) for column in COLUMNS[name]})


def _frame(name: str, rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS[name]) if rows else _empty(name)


# 2. Compound efficiency ----------------------------------------------------------------


def _check_reference(summary: pd.DataFrame, reference: Mapping[str, str]) -> None:
    missing = [k for k in CHOICE_KEYS if k not in reference]
    if missing:
        raise StatsInputError(
            f"analysis.reference: missing {missing[0]!r}; give model, quant and backend"
        )
    matches = np.ones(len(summary), dtype=bool)
    for k in CHOICE_KEYS:
        matches &= (summary[k].astype(object) == reference[k]).to_numpy(dtype=bool)
    if len(summary) and not matches.any():
        known = sorted({_label(r) for _, r in summary.iterrows()})
        raise StatsInputError(
            f"analysis.reference: {_label(reference)} matches no configuration in the "
            f"summary; choose one of {', '.join(known)}"
        )


def _reference_row(group: pd.DataFrame, reference: Mapping[str, str]) -> pd.Series | None:
    mask = np.ones(len(group), dtype=bool)
    for k in CHOICE_KEYS:
        mask &= (group[k].astype(object) == reference[k]).to_numpy(dtype=bool)
    return group[mask].iloc[0] if mask.any() else None


def _geometric_mean_ratio(
    table: pd.DataFrame, reference: pd.Series, metrics: Sequence[str]
) -> np.ndarray:
    """Geometric mean over `metrics` of each row's cost ratio to `reference` (nan if any is)."""
    logs = []
    for metric in metrics:
        column = metric_column(table, metric)
        ref_value = pd.to_numeric(pd.Series([reference[column]]), errors="coerce").iloc[0]
        values = _cost(metric_values(table, metric), metric)
        ref_cost = _cost(np.array([ref_value], dtype=float), metric)[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            logs.append(np.log(values / ref_cost))
    stacked = np.vstack(logs)
    stacked[~np.isfinite(stacked)] = np.nan
    return np.exp(np.mean(stacked, axis=0))  # nan propagates: all metrics or none


def compound_efficiency(
    summary: pd.DataFrame, reference: Mapping[str, str], metrics: Sequence[str]
) -> pd.DataFrame:
    """Geometric mean of each configuration's cost ratios to the reference choice at the same
    platform and workload, over `metrics` (throughput inverted so that every ratio is a cost;
    below 1 is cheaper than the reference). Ranked within platform and workload; a workload
    where the reference has no successful trial gets nan."""
    if not metrics:
        raise StatsInputError("analysis.compound_metrics: empty; list at least one metric")
    usable = _usable(summary)
    _check_reference(usable, reference)
    for metric in metrics:
        metric_column(usable, metric)
    rows: list[dict] = []
    for key, group in usable.groupby(GROUP_KEYS, sort=True):
        ref = _reference_row(group, reference)
        compound = (
            _geometric_mean_ratio(group, ref, metrics) if ref is not None
            else np.full(len(group), np.nan)
        )
        ranks = np.full(len(group), np.nan)
        finite = np.isfinite(compound)
        ranks[finite] = scipy_stats.rankdata(compound[finite])
        for i, (_, config) in enumerate(group.iterrows()):
            rows.append({
                **dict(zip(GROUP_KEYS, key, strict=True)),
                **{k: config[k] for k in CHOICE_KEYS},
                "compound": float(compound[i]),
                "compound_rank": float(ranks[i]),
                "reference": _label(reference),
                "metrics": ",".join(metrics),
            })
    return _frame("compound", rows)


def compound_rank_stability(
    measurements: pd.DataFrame,
    summary: pd.DataFrame,
    reference: Mapping[str, str],
    metrics: Sequence[str],
) -> pd.DataFrame:
    """How stable the compound ranking is across repeated trials.

    Each trial's compound is the geometric mean of that trial's values over the reference
    choice's medians; configurations are ranked per trial index within platform and workload.
    Per configuration: the median, range and spread of its rank over trials; per group, the
    mean Spearman rho between every two trials' rankings (1 = the same order every trial).
    """
    stats.require_columns(measurements, [*CONFIG_KEYS, "trial", "status", *metrics], "measurements")
    usable = _usable(summary)
    _check_reference(usable, reference)
    ok = measurements[(measurements["status"].astype(object) == "ok").to_numpy(dtype=bool)]
    rows: list[dict] = []
    for key, group in ok.groupby(GROUP_KEYS, sort=True):
        summary_group = usable
        for column, value in zip(GROUP_KEYS, key, strict=True):
            summary_group = summary_group[summary_group[column] == value]
        ref = _reference_row(summary_group, reference)
        if ref is None:
            continue
        # measurements carry raw metric columns; align the reference's medians to their names
        ref_values = pd.Series({m: ref[metric_column(summary_group, m)] for m in metrics})
        trial_compound = group.assign(
            compound=_geometric_mean_ratio(group, ref_values, metrics)
        )
        trial_compound = trial_compound[np.isfinite(trial_compound["compound"])]
        trial_compound = trial_compound.assign(
            rank=trial_compound.groupby("trial")["compound"].rank(method="average")
        )
        ranks = trial_compound.pivot_table(
            index=CHOICE_KEYS, columns="trial", values="rank", aggfunc="first"
        )
        rhos = []
        for a, b in itertools.combinations(ranks.columns, 2):
            both = ranks[[a, b]].dropna()
            rho = _spearman(both[a].to_numpy(float), both[b].to_numpy(float))
            if np.isfinite(rho):
                rhos.append(rho)
        group_rho = float(np.mean(rhos)) if rhos else np.nan
        for choice, config_ranks in ranks.iterrows():
            present = config_ranks.dropna().to_numpy(float)
            rows.append({
                **dict(zip(GROUP_KEYS, key, strict=True)),
                **dict(zip(CHOICE_KEYS, choice, strict=True)),
                "n_trials_ranked": int(present.size),
                "rank_median": float(np.median(present)),
                "rank_min": float(present.min()),
                "rank_max": float(present.max()),
                "rank_std": float(np.std(present, ddof=1)) if present.size > 1 else np.nan,
                "group_trial_rho_mean": group_rho,
            })
    return _frame("compound_stability", rows)


# 3. Ranking transfer between platforms ---------------------------------------------------


def _platform_values(
    table: pd.DataFrame, platform: str, value_column: str
) -> pd.Series:
    """One platform's values indexed by the platform-free configuration key."""
    keys = [*CHOICE_KEYS, *WORKLOAD_KEYS]
    part = table[table["platform_id"].astype(object) == platform]
    values = pd.to_numeric(part[value_column], errors="coerce").astype(float)
    return pd.Series(values.to_numpy(), index=pd.MultiIndex.from_frame(part[keys])).dropna()


def _transfer_inputs(
    summary: pd.DataFrame, compound: pd.DataFrame | None, metrics: Sequence[str]
) -> list[tuple[str, pd.DataFrame, str]]:
    """(metric name, table, column) for each raw metric, plus the compound one if given."""
    usable = _usable(summary)
    inputs = [(m, usable, metric_column(usable, m)) for m in metrics]
    if compound is not None and len(compound):
        inputs.append(("compound", compound, "compound"))
    return inputs


def ranking_transfer(
    summary: pd.DataFrame,
    compound: pd.DataFrame | None = None,
    metrics: Sequence[str] = RANKED_METRICS,
) -> pd.DataFrame:
    """Spearman's rho (Bonett-Wright interval) and Kendall's tau-b between every two
    platforms' rankings of the configurations both measured, per workload and metric (and
    compound): pooling workloads would let batch-size effects pass for agreement."""
    platforms = _platforms(summary)
    rows: list[dict] = []
    for metric, table, column in _transfer_inputs(summary, compound, metrics):
        for a, b in itertools.combinations(platforms, 2):
            joined = pd.concat(
                [_platform_values(table, a, column), _platform_values(table, b, column)],
                axis=1, join="inner",
            ).dropna()
            workloads = joined.index.to_frame(index=False)[WORKLOAD_KEYS]
            for workload, positions in workloads.groupby(WORKLOAD_KEYS, sort=True).indices.items():
                part = joined.iloc[positions]
                x, y = part.iloc[:, 0].to_numpy(float), part.iloc[:, 1].to_numpy(float)
                correlations = rank_correlations(x, y)
                rows.append({
                    "platform_a": a, "platform_b": b,
                    **dict(zip(WORKLOAD_KEYS, workload, strict=True)),
                    "metric": metric, "n_configs": len(part), **correlations,
                    "ci_method": intervals.SPEARMAN_FISHER_Z
                    if np.isfinite(correlations["spearman_ci_low"]) else None,
                })
    return _frame("ranking_transfer", rows)


# 4. Pareto frontiers ------------------------------------------------------------------------


def pareto_mask(quality: np.ndarray, efficiency: np.ndarray) -> np.ndarray:
    """True for points no other point dominates, both coordinates minimised."""
    q = np.asarray(quality, dtype=float)
    e = np.asarray(efficiency, dtype=float)
    no_worse = (q[None, :] <= q[:, None]) & (e[None, :] <= e[:, None])  # [i, j]: j vs i
    better = (q[None, :] < q[:, None]) | (e[None, :] < e[:, None])
    return ~(no_worse & better).any(axis=1)


def _pareto_inputs(
    summary: pd.DataFrame, quality: str, efficiency: str
) -> pd.DataFrame:
    """Configurations with both values; none when the table has no column for either (a
    study without perplexities)."""
    usable = _usable(summary)
    if not all(f"{m}_median" in usable.columns or m in usable.columns for m in (quality, efficiency)):
        return usable.iloc[:0].assign(_quality=pd.Series(dtype=float), _efficiency=pd.Series(dtype=float))
    table = usable.assign(
        _quality=metric_values(usable, quality),
        _efficiency=_cost(metric_values(usable, efficiency), efficiency),
    )
    return table[np.isfinite(table["_quality"]) & np.isfinite(table["_efficiency"])]


def pareto_frontiers(
    summary: pd.DataFrame,
    quality: str = "perplexity",
    efficiency: str = "energy_j_per_output_token",
) -> pd.DataFrame:
    """Each platform's and workload's configurations with whether they lie on the frontier of
    `quality` (lower is better) against `efficiency` (a cost; throughput is inverted).
    Configurations without a quality or efficiency value are left out."""
    table = _pareto_inputs(summary, quality, efficiency)
    rows: list[dict] = []
    for key, group in table.groupby(GROUP_KEYS, sort=True):
        frontier = pareto_mask(group["_quality"].to_numpy(), group["_efficiency"].to_numpy())
        for i, (_, config) in enumerate(group.iterrows()):
            rows.append({
                **dict(zip(GROUP_KEYS, key, strict=True)),
                **{k: config[k] for k in CHOICE_KEYS},
                "quality": float(config["_quality"]),
                "efficiency": float(metric_values(group.iloc[[i]], efficiency)[0]),
                "quality_metric": quality,
                "efficiency_metric": efficiency,
                "on_frontier": bool(frontier[i]),
                "weights": config.get("weights"),
                "energy_is_estimate": config.get("energy_is_estimate"),
            })
    return _frame("pareto", rows)


def pareto_transfer(
    summary: pd.DataFrame,
    quality: str = "perplexity",
    efficiency: str = "energy_j_per_output_token",
) -> pd.DataFrame:
    """How well a source platform's frontier predicts a target platform's at each workload:
    both frontiers recomputed over the configurations the two share, then precision (share
    of the source frontier also on the target's), recall and F1."""
    table = _pareto_inputs(summary, quality, efficiency)
    platforms = _platforms(table) if len(table) else []
    rows: list[dict] = []
    for source, target in itertools.permutations(platforms, 2):
        for workload, group in table.groupby(WORKLOAD_KEYS, sort=True):
            src = group[group["platform_id"].astype(object) == source].set_index(CHOICE_KEYS)
            tgt = group[group["platform_id"].astype(object) == target].set_index(CHOICE_KEYS)
            common = src.index.intersection(tgt.index)
            if len(common) == 0:
                continue
            src, tgt = src.loc[common], tgt.loc[common]
            on_src = pareto_mask(src["_quality"].to_numpy(), src["_efficiency"].to_numpy())
            on_tgt = pareto_mask(tgt["_quality"].to_numpy(), tgt["_efficiency"].to_numpy())
            shared = int((on_src & on_tgt).sum())
            precision = shared / on_src.sum()
            recall = shared / on_tgt.sum()
            f1 = 2 * precision * recall / (precision + recall) if shared else 0.0
            rows.append({
                "source_platform": source, "target_platform": target,
                **dict(zip(WORKLOAD_KEYS, workload, strict=True)),
                "n_common": len(common), "n_frontier_source": int(on_src.sum()),
                "n_frontier_target": int(on_tgt.sum()), "n_shared": shared,
                "precision": float(precision), "recall": float(recall), "f1": float(f1),
            })
    return _frame("pareto_transfer", rows)


# 6. Transfer error per architecture family --------------------------------------------------


def families_of(summary: pd.DataFrame, families: Mapping[str, str] | None = None) -> pd.Series:
    """Each row's architecture family: the `model_family` column where the rows carry it,
    else `families[model]`, else the model name itself."""
    families = families or {}
    by_model = summary["model"].astype(object).map(lambda m: families.get(m, m))
    if FAMILY_COLUMN in summary.columns:
        return summary[FAMILY_COLUMN].astype(object).where(summary[FAMILY_COLUMN].notna(), by_model)
    return by_model


def family_transfer_error(
    summary: pd.DataFrame,
    families: Mapping[str, str] | None = None,
    metrics: Sequence[str] = RANKED_METRICS,
) -> pd.DataFrame:
    """Per pair of platforms, metric and architecture family: how far the family's
    configurations move between the two platforms' joint rankings (mean absolute shift, and
    that over the largest possible shift), and the median absolute log error of predicting
    the second platform's values from the first's scaled by their median ratio."""
    usable = _usable(summary)
    usable = usable.assign(_family=families_of(usable, families).to_numpy())
    keys = [*CHOICE_KEYS, *WORKLOAD_KEYS]
    rows: list[dict] = []
    for metric in metrics:
        column = metric_column(usable, metric)
        for a, b in itertools.combinations(_platforms(usable), 2):
            part_a = usable[usable["platform_id"].astype(object) == a].set_index(keys)
            part_b = usable[usable["platform_id"].astype(object) == b].set_index(keys)
            common = part_a.index.intersection(part_b.index)
            va = pd.to_numeric(part_a.loc[common, column]).to_numpy(float)
            vb = pd.to_numeric(part_b.loc[common, column]).to_numpy(float)
            keep = np.isfinite(va) & np.isfinite(vb) & (va > 0) & (vb > 0)
            if keep.sum() < 2:
                continue
            va, vb = va[keep], vb[keep]
            family = part_a.loc[common, "_family"].to_numpy(object)[keep]
            shift = np.abs(cost_rank(va, metric) - cost_rank(vb, metric))
            log_ratio = np.log(vb / va)
            log_error = np.abs(log_ratio - np.median(log_ratio))
            for name in sorted(set(family)):
                mine = family == name
                rows.append({
                    "platform_a": a, "platform_b": b, "metric": metric, "family": name,
                    "n_configs": int(mine.sum()),
                    "mean_abs_rank_shift": float(shift[mine].mean()),
                    "normalised_rank_shift": float(shift[mine].mean() / (va.size - 1)),
                    "median_abs_log_error": float(np.median(log_error[mine])),
                })
    return _frame("family_transfer_error", rows)


# 7. The 2N formula ---------------------------------------------------------------------------


def load_architectures(paths: Iterable[str | Path]) -> dict[str, dict]:
    """Architecture configs (Hugging Face config.json files) by file stem."""
    return {Path(p).stem: json.loads(Path(p).read_text()) for p in sorted(map(str, paths))}


def _max_positions(hf_config: Mapping[str, Any]) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        if hf_config.get(key):
            return int(hf_config[key])
    return None


def two_n_formula_error(
    architectures: Mapping[str, Mapping[str, Any]],
    prompt_lengths: Sequence[int] = TWO_N_PROMPT_LENGTHS,
    batch_size: int = 1,
    new_tokens: int = 32,
) -> pd.DataFrame:
    """The field's ``2 x non-embedding params x tokens`` estimate against the exact
    analytical count of `generate`, per architecture and prompt length (only lengths whose
    prompt plus new tokens fit the architecture's context). relative_error = (2N - exact) / exact.
    A count the engine refuses (`flops_confidence: unsupported`) has no error to report: its
    row keeps empty FLOPs and says so in `flops_confidence`."""
    if not architectures:
        return _empty("two_n_error")
    from .flops import count_generate

    rows: list[dict] = []
    for name, hf_config in sorted(architectures.items()):
        limit = _max_positions(hf_config)
        for prompt in prompt_lengths:
            if limit is not None and prompt + new_tokens > limit:
                continue
            counted = count_generate(dict(hf_config), batch_size, prompt, new_tokens)
            exact, estimate = counted.get("flops_total"), counted.get("flops_2n_reference")
            counted_ok = exact is not None and estimate is not None
            rows.append({
                "model": name, "family": hf_config.get("model_type", name),
                "batch_size": batch_size, "prompt_tokens": prompt, "output_tokens": new_tokens,
                "flops_total": float(exact) if counted_ok else None,
                "flops_2n_reference": float(estimate) if estimate is not None else None,
                "relative_error": (float(estimate) - float(exact)) / float(exact) if counted_ok else None,
                "flops_confidence": counted.get("confidence"),
                "flops_2n_parameters": counted.get("flops_2n_parameters"),
            })
    return _frame("two_n_error", rows)


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
    feeds the 2N-formula sweep at `new_tokens`; `families` (model -> family) is used where
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
        "two_n_error": two_n_formula_error(architectures or {}, new_tokens=new_tokens),
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
    from .io import write_parquet_atomic

    missing = [name for name in ANALYSES if name not in outputs]
    if missing:
        raise StatsInputError(f"outputs: no path for analysis {missing[0]!r}")
    measurements = pd.read_parquet(measurements_path)
    summary = pd.read_parquet(summary_path)
    results = run_all(
        measurements, summary, config_analysis,
        architectures=load_architectures(architecture_paths), families=families,
        new_tokens=new_tokens,
        fidelity=pd.read_parquet(fidelity_path) if fidelity_path else None,
    )
    for name, table in results.items():
        write_parquet_atomic(outputs[name], table)
    return results


def analysis_paths(directory: str) -> dict[str, str]:
    """Analysis name -> its Parquet under `directory` (the rules' outputs)."""
    return {name: f"{directory}/{name}.parquet" for name in ANALYSES}


def all_analysis_outputs() -> list[str]:
    """Every analysis Parquet of the pipeline (``results/analysis/``), for rule all."""
    return list(analysis_paths("results/analysis").values())


def shipped_analysis_config(manifest_path: str | Path, default: Mapping[str, Any]) -> dict[str, Any]:
    """The analysis section a shipped study was run with (its manifest's ``analysis``),
    else `default` (the current config's)."""
    path = Path(manifest_path)
    if path.exists():
        shipped = json.loads(path.read_text()).get("analysis")
        if shipped:
            return dict(shipped)
    return dict(default)
