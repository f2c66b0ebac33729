"""Summary statistics: known answers on hand-made trial tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llenergymeasure import intervals, stats


def _trials(energy: list[float | None], status: list[str] | None = None, **keys) -> pd.DataFrame:
    """Trials of one configuration; latency and tokens/s derived from energy for variety."""
    n = len(energy)
    status = status or ["ok"] * n
    base = {
        "platform_id": "cpu-test",
        "model": "tiny-llama",
        "quant": "none-float32",
        "backend": "pytorch",
        "batch_size": 1,
        "prompt_tokens": 64,
        "output_tokens": 32,
    } | keys
    table = pd.DataFrame(
        {
            **{key: [value] * n for key, value in base.items()},
            "trial": range(n),
            "status": status,
            "error": [None if s == "ok" else "CUDA out of memory" for s in status],
            "energy_j_per_output_token": energy,
            "latency_s": [None if e is None else 2.0 * e for e in energy],
            "tokens_per_s": [None if e is None else 10.0 / e for e in energy],
            "ttft_s": [None if e is None else 0.1 for e in energy],
            "energy_prefill_j": [None if e is None else 1.0 + i for i, e in enumerate(energy)],
            "energy_decode_j": [None if e is None else 5.0 for e in energy],
            "dtype": "float32",
            "energy_source": "estimate-cpu-tdp",
            "energy_is_estimate": True,
            "weights": "random",
            "flops_total": 1.5e9,
            "flops_2n_reference": 1.4e9,
        }
    )
    return table


def test_known_statistics_of_one_configuration():
    summary = stats.summarise(_trials([1.0, 2.0, 3.0, 4.0, 10.0]))
    assert len(summary) == 1
    row = summary.iloc[0]
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    assert row["energy_j_per_output_token_median"] == 3.0
    assert row["energy_j_per_output_token_mean"] == 4.0
    assert row["energy_j_per_output_token_std"] == pytest.approx(np.std(values, ddof=1))
    assert row["energy_j_per_output_token_cv"] == pytest.approx(np.std(values, ddof=1) / 4.0)
    assert row["latency_s_median"] == 6.0
    assert row["energy_prefill_j_median"] == 3.0  # 1, 2, 3, 4, 5
    assert row["ttft_s_median"] == 0.1
    low, high = row["energy_j_per_output_token_ci_low"], row["energy_j_per_output_token_ci_high"]
    assert 1.0 <= low <= 3.0 <= high <= 10.0 and low < high
    assert (row["n_trials"], row["n_ok"], row["n_failed"]) == (5, 5, 0)
    assert row["cv_flag"] and "energy_j_per_output_token" in row["cv_flagged_metrics"]
    # carried descriptive columns
    assert row["energy_source"] == "estimate-cpu-tdp" and row["weights"] == "random"
    assert row["flops_total"] == 1.5e9


def test_steady_configuration_is_not_flagged_and_interval_is_reproducible():
    table = _trials([2.0, 2.01, 1.99, 2.0, 2.005])
    first, second = stats.summarise(table), stats.summarise(table)
    assert not first.loc[0, "cv_flag"]
    assert first.loc[0, "cv_flagged_metrics"] == ""
    pd.testing.assert_frame_equal(first, second)


def test_threshold_decides_the_flag():
    table = _trials([1.0, 1.1, 0.9])  # CV = 0.1
    assert stats.summarise(table, cv_threshold=0.05).loc[0, "cv_flag"]
    assert not stats.summarise(table, cv_threshold=0.2).loc[0, "cv_flag"]


def test_failed_trials_are_counted_not_summarised():
    table = _trials([1.0, None, 3.0], status=["ok", "failed", "ok"])
    row = stats.summarise(table).iloc[0]
    assert (row["n_trials"], row["n_ok"], row["n_failed"]) == (3, 2, 1)
    assert row["energy_j_per_output_token_median"] == 2.0


def test_configuration_with_every_trial_failed_keeps_its_row():
    good = _trials([1.0, 1.0])
    failed = _trials([None, None], status=["failed", "failed"], batch_size=64)
    summary = stats.summarise(pd.concat([good, failed], ignore_index=True))
    assert len(summary) == 2
    row = summary[summary["batch_size"] == 64].iloc[0]
    assert row["n_ok"] == 0 and row["n_failed"] == 2
    assert np.isnan(row["energy_j_per_output_token_median"])
    assert not row["cv_flag"]


def test_configurations_are_kept_apart():
    table = pd.concat([_trials([1.0, 1.0]), _trials([5.0, 5.0], platform_id="gpu-test")], ignore_index=True)
    summary = stats.summarise(table).set_index("platform_id")
    assert summary.loc["cpu-test", "energy_j_per_output_token_median"] == 1.0
    assert summary.loc["gpu-test", "energy_j_per_output_token_median"] == 5.0


def test_missing_column_is_named():
    with pytest.raises(stats.StatsInputError, match="'platform_id'"):
        stats.summarise(_trials([1.0]).drop(columns="platform_id"))


def test_unknown_status_is_named():
    with pytest.raises(stats.StatsInputError, match=r"status.*'crashed'"):
        stats.summarise(_trials([1.0], status=["crashed"]))


def test_order_statistic_interval_of_a_known_sample():
    # n = 9: j = 2 is the widest rank whose coverage 1 - 2 P(Bin(9, 1/2) <= 1) = 0.9609 >= 95 %
    sample = np.array([9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0])
    low, high, coverage = intervals.median_interval(sample)
    assert (low, high) == (2.0, 8.0)
    assert coverage == pytest.approx(1 - 2 * 10 / 512)
    assert [intervals.median_interval_rank(n)[1] for n in (2, 3, 4, 5, 6)] == pytest.approx(
        [0.5, 0.75, 0.875, 0.9375, 0.96875]
    )


def test_one_value_gives_no_interval_and_its_undefined_cv_is_flagged():
    assert all(np.isnan(intervals.median_interval(np.array([3.0]))))
    assert all(np.isnan(intervals.median_interval(np.array([np.nan, np.nan]))))
    row = stats.summarise(_trials([2.0])).iloc[0]
    assert np.isnan(row["latency_s_ci_low"]) and np.isnan(row["latency_s_ci_high"])
    assert row["ci_method"] is None and np.isnan(row["ci_coverage"])
    assert "1 successful trial" in row["ci_note"]
    assert row["few_trials_flag"] and np.isnan(row["latency_s_cv"])
    assert row["cv_flag"] and row["cv_flagged_metrics"] == ",".join(stats.HEADLINE_METRICS)


def test_every_summary_row_states_its_interval_and_coverage():
    three, five = stats.summarise(_trials([1.0, 3.0, 2.0])).iloc[0], stats.summarise(_trials([5.0, 1, 2, 3, 4])).iloc[0]
    assert (three["latency_s_ci_low"], three["latency_s_ci_high"]) == (2.0, 6.0)
    assert three["ci_coverage"] == 0.75 and "below 95 %" in three["ci_note"] and not three["few_trials_flag"]
    assert five["ci_coverage"] == 0.9375 and five["ci_method"] == intervals.MEDIAN_TRIALS
    assert stats.summarise(_trials([1.0, 2.0])).iloc[0]["few_trials_flag"]


def test_ratio_of_medians():
    ratio, low, high, coverage = intervals.ratio_of_medians(
        np.array([2.0, 2.2, 1.8, 2.1, 1.9]), np.array([1.0, 1.1, 0.9, 1.05, 0.95])
    )
    assert ratio == pytest.approx(2.0)
    assert (low, high) == pytest.approx((1.8 / 1.1, 2.2 / 0.9))
    assert coverage == pytest.approx(0.9375**2)
    assert all(np.isnan(intervals.ratio_of_medians(np.array([1.0]), np.array([]))))
    assert np.isnan(intervals.ratio_of_medians(np.array([2.0]), np.array([1.0, 1.0]))[1])


def test_rank_correlations_match_scipy_with_ties():
    from scipy import stats as scipy_stats

    x = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = np.array([1.5, 1.0, 3.0, 3.0, 5.0, 4.0, 7.0])
    result = intervals.rank_correlations(x, y)
    assert result["spearman_rho"] == pytest.approx(scipy_stats.spearmanr(x, y).statistic)
    assert result["kendall_tau"] == pytest.approx(scipy_stats.kendalltau(x, y).statistic)
    assert result["spearman_ci_low"] < result["spearman_rho"] < result["spearman_ci_high"] <= 1.0
    perfect = intervals.rank_correlations(x, 2 * x)
    assert perfect["spearman_rho"] == pytest.approx(1.0) and perfect["spearman_ci_low"] < 1.0


@pytest.mark.parametrize("n", [5, 6, 10])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_perfect_ordering_s_interval_holds_it_and_admits_doubt(n, sign):
    # the engine_transfer figure drew rho - low and high - rho as error bars: a perfect
    # ordering of 5 items once had high = 0.996 < rho = 1, a negative bar and a failed figure
    x = np.arange(float(n))
    result = intervals.rank_correlations(x, sign * x)
    rho, low, high = result["spearman_rho"], result["spearman_ci_low"], result["spearman_ci_high"]
    assert rho == pytest.approx(sign)
    assert low <= rho <= high
    assert (high - low) > 0.05  # still an interval that admits doubt, not a point
    assert (low == rho) if sign < 0 else (high == rho)


def test_rank_correlations_need_three_pairs_and_intervals_five():
    assert all(np.isnan(v) for v in intervals.rank_correlations(np.ones(2), np.ones(2)).values())
    four = intervals.rank_correlations(np.arange(4.0), np.array([0.0, 2.0, 1.0, 3.0]))
    assert np.isfinite(four["spearman_rho"]) and np.isnan(four["spearman_ci_low"])


def test_nullable_columns_as_aggregate_writes_them():
    table = _trials([1.0, None, 3.0], status=["ok", "failed", "ok"])
    typed = table.astype(
        {
            "status": "string",
            "model": "string",
            "batch_size": "Int64",
            "energy_j_per_output_token": "Float64",
            "latency_s": "Float64",
            "tokens_per_s": "Float64",
            "energy_is_estimate": "boolean",
        }
    )
    row = stats.summarise(typed).iloc[0]
    assert row["energy_j_per_output_token_median"] == 2.0
    assert row["n_failed"] == 1 and row["energy_is_estimate"] == True  # noqa: E712


# --- all configurations at once: the vectorised summary against per-configuration answers ---


def _many_configurations(seed: int = 7) -> pd.DataFrame:
    """Shuffled trials of 40 configurations with 1..12 trials, failures, a gap in an ok row,
    a configuration whose trials all failed and a carried column empty in its first row."""
    rng = np.random.default_rng(seed)
    parts = []
    for index, size in enumerate(rng.integers(1, 13, size=40)):
        energy = list(rng.lognormal(0.0, 0.3, size))
        status = ["failed" if rng.random() < 0.15 else "ok" for _ in range(size)]
        keys = {"batch_size": 1 + index % 4, "model": f"m{index // 4}"}
        if index == 3:
            status = ["failed"] * size
        energy = [None if s == "failed" else e for e, s in zip(energy, status, strict=True)]
        part = _trials(energy, status, **keys)
        if index == 5:
            part.loc[0, "dtype"] = None
            part.loc[part.index[1:], "dtype"] = "float16"
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    table.loc[7, "latency_s"] = np.nan  # an ok trial without a latency
    return table.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_every_configuration_matches_its_own_statistics():
    table = _many_configurations()
    summary = stats.summarise(table)
    keys = stats.CONFIG_KEYS
    assert list(summary[keys].itertuples(index=False)) == sorted(set(table[keys].itertuples(index=False)))
    for row in summary.itertuples(index=False):
        trials = table.loc[(table[keys] == pd.Series(row._asdict())[keys]).all(axis=1)]
        ok = trials[trials["status"] == "ok"]
        counts = (len(trials), len(ok), len(trials) - len(ok))
        assert (row.n_trials, row.n_ok, row.n_failed) == counts
        assert row.dtype == trials["dtype"].dropna().iloc[0]
        flagged = []
        for metric in stats.HEADLINE_METRICS:
            values = ok[metric].dropna().to_numpy(dtype=float)
            got = [getattr(row, f"{metric}_{name}") for name in ("median", "mean", "std", "cv")]
            if values.size == 0:
                assert all(np.isnan(got))
                continue
            std = np.std(values, ddof=1) if values.size > 1 else np.nan
            expected = [np.median(values), np.mean(values), std, std / abs(np.mean(values))]
            np.testing.assert_allclose(got, expected, rtol=1e-12)
            interval = [getattr(row, f"{metric}_ci_{name}") for name in ("low", "high", "coverage")]
            np.testing.assert_allclose(interval, intervals.median_interval(values), rtol=1e-12)
            if not (np.isfinite(std) and std / abs(np.mean(values)) <= 0.05):
                flagged.append(metric)
        assert row.cv_flagged_metrics == ",".join(flagged) and row.cv_flag == bool(flagged)
        prefill = ok["energy_prefill_j"].dropna()
        expected_prefill = np.median(prefill) if len(prefill) else np.nan
        np.testing.assert_allclose(row.energy_prefill_j_median, expected_prefill, rtol=1e-12)


def test_summary_of_reordered_trials_is_the_same():
    table = _many_configurations()
    reordered = table.iloc[::-1].reset_index(drop=True)
    pd.testing.assert_frame_equal(stats.summarise(table), stats.summarise(reordered))


def test_row_files_are_concatenated_by_column_name(tmp_path):
    from llenergymeasure.aggregate import SchemaError, read_row_files

    first = _trials([1.0, 2.0]).assign(flops_total=np.array([2**60 + 1, 3], dtype=np.int64))
    second = _trials([None], status=["failed"]).drop(columns=["ttft_s"])
    second["flops_total"] = pd.array([None], dtype="Int64")
    empty = first.iloc[:0]
    for name, frame in {"a": first, "empty": empty, "b": second}.items():
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    rows = read_row_files([tmp_path / f"{name}.parquet" for name in ("a", "empty", "b")]).to_pandas(
        types_mapper=pd.ArrowDtype
    )
    assert list(rows.columns) == list(first.columns)
    assert rows["status"].tolist() == ["ok", "ok", "failed"]
    assert rows["ttft_s"].isna().tolist() == [False, False, True]
    assert rows["flops_total"].tolist()[:2] == [2**60 + 1, 3]  # exact beyond 2**53
    assert pd.isna(rows["flops_total"].iloc[2])
    with pytest.raises(SchemaError, match="no rows to aggregate"):
        read_row_files([tmp_path / "empty.parquet"])
