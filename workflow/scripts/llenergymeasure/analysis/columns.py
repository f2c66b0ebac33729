"""The columns of every analysis table, by analysis name (`outputs.ANALYSES` order).

`run_all` returns exactly these tables; an analysis with nothing to report returns an empty
table with its usual columns.
"""

from __future__ import annotations

import pandas as pd

from .. import adapter_analysis, cross_engine, findings
from ..energy_analysis import COLUMNS as ENERGY_COLUMNS
from ..fidelity import COLUMNS as FIDELITY_COLUMNS
from ..outputs import ANALYSES
from ..rank_tests import COLUMNS as RANK_COLUMNS
from ..rank_tests import GROUP_KEYS
from ..stats import CHOICE_KEYS, WORKLOAD_KEYS

# Analysis name -> columns, in `outputs.ANALYSES` order.
COLUMNS: dict[str, list[str]] = {
    "flops_ranks": RANK_COLUMNS["flops_ranks"],
    "flops_rank_agreement": RANK_COLUMNS["flops_rank_agreement"],
    "compound": [
        *GROUP_KEYS,
        *CHOICE_KEYS,
        "compound",
        "compound_rank",
        "reference",
        "metrics",
    ],
    "compound_stability": [
        *GROUP_KEYS,
        *CHOICE_KEYS,
        "n_trials_ranked",
        "rank_median",
        "rank_min",
        "rank_max",
        "rank_std",
        "group_trial_rho_mean",
    ],
    "ranking_transfer": [
        "platform_a",
        "platform_b",
        *WORKLOAD_KEYS,
        "metric",
        "n_configs",
        "spearman_rho",
        "spearman_ci_low",
        "spearman_ci_high",
        "ci_method",
        "kendall_tau",
    ],
    "pareto": [
        *GROUP_KEYS,
        *CHOICE_KEYS,
        "quality",
        "efficiency",
        "quality_metric",
        "efficiency_metric",
        "on_frontier",
        "weights",
        "energy_is_estimate",
    ],
    "pareto_transfer": [
        "source_platform",
        "target_platform",
        *WORKLOAD_KEYS,
        "n_common",
        "n_frontier_source",
        "n_frontier_target",
        "n_shared",
        "precision",
        "recall",
        "f1",
    ],
    "rank_difference_tests": RANK_COLUMNS["rank_difference_tests"],
    "family_transfer_error": [
        "platform_a",
        "platform_b",
        "metric",
        "family",
        "n_configs",
        "mean_abs_rank_shift",
        "normalised_rank_shift",
        "median_abs_log_error",
    ],
    "two_n_error": [
        "model",
        "family",
        "batch_size",
        "prompt_tokens",
        "output_tokens",
        "flops_total",
        "flops_2n_reference",
        "relative_error",
        "flops_confidence",
        "flops_2n_parameters",
    ],
    "quantisation_energy": ENERGY_COLUMNS["quantisation_energy"],
    "energy_phase_shares": ENERGY_COLUMNS["energy_phase_shares"],
    # cross-engine transfer on one platform (cross_engine.py), fidelity (fidelity.py), findings
    **cross_engine.COLUMNS,
    "fidelity": FIDELITY_COLUMNS,
    "findings": findings.COLUMNS,
}
COLUMNS["adapter_overhead"] = adapter_analysis.COLUMNS  # LoRA adapters (adapter_analysis.py)
if tuple(COLUMNS) != ANALYSES:
    raise AssertionError(f"analysis COLUMNS {tuple(COLUMNS)} differ from outputs.ANALYSES {ANALYSES}")


def empty(name: str) -> pd.DataFrame:
    """Analysis `name`'s table with no rows."""
    return pd.DataFrame({column: pd.Series(dtype=object) for column in COLUMNS[name]})


def frame(name: str, rows: list[dict]) -> pd.DataFrame:
    """Analysis `name`'s table of `rows` (its usual columns when there are none)."""
    return pd.DataFrame(rows, columns=COLUMNS[name]) if rows else empty(name)
