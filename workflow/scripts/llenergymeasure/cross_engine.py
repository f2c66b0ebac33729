"""Cross-engine transfer on one platform: do rankings made on one engine hold on another?

The LLM analogue of the seed paper's framework invariance (ONNX against PyTorch), asked of
the backends of one platform rather than of two platforms:

* **Items** are (model, variant) pairs. Two engines rarely load the same files (llama.cpp
  runs GGUF, vLLM no bitsandbytes), so variants are matched by what they are
  (`match_variants`): the same variant name on both engines is an *identical* match
  (none-float32 on pytorch, pytorch-compiled and vllm); the variants left over are paired
  within a *variant class* of the same stored weight precision (`VARIANT_CLASSES`: gguf-f16
  on llama.cpp ~ none-float16, else none-bfloat16, on pytorch; gguf-q8_0 ~ bnb-int8; gguf-q4_k_m ~
  bnb-nf4), the most alike first, each variant used once; last, unquantised variants still
  unpaired pair across float precisions (gguf-f16 ~ none-float32: `UNQUANTISED`). Every match
  says which it is (`engine_matches`), and each transfer row counts the matches by name and
  the others.
* **Rank correlation** per platform, workload and metric over the items both engines
  measured: Spearman's rho with the Bonett-Wright interval (`intervals.rank_correlations`,
  n >= 5) and Kendall's tau-b *without* an interval: the Fisher-z interval of tau covers
  only 86 % at n = 8 in the project's simulation (`intervals.rank_correlations`), so a
  "95 %" for tau would not be one.
* **Pareto transfer**: both engines' frontiers of fidelity (mean KL divergence of the
  variant's next-token distribution from its own float32 parent, `fidelity.py`; lower is
  better) against a cost metric, over the matched items, each engine's items at its own
  variant's fidelity and cost; precision is the share of engine a's frontier also on engine
  b's, recall the converse, F1 their harmonic mean. Without a fidelity table the transfer is
  empty.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from . import intervals
from .ranking import cost, frame, metric_column, usable
from .stats import WORKLOAD_KEYS

# quant -> (variant class, preference within it: 0 is the class's plainest member)
VARIANT_CLASSES: dict[str, tuple[str, int]] = {
    "none-float32": ("float32 weights", 0),
    "none-float16": ("16-bit float weights", 0),
    "gguf-f16": ("16-bit float weights", 0),
    "none-bfloat16": ("16-bit float weights", 1),
    "bnb-int8": ("8-bit weights", 0),
    "gguf-q8_0": ("8-bit weights", 0),
    "w8a8-int8": ("8-bit weights", 1),
    "bnb-nf4": ("4-bit weights", 0),
    "gguf-q4_k_m": ("4-bit weights", 0),
    "gptq-w4a16": ("4-bit weights", 1),
    "awq-w4a16": ("4-bit weights", 1),
    "bnb-fp4": ("4-bit weights", 2),
}
UNQUANTISED = frozenset({"none-float32", "none-float16", "none-bfloat16", "gguf-f16"})
UNQUANTISED_CLASS = "unquantised weights (float precision differs)"
IDENTICAL = "identical variant"
ENGINE_METRICS: list[str] = ["energy_j_per_output_token", "latency_s", "tokens_per_s", "peak_memory_bytes"]
PARETO_COSTS: list[str] = ["energy_j_per_output_token", "latency_s"]
FIDELITY_QUALITY = "fidelity_kl_mean"
KENDALL_NOTE = "no interval for tau: the Fisher-z interval covers about 86 % at n = 8 (intervals.rank_correlations)"

COLUMNS: dict[str, list[str]] = {
    "engine_matches": [
        "platform_id",
        "model",
        "backend_a",
        "quant_a",
        "backend_b",
        "quant_b",
        "match",
    ],
    "engine_transfer": [
        "platform_id",
        "backend_a",
        "backend_b",
        *WORKLOAD_KEYS,
        "metric",
        "n_items",
        "n_identical",
        "n_class_matched",
        "spearman_rho",
        "spearman_ci_low",
        "spearman_ci_high",
        "ci_method",
        "kendall_tau",
        "kendall_note",
        "matching",
    ],
    "engine_pareto_transfer": [
        "platform_id",
        "backend_a",
        "backend_b",
        *WORKLOAD_KEYS,
        "quality_metric",
        "efficiency_metric",
        "n_items",
        "n_frontier_a",
        "n_frontier_b",
        "n_shared",
        "precision",
        "recall",
        "f1",
    ],
}


def _class_of(quant: str) -> tuple[str, int]:
    return VARIANT_CLASSES.get(quant, (f"{quant} (unclassified)", 0))


def match_variants(quants_a: Sequence[str], quants_b: Sequence[str]) -> list[tuple[str, str, str]]:
    """(quant on a, quant on b, how matched) for one model on two engines: identical names
    first, then one pair per variant class among the rest, the lowest preference on each
    side (ties broken by name), then one pair of the unquantised variants left over.
    Unclassified variants match only identically."""
    shared = sorted(set(quants_a) & set(quants_b))
    pairs = [(q, q, IDENTICAL) for q in shared]
    rest_a = [q for q in quants_a if q not in shared and q in VARIANT_CLASSES]
    rest_b = [q for q in quants_b if q not in shared and q in VARIANT_CLASSES]
    for name in sorted({_class_of(q)[0] for q in rest_a} & {_class_of(q)[0] for q in rest_b}):
        best_a = min((q for q in rest_a if _class_of(q)[0] == name), key=lambda q: (_class_of(q)[1], q))
        best_b = min((q for q in rest_b if _class_of(q)[0] == name), key=lambda q: (_class_of(q)[1], q))
        pairs.append((best_a, best_b, f"same class: {name}"))
    paired_a, paired_b = {a for a, _, _ in pairs}, {b for _, b, _ in pairs}
    left_a = sorted(q for q in rest_a if q in UNQUANTISED and q not in paired_a)
    left_b = sorted(q for q in rest_b if q in UNQUANTISED and q not in paired_b)
    if left_a and left_b:
        best_a = min(left_a, key=lambda q: (_class_of(q)[1], q))
        best_b = min(left_b, key=lambda q: (_class_of(q)[1], q))
        pairs.append((best_a, best_b, f"same class: {UNQUANTISED_CLASS}"))
    return pairs


def _backends(table: pd.DataFrame) -> list[str]:
    return sorted(str(b) for b in table["backend"].dropna().unique())


def engine_matches(summary: pd.DataFrame) -> pd.DataFrame:
    """Every matched (model, variant) of every two engines of a platform, and how."""
    table = usable(summary)
    rows: list[dict] = []
    for platform, part in table.groupby("platform_id", sort=True):
        quants = part.groupby(["model", "backend"])["quant"].agg(lambda q: sorted(set(q))).to_dict()
        for a, b in itertools.combinations(_backends(part), 2):
            for model in sorted(part["model"].unique()):
                if (model, a) not in quants or (model, b) not in quants:
                    continue
                for quant_a, quant_b, how in match_variants(quants[(model, a)], quants[(model, b)]):
                    rows.append(
                        {
                            "platform_id": platform,
                            "model": model,
                            "backend_a": a,
                            "quant_a": quant_a,
                            "backend_b": b,
                            "quant_b": quant_b,
                            "match": how,
                        }
                    )
    return frame(COLUMNS["engine_matches"], rows)


def _paired(table: pd.DataFrame, matches: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per matched item and workload: the value on engine a (`value_a`) and on b (`value_b`)."""
    keys = ["platform_id", "model", "quant", "backend", *WORKLOAD_KEYS]
    values = table[keys].assign(_value=pd.to_numeric(table[column], errors="coerce").astype(float))
    side_a = values.rename(columns={"quant": "quant_a", "backend": "backend_a", "_value": "value_a"})
    side_b = values.rename(columns={"quant": "quant_b", "backend": "backend_b", "_value": "value_b"})
    paired = matches.merge(side_a, on=["platform_id", "model", "quant_a", "backend_a"])
    paired = paired.merge(side_b, on=["platform_id", "model", "quant_b", "backend_b", *WORKLOAD_KEYS])
    return paired[np.isfinite(paired["value_a"]) & np.isfinite(paired["value_b"])]


def _matching_note(group: pd.DataFrame) -> str:
    class_matched = group[group["match"] != IDENTICAL]
    if class_matched.empty:
        return "identical variants only"
    pairs = sorted({f"{r.quant_a}~{r.quant_b}" for r in class_matched.itertuples()})
    return f"{len(group) - len(class_matched)} identical; class-matched {', '.join(pairs)}"


def engine_transfer(
    summary: pd.DataFrame, matches: pd.DataFrame | None = None, metrics: Sequence[str] = ENGINE_METRICS
) -> pd.DataFrame:
    """Spearman (interval) and Kendall (no interval, `KENDALL_NOTE`) between every two
    engines' rankings of their matched items, per platform, workload and metric."""
    table = usable(summary)
    matches = engine_matches(summary) if matches is None else matches
    rows: list[dict] = []
    group_keys = ["platform_id", "backend_a", "backend_b", *WORKLOAD_KEYS]
    for metric in metrics:
        try:
            column = metric_column(table, metric)
        except ValueError:
            continue  # the study does not hold this metric
        paired = _paired(table, matches, column)
        for key, group in paired.groupby(group_keys, sort=True):
            correlations = intervals.rank_correlations(
                group["value_a"].to_numpy(float), group["value_b"].to_numpy(float)
            )
            n_identical = int((group["match"] == IDENTICAL).sum())
            rows.append(
                {
                    **dict(zip(group_keys, key, strict=True)),
                    "metric": metric,
                    "n_items": len(group),
                    "n_identical": n_identical,
                    "n_class_matched": len(group) - n_identical,
                    **correlations,
                    "ci_method": intervals.SPEARMAN_FISHER_Z if np.isfinite(correlations["spearman_ci_low"]) else None,
                    "kendall_note": KENDALL_NOTE if np.isfinite(correlations["kendall_tau"]) else None,
                    "matching": _matching_note(group),
                }
            )
    return frame(COLUMNS["engine_transfer"], rows)


def with_fidelity(summary: pd.DataFrame, fidelity: pd.DataFrame | None) -> pd.DataFrame:
    """`summary` with each (model, quant)'s fidelity columns joined on (empty where none)."""
    if fidelity is None or fidelity.empty:
        return summary.assign(**{FIDELITY_QUALITY: np.nan})
    keep = ["model", "quant", *[c for c in fidelity.columns if c.startswith("fidelity_")]]
    fidelity = fidelity[keep].drop_duplicates(["model", "quant"])
    drop = [c for c in keep[2:] if c in summary.columns]
    return summary.drop(columns=drop).merge(fidelity, on=["model", "quant"], how="left")


def engine_pareto_transfer(
    summary: pd.DataFrame,
    fidelity: pd.DataFrame | None,
    matches: pd.DataFrame | None = None,
    costs: Sequence[str] = PARETO_COSTS,
) -> pd.DataFrame:
    """Frontier of fidelity against each cost on engine a against that on engine b, over the
    items both measured with both values, per platform and workload (module docstring)."""
    from .analysis.pareto import pareto_mask  # analysis imports this module

    table = with_fidelity(usable(summary), fidelity)
    matches = engine_matches(summary) if matches is None else matches
    quality = _paired(table, matches, FIDELITY_QUALITY).rename(columns={"value_a": "quality_a", "value_b": "quality_b"})
    rows: list[dict] = []
    group_keys = ["platform_id", "backend_a", "backend_b", *WORKLOAD_KEYS]
    item_keys = [*group_keys, "model", "quant_a", "quant_b"]
    for metric in costs:
        try:
            column = metric_column(table, metric)
        except ValueError:
            continue
        both = quality.merge(_paired(table, matches, column)[[*item_keys, "value_a", "value_b"]], on=item_keys)
        for key, group in both.groupby(group_keys, sort=True):
            if len(group) < 2:
                continue
            on_a = pareto_mask(group["quality_a"].to_numpy(float), cost(group["value_a"].to_numpy(float), metric))
            on_b = pareto_mask(group["quality_b"].to_numpy(float), cost(group["value_b"].to_numpy(float), metric))
            shared = int((on_a & on_b).sum())
            precision, recall = shared / on_a.sum(), shared / on_b.sum()
            rows.append(
                {
                    **dict(zip(group_keys, key, strict=True)),
                    "quality_metric": FIDELITY_QUALITY,
                    "efficiency_metric": metric,
                    "n_items": len(group),
                    "n_frontier_a": int(on_a.sum()),
                    "n_frontier_b": int(on_b.sum()),
                    "n_shared": shared,
                    "precision": float(precision),
                    "recall": float(recall),
                    "f1": float(2 * precision * recall / (precision + recall)) if shared else 0.0,
                }
            )
    return frame(COLUMNS["engine_pareto_transfer"], rows)


def run(summary: pd.DataFrame, fidelity: pd.DataFrame | None) -> Mapping[str, pd.DataFrame]:
    """The three cross-engine tables, keyed by their `COLUMNS` names."""
    matches = engine_matches(summary)
    return {
        "engine_matches": matches,
        "engine_transfer": engine_transfer(summary, matches),
        "engine_pareto_transfer": engine_pareto_transfer(summary, fidelity, matches),
    }
