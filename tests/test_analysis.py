"""The study's analyses on small hand-made tables whose answers are worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import study_tables
from scipy import stats as scipy_stats

from llenergymeasure import analysis, stats

MODELS = Path(__file__).resolve().parents[1] / "config" / "models"
REF = {"model": "m", "quant": "ref", "backend": "pt"}


def _summary(rows: list[dict]) -> pd.DataFrame:
    """Summary-shaped rows: keys default to one platform and workload, n_ok to 3."""
    defaults = {
        "platform_id": "p1",
        "model": "m",
        "backend": "pt",
        "batch_size": 1,
        "prompt_tokens": 64,
        "output_tokens": 32,
        "n_ok": 3,
    }
    return pd.DataFrame([defaults | row for row in rows])


def _trials(rows: list[dict]) -> pd.DataFrame:
    defaults = {
        "platform_id": "p1",
        "model": "m",
        "backend": "pt",
        "batch_size": 1,
        "prompt_tokens": 64,
        "output_tokens": 32,
        "status": "ok",
    }
    return pd.DataFrame([defaults | row for row in rows])


# 1. FLOPs against measurement ---------------------------------------------------------------


def _four(energy, tokens_per_s=(4.0, 3.0, 2.0, 1.0), flops=(1.0, 2.0, 3.0, 4.0)):
    return _summary(
        [
            {
                "quant": q,
                "flops_per_output_token": f,
                "energy_j_per_output_token_median": e,
                "latency_s_median": e,
                "tokens_per_s_median": t,
            }
            for q, f, e, t in zip("abcd", flops, energy, tokens_per_s, strict=True)
        ]
    )


def test_identical_rankings_agree_everywhere():
    ranks = analysis.flops_rank_comparison(_four([1.0, 2.0, 3.0, 4.0]))
    assert len(ranks) == 12  # 4 configurations x 3 metrics
    assert (ranks["flops_rank"] == ranks["measured_rank"]).all()  # tokens/s ranks descending
    agreement = analysis.rank_agreement(ranks)
    assert (agreement["n_disagreements"] == 0).all()
    assert agreement["spearman_rho"].tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_disagreements_of_two_positions_are_counted_and_listed():
    ranks = analysis.flops_rank_comparison(_four([4.0, 2.0, 3.0, 1.0]), metrics=["energy_j_per_output_token"])
    by_quant = ranks.set_index("quant")
    assert by_quant.loc["a", "rank_difference"] == 3.0 and by_quant.loc["a", "disagrees"]
    assert by_quant.loc["d", "rank_difference"] == -3.0 and by_quant.loc["d", "disagrees"]
    assert not by_quant.loc["b", "disagrees"] and not by_quant.loc["c", "disagrees"]
    row = analysis.rank_agreement(ranks).iloc[0]
    assert row["n_disagreements"] == 2
    assert row["disagreements"] == "m/a/pt (+3); m/d/pt (-3)"
    # rho of ranks (1,2,3,4) vs (4,2,3,1): 1 - 6*(9+0+0+9)/(4*15) = -0.8
    assert row["spearman_rho"] == pytest.approx(-0.8)


def test_tied_flops_get_average_ranks_and_one_position_is_not_a_disagreement():
    ranks = analysis.flops_rank_comparison(
        _four([1.0, 2.0, 3.0, 4.0], flops=(5.0, 5.0, 5.0, 5.0)), metrics=["latency_s"]
    )
    assert (ranks["flops_rank"] == 2.5).all()
    assert not ranks["disagrees"].any()
    assert math.isnan(analysis.rank_agreement(ranks).iloc[0]["spearman_rho"])


def test_workloads_and_platforms_are_ranked_apart_and_failed_configurations_skipped():
    table = pd.concat(
        [
            _four([1.0, 2.0, 3.0, 4.0]),
            _four([4.0, 3.0, 2.0, 1.0]).assign(batch_size=8),
            _four([1.0, 2.0, 3.0, 4.0]).assign(platform_id="p2", n_ok=[3, 3, 3, 0]),
        ]
    )
    agreement = analysis.rank_agreement(
        analysis.flops_rank_comparison(table, metrics=["energy_j_per_output_token"])
    ).set_index(["platform_id", "batch_size"])
    assert agreement.loc[("p1", 1), "n_disagreements"] == 0
    assert agreement.loc[("p1", 8), "n_disagreements"] == 2
    assert agreement.loc[("p2", 1), "n_configs"] == 3


# 2. Compound efficiency ---------------------------------------------------------------------


METRICS = ["flops_per_output_token", "latency_s", "peak_memory_bytes", "energy_j_per_output_token"]


def _compound_table(extra: dict | None = None) -> pd.DataFrame:
    return _summary(
        [
            {
                "quant": "ref",
                "flops_per_output_token": 100.0,
                "latency_s_median": 2.0,
                "peak_memory_bytes_median": 1000.0,
                "energy_j_per_output_token_median": 0.5,
                "tokens_per_s_median": 10.0,
            },
            {
                "quant": "b",
                "flops_per_output_token": 200.0,
                "latency_s_median": 1.0,
                "peak_memory_bytes_median": 4000.0,
                "energy_j_per_output_token_median": 0.5,
                "tokens_per_s_median": 20.0,
                **(extra or {}),
            },
        ]
    )


def test_compound_is_the_geometric_mean_of_ratios_to_the_reference():
    compound = analysis.compound_efficiency(_compound_table(), REF, METRICS).set_index("quant")
    assert compound.loc["ref", "compound"] == pytest.approx(1.0)
    # (2 * 0.5 * 4 * 1) ** (1/4) = sqrt(2)
    assert compound.loc["b", "compound"] == pytest.approx(math.sqrt(2.0))
    assert compound.loc["ref", "compound_rank"] == 1.0 and compound.loc["b", "compound_rank"] == 2.0


def test_throughput_enters_the_compound_as_a_cost():
    compound = analysis.compound_efficiency(
        _compound_table(), REF, ["tokens_per_s", "flops_per_output_token"]
    ).set_index("quant")
    assert compound.loc["b", "compound"] == pytest.approx(math.sqrt(0.5 * 2.0))


def test_missing_metric_value_makes_the_compound_empty_not_smaller():
    compound = analysis.compound_efficiency(
        _compound_table({"energy_j_per_output_token_median": np.nan}), REF, METRICS
    ).set_index("quant")
    assert math.isnan(compound.loc["b", "compound"])


def test_unknown_reference_is_named():
    with pytest.raises(stats.StatsInputError, match=r"analysis\.reference: m/nope/pt.*m/b/pt"):
        analysis.compound_efficiency(_compound_table(), REF | {"quant": "nope"}, METRICS)


def test_compound_rank_stability_over_trials():
    summary = _summary([{"quant": q, "latency_s_median": v} for q, v in (("ref", 1.0), ("b", 2.0), ("c", 3.0))])
    # per-trial latencies; trial 2 swaps ref and b
    values = {"ref": [1.0, 1.0, 2.5], "b": [2.0, 2.0, 1.5], "c": [3.0, 3.0, 3.0]}
    trials = _trials([{"quant": q, "trial": t, "latency_s": v[t]} for q, v in values.items() for t in range(3)])
    stability = analysis.compound_rank_stability(trials, summary, REF, ["latency_s"]).set_index("quant")
    assert stability.loc["c", "rank_min"] == stability.loc["c", "rank_max"] == 3.0
    assert (stability.loc["ref", "rank_min"], stability.loc["ref", "rank_max"]) == (1.0, 2.0)
    assert stability.loc["ref", "rank_median"] == 1.0
    # trial rankings (1,2,3), (1,2,3), (2,1,3): pairwise rho 1, 0.5, 0.5
    assert stability["group_trial_rho_mean"].iloc[0] == pytest.approx(2.0 / 3.0)


# 3. Ranking transfer -----------------------------------------------------------------------


def _two_platforms(values_p2: list[float]) -> pd.DataFrame:
    p1 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    return pd.concat(
        [
            _summary([{"quant": f"q{i}", "energy_j_per_output_token_median": v} for i, v in enumerate(p1)]),
            _summary(
                [
                    {"platform_id": "p2", "quant": f"q{i}", "energy_j_per_output_token_median": v}
                    for i, v in enumerate(values_p2)
                ]
            ),
        ]
    )


def test_identical_rankings_transfer_perfectly():
    transfer = analysis.ranking_transfer(
        _two_platforms([10.0, 20.0, 30.0, 40.0, 50.0, 60.0]), metrics=["energy_j_per_output_token"]
    ).iloc[0]
    assert (transfer["platform_a"], transfer["platform_b"], transfer["n_configs"]) == ("p1", "p2", 6)
    assert transfer["spearman_rho"] == pytest.approx(1.0)
    assert transfer["kendall_tau"] == pytest.approx(1.0)
    # a perfect order of six still admits doubt: the interval is not [1, 1], and it holds rho
    assert 0.3 < transfer["spearman_ci_low"] < 0.5 and transfer["spearman_ci_high"] == 1.0
    assert (transfer["batch_size"], transfer["ci_method"]) == (1, "fisher_z_bonett_wright")


def test_ranking_transfer_is_per_workload_not_pooled():
    """Batch 1 and batch 8 reverse each other's order on the second platform; pooled, the
    batch-size effect (batch 8 costs 10x) would pass for agreement."""
    base = _two_platforms([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    other = _two_platforms([60.0, 50.0, 40.0, 30.0, 20.0, 10.0]).assign(batch_size=8)
    other["energy_j_per_output_token_median"] *= 10.0
    rows = analysis.ranking_transfer(pd.concat([base, other]), metrics=["energy_j_per_output_token"])
    by_batch = rows.set_index("batch_size")["spearman_rho"]
    assert by_batch.loc[1] == pytest.approx(1.0) and by_batch.loc[8] == pytest.approx(-1.0)
    assert (rows["n_configs"] == 6).all()


def test_reversed_and_shuffled_rankings_match_scipy():
    reversed_ = analysis.ranking_transfer(
        _two_platforms([6.0, 5.0, 4.0, 3.0, 2.0, 1.0]), metrics=["energy_j_per_output_token"]
    ).iloc[0]
    assert reversed_["spearman_rho"] == pytest.approx(-1.0)
    assert reversed_["kendall_tau"] == pytest.approx(-1.0)
    shuffled = [2.0, 1.0, 6.0, 3.0, 5.0, 4.0]
    row = analysis.ranking_transfer(_two_platforms(shuffled), metrics=["energy_j_per_output_token"]).iloc[0]
    p1 = [1, 2, 3, 4, 5, 6]
    assert row["spearman_rho"] == pytest.approx(scipy_stats.spearmanr(p1, shuffled).statistic)
    assert row["kendall_tau"] == pytest.approx(scipy_stats.kendalltau(p1, shuffled).statistic)
    assert row["spearman_ci_low"] <= row["spearman_rho"] <= row["spearman_ci_high"]


def test_one_platform_gives_empty_transfer_tables_with_their_columns():
    trials, summary = study_tables.tables(("cpu-test",))
    results = analysis.run_all(trials, summary, study_tables.CONFIG_ANALYSIS)
    for name in ("ranking_transfer", "pareto_transfer", "family_transfer_error"):
        assert results[name].empty
        assert list(results[name].columns) == analysis.COLUMNS[name]


# 4. Pareto frontiers -------------------------------------------------------------------------


POINTS = {"A": (1.0, 5.0), "B": (2.0, 3.0), "C": (3.0, 1.0), "D": (3.0, 4.0), "E": (2.0, 3.0)}


def test_known_pareto_set():
    quality = np.array([q for q, _ in POINTS.values()])
    efficiency = np.array([e for _, e in POINTS.values()])
    mask = analysis.pareto_mask(quality, efficiency)
    assert {name for name, on in zip(POINTS, mask, strict=True) if on} == {"A", "B", "C", "E"}


def _pareto_table(platform: str, points: dict) -> pd.DataFrame:
    return _summary(
        [
            {
                "platform_id": platform,
                "quant": name,
                "perplexity": q,
                "energy_j_per_output_token_median": e,
                "weights": "trained",
            }
            for name, (q, e) in points.items()
        ]
    )


def test_pareto_frontiers_per_platform_and_transfer_scores():
    target = POINTS | {"B": (2.0, 6.0), "E": (9.0, 9.0)}  # B and E fall off on p2
    table = pd.concat([_pareto_table("p1", POINTS), _pareto_table("p2", target)])
    points = analysis.pareto_frontiers(table)
    on_p1 = set(points[(points["platform_id"] == "p1") & points["on_frontier"]]["quant"])
    on_p2 = set(points[(points["platform_id"] == "p2") & points["on_frontier"]]["quant"])
    assert on_p1 == {"A", "B", "C", "E"} and on_p2 == {"A", "C"}
    transfer = analysis.pareto_transfer(table).set_index("source_platform")
    assert transfer.loc["p1", "precision"] == pytest.approx(0.5)  # 2 of 4
    assert transfer.loc["p1", "recall"] == pytest.approx(1.0)
    assert transfer.loc["p1", "f1"] == pytest.approx(2 * 0.5 / 1.5)
    assert transfer.loc["p2", "precision"] == pytest.approx(1.0)


def test_pareto_leaves_out_configurations_without_quality():
    table = _pareto_table("p1", POINTS).assign(perplexity=[1.0, np.nan, 3.0, 3.0, 2.0])
    assert set(analysis.pareto_frontiers(table)["quant"]) == {"A", "C", "D", "E"}


# 5. Tests of difference --------------------------------------------------------------------


def test_cohens_d_of_known_samples():
    assert analysis.cohens_d(np.array([2.0, 4.0]), np.array([0.0, 2.0])) == pytest.approx(2 / math.sqrt(2))
    assert math.isnan(analysis.cohens_d(np.array([1.0]), np.array([1.0, 2.0])))


# 6. Transfer error per family -------------------------------------------------------------


def test_family_transfer_error_hand_computed():
    values = {"c1": (1.0, 2.0), "c2": (2.0, 4.0), "c3": (3.0, 8.0), "c4": (4.0, 6.0)}
    family = {"c1": "llama", "c2": "llama", "c3": "gpt2", "c4": "gpt2"}
    table = pd.concat(
        [
            _summary(
                [
                    {
                        "platform_id": p,
                        "model": name,
                        "quant": "q",
                        "model_family": family[name],
                        "energy_j_per_output_token_median": v[i],
                    }
                    for name, v in values.items()
                ]
            )
            for i, p in enumerate(("p1", "p2"))
        ]
    )
    error = analysis.family_transfer_error(table, metrics=["energy_j_per_output_token"]).set_index("family")
    assert error.loc["llama", "mean_abs_rank_shift"] == 0.0
    assert error.loc["gpt2", "mean_abs_rank_shift"] == 1.0  # c3 and c4 swap
    assert error.loc["gpt2", "normalised_rank_shift"] == pytest.approx(1 / 3)
    assert error.loc["llama", "median_abs_log_error"] == pytest.approx(0.0)
    assert error.loc["gpt2", "median_abs_log_error"] == pytest.approx(math.log(4 / 3))


def test_family_comes_from_the_column_then_the_map_then_the_model():
    table = _summary([{"model": "x", "quant": "q"}, {"model": "y", "quant": "q"}, {"model": "z", "quant": "q"}])
    table["model_family"] = ["llama", None, None]
    assert analysis.families_of(table, {"y": "gpt2"}).tolist() == ["llama", "gpt2", "z"]


# 7. 2N formula, quantisation, phases ----------------------------------------------------------


def test_two_n_error_follows_the_exact_count():
    flops = pytest.importorskip("llenergymeasure.flops")
    architectures = {
        "tiny-llama": json.loads((MODELS / "tiny-llama.json").read_text()),
        "tiny-gpt2": json.loads((MODELS / "tiny-gpt2.json").read_text()),
    }
    table = analysis.two_n_formula_error(architectures, prompt_lengths=(16, 128, 480, 1024), new_tokens=32)
    # the tiny models' context is 512 positions: 480 + 32 fits, 1024 does not
    assert set(table["prompt_tokens"]) == {16, 128, 480}
    assert set(table["model"]) == set(architectures)
    assert set(table["family"]) == {"llama", "gpt2"}
    for _, row in table.iterrows():
        counted = flops.count_generate(architectures[row["model"]], 1, int(row["prompt_tokens"]), 32)
        assert row["flops_total"] == counted["flops_total"]
        assert row["relative_error"] == pytest.approx(
            (counted["flops_2n_reference"] - counted["flops_total"]) / counted["flops_total"]
        )
        assert row["relative_error"] < 0  # 2N misses attention and the LM head on these shapes


def test_two_n_error_of_nothing_is_an_empty_table():
    assert list(analysis.two_n_formula_error({}).columns) == analysis.COLUMNS["two_n_error"]


def test_quantisation_energy_ratio_to_baseline():
    trials = _trials(
        [{"quant": "none-float32", "trial": t, "energy_j_per_output_token": 1.0} for t in range(3)]
        + [{"quant": "nf4", "trial": t, "energy_j_per_output_token": 2.0} for t in range(3)]
        + [
            {"quant": "none-float32", "batch_size": 4, "trial": t, "energy_j_per_output_token": v}
            for t, v in enumerate((0.5, 0.6, 0.4))
        ]
        + [{"quant": "nf4", "batch_size": 4, "trial": t, "energy_j_per_output_token": 0.25} for t in range(3)]
        + [{"quant": "int8", "platform_id": "p2", "trial": 0, "energy_j_per_output_token": 1.0}]
        # p3 has no energy reading at all (source unavailable): no ratio to report
        + [
            {"quant": q, "platform_id": "p3", "trial": 0, "energy_j_per_output_token": None}
            for q in ("none-float32", "nf4")
        ]
    )
    summary = stats.summarise(trials.assign(tokens_per_s=1.0, latency_s=1.0))
    effect = analysis.quantisation_energy_effect(trials, summary).set_index("batch_size")
    assert len(effect) == 2  # baselines excluded; p2 has no baseline; p3 no energy
    assert (effect.loc[1, "energy_ratio"], effect.loc[1, "ci_low"], effect.loc[1, "ci_high"]) == (2.0, 2.0, 2.0)
    assert effect.loc[4, "energy_ratio"] == pytest.approx(0.5)
    assert (effect.loc[4, "ci_low"], effect.loc[4, "ci_high"]) == pytest.approx((0.25 / 0.6, 0.25 / 0.4))
    assert effect.loc[4, "ci_coverage"] == pytest.approx(0.75**2)  # three trials on each side
    assert (effect["baseline_backend"] == "pt").all()


def test_quantisation_is_measured_against_the_same_backend():
    """gguf-f16 is llama.cpp's unquantised variant: it is the baseline of gguf-q8_0, never a
    "quantisation" of PyTorch float32 (the shipped study showed it as a 0.16 ratio)."""
    rows = []
    for quant, backend, energy in (
        ("none-float32", "pytorch", 1.0),
        ("bnb-nf4", "pytorch", 1.5),
        ("gguf-f16", "llamacpp", 0.2),
        ("gguf-q8_0", "llamacpp", 0.1),
    ):
        rows += [
            {"quant": quant, "backend": backend, "trial": t, "energy_j_per_output_token": energy} for t in range(5)
        ]
    trials = _trials(rows).assign(tokens_per_s=1.0, latency_s=1.0)
    effect = analysis.quantisation_energy_effect(trials, stats.summarise(trials)).set_index("quant")
    assert sorted(effect.index) == ["bnb-nf4", "gguf-q8_0"]
    assert effect.loc["gguf-q8_0", "baseline_quant"] == "gguf-f16"
    assert effect.loc["gguf-q8_0", "baseline_backend"] == "llamacpp"
    assert effect.loc["gguf-q8_0", "energy_ratio"] == pytest.approx(0.5)
    assert effect.loc["bnb-nf4", "baseline_quant"] == "none-float32"


def test_energy_phase_shares():
    trials = _trials(
        [
            {"quant": "a", "trial": t, "energy_prefill_j": 1.0, "energy_decode_j": 3.0, "energy_is_estimate": True}
            for t in range(3)
        ]
        + [{"quant": "a", "trial": 3, "energy_prefill_j": None, "energy_decode_j": 3.0, "energy_is_estimate": True}]
        + [
            {
                "quant": "b",
                "trial": 0,
                "status": "failed",
                "energy_prefill_j": None,
                "energy_decode_j": None,
                "energy_is_estimate": True,
            }
        ]
    )
    shares = analysis.energy_phase_shares(trials)
    assert shares["quant"].tolist() == ["a"]
    row = shares.iloc[0]
    assert row["n_trials"] == 3
    assert row["prefill_share_median"] == pytest.approx(0.25)
    assert row["decode_share_median"] == pytest.approx(0.75)
    assert row["energy_is_estimate"] is True or row["energy_is_estimate"] == True  # noqa: E712


# run_all ---------------------------------------------------------------------------------------


def test_run_all_on_two_platforms_fills_every_table():
    trials, summary = study_tables.tables(("cpu-test", "gpu-test"), failed_batch=None)
    opted_in = study_tables.CONFIG_ANALYSIS | {"use_estimated_energy": True}
    results = analysis.run_all(trials, summary, opted_in, families=study_tables.FAMILIES)
    assert tuple(results) == analysis.ANALYSES
    for name, table in results.items():
        assert list(table.columns) == analysis.COLUMNS[name], name
        # no architectures given; no adapters; the engines share no variant class; no fidelity table given
        if name not in (
            "two_n_error",
            "adapter_overhead",
            "engine_matches",
            "engine_transfer",
            "engine_pareto_transfer",
            "fidelity",
        ):
            assert len(table) > 0, name
    assert set(results["family_transfer_error"]["family"]) == {"llama", "gpt2"}
    # the synthetic GPU platform rewards quantisation, the CPU one penalises it
    quant = results["quantisation_energy"].set_index(["platform_id", "quant", "batch_size"])
    assert quant.loc[("cpu-test", "bnb-nf4", 1), "energy_ratio"] > 1
    assert quant.loc[("gpu-test", "bnb-nf4", 1), "energy_ratio"] < 1


def test_estimated_energy_enters_no_analysis_unless_the_study_opts_in():
    trials, summary = study_tables.tables(("cpu-test", "gpu-test"), failed_batch=None)
    results = analysis.run_all(trials, summary, study_tables.CONFIG_ANALYSIS, families=study_tables.FAMILIES)
    for name in ("quantisation_energy", "pareto", "energy_phase_shares"):
        assert set(results[name]["platform_id"]) == {"gpu-test"}, name
    assert results["pareto_transfer"].empty  # needs energy on both platforms
    assert results["compound"].set_index("platform_id").loc["cpu-test", "compound"].isna().all()
    energy_ranks = results["flops_ranks"][results["flops_ranks"]["metric"] == "energy_j_per_output_token"]
    assert set(energy_ranks["platform_id"]) == {"gpu-test"}
    transfer = results["ranking_transfer"]
    assert set(transfer["metric"]) == {"latency_s", "tokens_per_s"}  # energy: one side estimated


def test_run_all_survives_a_batch_size_where_every_trial_failed():
    trials, summary = study_tables.tables(("cpu-test",), batch_sizes=(1, 4, 64), failed_batch=64)
    results = analysis.run_all(trials, summary, study_tables.CONFIG_ANALYSIS)
    assert 64 not in set(results["compound"]["batch_size"])
    assert 64 not in set(results["energy_phase_shares"]["batch_size"])
