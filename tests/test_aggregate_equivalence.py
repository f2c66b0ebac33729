"""The Arrow aggregation gives exactly the tables the earlier pandas aggregation gave.

`_previous_aggregate` is the per-column pandas path aggregate used before it moved to Arrow
(read each file, concatenate in pandas, `duplicated`, cast column by column), kept here
as the oracle. Both run on the shipped study's real rows, split back into per-job files, and
on files built to hit the casts' edge cases: a NaN in a text column, a column empty in every
row, columns missing from some files, integers above 2**53 next to empty cells, duplicated
trials across platforms, replicates and adapter rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT

from llenergymeasure import adapter_analysis, schema
from llenergymeasure.aggregate import aggregate
from llenergymeasure.lora import KEY_COLUMNS


def _previous_cast(series, kind):
    if kind == "string":
        series = series.astype("object").where(series.notna(), None)
    return series.astype(schema.PANDAS_TYPES[kind])


def _previous_aggregate(paths, extra_folders=()):
    """The pandas aggregation as it was (read, merge platforms, conform), without writing."""
    tables = [pq.read_table(path) for path in paths]
    tables = [t for t in tables if t.num_rows]
    integers = {
        pa.int8(): pd.Int8Dtype(),
        pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
    }
    rows = pa.concat_tables(tables, promote_options="default").to_pandas(types_mapper=integers.get)
    rows = adapter_analysis.with_adapter_columns(rows)
    frames = [rows] + [
        pd.read_parquet(f"{folder}/measurements.parquet").drop(columns=["schema_version"], errors="ignore")
        for folder in extra_folders
    ]
    merged = pd.concat(frames, ignore_index=True)
    keys = [
        "platform_id",
        "model",
        "quant",
        "backend",
        "batch_size",
        "prompt_tokens",
        "output_tokens",
        "replicate",
        "trial",
    ]
    if "replicate" not in merged.columns:
        keys.remove("replicate")
    keys += [key for key in KEY_COLUMNS if key in merged]
    merged = adapter_analysis.with_adapter_columns(merged[~merged.duplicated(subset=keys, keep="first")])
    specs = schema.load()["columns"]
    out = pd.DataFrame(index=merged.index)
    for name, spec in specs.items():
        if name in merged.columns:
            out[name] = _previous_cast(merged[name], spec["type"])
        else:
            out[name] = pd.Series(pd.NA, index=merged.index, dtype=schema.PANDAS_TYPES[spec["type"]])
    out["schema_version"] = schema.load()["version"]
    measurements = out.reset_index(drop=True)
    return measurements, adapter_analysis.summarise(measurements)


def _job_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Only what the measure, flops and flops_adapter stages write."""
    written = {**schema.columns("measure"), **schema.columns("flops"), **schema.columns("flops_adapter")}
    return frame[[c for c in frame.columns if c in written]]


def _assert_same(paths, tmp_path, extra_folders=()):
    expected_rows, expected_summary = _previous_aggregate(paths, extra_folders)
    rows, summary = aggregate(paths, tmp_path / "m.parquet", tmp_path / "s.parquet", extra_results=extra_folders)
    pd.testing.assert_frame_equal(rows, expected_rows)
    pd.testing.assert_frame_equal(summary, expected_summary)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "m.parquet"), expected_rows)
    return rows


def test_the_shipped_study_split_into_job_files_aggregates_as_before(tmp_path):
    shipped = _job_columns(pd.read_parquet(REPO_ROOT / "paper" / "data" / "measurements.parquet"))
    paths = []
    for index, (_, job) in enumerate(shipped.groupby(["model", "quant", "backend"], sort=False)):
        paths.append(tmp_path / f"job{index}.parquet")
        job.to_parquet(paths[-1], index=False)
    assert len(paths) >= 5
    rows = _assert_same(paths, tmp_path)
    assert len(rows) == len(shipped)


def _edge_rows(platform: str, n: int, **columns) -> pd.DataFrame:
    base = {
        "model": "m",
        "quant": "none-float32",
        "backend": "pytorch",
        "dtype": "float32",
        "batch_size": 1,
        "prompt_tokens": 8,
        "output_tokens": 4,
        "trial": np.arange(n),
        "status": "ok",
        "energy_source": "unavailable",
        "energy_is_estimate": False,
        "platform_id": platform,
        "latency_s": np.linspace(0.5, 0.9, n),
        "tokens_per_s": np.linspace(8, 9, n),
        "energy_j_per_output_token": np.nan,
    }
    return pd.DataFrame({**base, **columns})


def test_edge_cases_of_the_casts_aggregate_as_before(tmp_path):
    frames = {
        # a text column stored as floats (all NaN), integers above 2**53 with an empty cell, a flag with one
        "a": _edge_rows(
            "cpu-a",
            3,
            error=np.nan,
            flops_total=pd.array([2**60 + 1, None, 3], dtype="Int64"),
            warmup_converged=pd.array([True, None, False], dtype="boolean"),
        ),
        # columns missing here, a column empty in every row (Arrow null type), replicates
        "b": _edge_rows("cpu-a", 2, model="n", replicate=[1, 2], energy_unavailable_reason=[None, None]),
        # the first file's trials again (dropped), and adapter rows that are not duplicates of base rows
        "c": _edge_rows("cpu-a", 3, error=np.nan),
        "d": _edge_rows("cpu-a", 2, adapter="lora-a", adapter_merged=[False, True], adapter_rank=8),
        "empty": _edge_rows("cpu-a", 0),
    }
    paths = []
    for name, frame in frames.items():
        paths.append(tmp_path / f"{name}.parquet")
        frame.to_parquet(paths[-1], index=False)
    other = tmp_path / "other-platform"
    other.mkdir()
    previous, _ = _previous_aggregate([paths[1]])
    pd.concat([previous, previous.assign(platform_id="gpu-b")]).to_parquet(other / "measurements.parquet", index=False)
    rows = _assert_same(paths, tmp_path, [other])
    assert len(rows) == 3 + 2 + 2 + 2  # a, b, d and gpu-b: c repeats a, and the other folder repeats b on cpu-a
    assert rows["flops_total"].tolist()[:3] == [2**60 + 1, pd.NA, 3]
    assert rows["error"].isna().all() and rows["energy_j_per_output_token"].isna().all()


def test_a_value_that_does_not_fit_its_type_names_the_column(tmp_path):
    path = tmp_path / "bad.parquet"
    _edge_rows("cpu-a", 2, batch_size=["one", "two"]).to_parquet(path, index=False)
    with pytest.raises(
        schema.SchemaError, match=r"column 'batch_size' holds (large_)?string values that are not integer"
    ):
        aggregate([path], tmp_path / "m.parquet", tmp_path / "s.parquet")
