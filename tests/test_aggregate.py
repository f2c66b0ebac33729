"""The measurements schema is versioned and complete, and aggregate enforces it and merges platforms."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
from conftest import REPO_ROOT

from llenergymeasure.aggregate import SchemaError, aggregate, conform, load_measurements_schema, merge_platforms
from llenergymeasure.flops import ANNOTATION_COLUMNS
from llenergymeasure.measure import MEASURED_COLUMNS

SCHEMA = load_measurements_schema()
REQUIRED_BY_ISSUE = [
    "model",
    "quant",
    "backend",
    "dtype",
    "batch_size",
    "prompt_tokens",
    "output_tokens",
    "trial",
    "status",
    "latency_s",
    "ttft_s",
    "tpot_s",
    "tokens_per_s",
    "energy_j",
    "energy_j_per_output_token",
    "energy_source",
    "energy_is_estimate",
    "peak_memory_bytes",
    "flops_prefill",
    "flops_decode",
    "flops_total",
    "device_name",
]


def test_schema_is_versioned_and_every_column_is_typed_and_described():
    assert isinstance(SCHEMA["version"], int) and SCHEMA["version"] >= 1
    for name, spec in SCHEMA["columns"].items():
        assert spec["type"] in {"string", "integer", "number", "boolean"}, name
        assert len(spec.get("description", "")) > 10, f"{name} is not documented"


def test_schema_covers_everything_the_stages_write():
    columns = set(SCHEMA["columns"])
    assert set(MEASURED_COLUMNS) <= columns, set(MEASURED_COLUMNS) - columns
    assert set(ANNOTATION_COLUMNS) | {"model_family"} <= columns
    assert set(REQUIRED_BY_ISSUE) <= columns
    # the types measure declares agree with the schema's
    for name, kind in MEASURED_COLUMNS.items():
        assert SCHEMA["columns"][name]["type"] == kind, name


def _rows(platform: str, n: int = 2) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["m"] * n,
            "quant": ["none-float32"] * n,
            "backend": ["pytorch"] * n,
            "dtype": ["float32"] * n,
            "batch_size": [1] * n,
            "prompt_tokens": [8] * n,
            "output_tokens": [4] * n,
            "trial": list(range(n)),
            "status": ["ok"] * n,
            "energy_source": ["estimate-cpu-tdp"] * n,
            "energy_is_estimate": [True] * n,
            "platform_id": [platform] * n,
            "latency_s": [0.5 + i for i in range(n)],
            "energy_j": [2.0] * n,
            "energy_j_per_output_token": [0.5] * n,
            "tokens_per_s": [8.0] * n,
            "flops_total": [2**60 + 1] * n,
        }
    )


def _arrow(frame: pd.DataFrame) -> pa.Table:
    """Rows as aggregate holds them before conforming them: an Arrow table."""
    return pa.Table.from_pandas(frame, preserve_index=False)


def test_conform_types_orders_and_stamps_the_version():
    out = conform(_rows("cpu-a"), SCHEMA)
    assert list(out.columns)[: len(SCHEMA["columns"])] == list(SCHEMA["columns"])
    assert (out["schema_version"] == SCHEMA["version"]).all()
    assert str(out["batch_size"].dtype) == "Int64"
    assert int(out["flops_total"].iloc[0]) == 2**60 + 1  # integers stay exact above 2**53
    assert out["ttft_s"].isna().all()  # optional columns absent from the rows are empty, not invented


def test_conform_refuses_undocumented_and_missing_required_columns():
    with pytest.raises(SchemaError, match=r"not in measurements\.schema\.yaml.*colour"):
        conform(_rows("cpu-a").assign(colour="blue"), SCHEMA)
    with pytest.raises(SchemaError, match="required columns missing: energy_source"):
        conform(_rows("cpu-a").drop(columns=["energy_source"]), SCHEMA)


def test_platforms_merge_into_one_study_table_without_duplicates(tmp_path):
    other = tmp_path / "gpu-run"
    other.mkdir()
    conform(_rows("nvidia-h100x1"), SCHEMA).to_parquet(other / "measurements.parquet")
    merged = merge_platforms(_arrow(pd.concat([_rows("cpu-a"), _rows("cpu-a")])), [other]).to_pandas()
    assert sorted(merged.platform_id.unique()) == ["cpu-a", "nvidia-h100x1"]
    assert len(merged) == 4  # the repeated cpu-a trials were dropped once

    rows_file = tmp_path / "rows.parquet"
    _rows("cpu-a", n=3).to_parquet(rows_file)
    measurements, summary = aggregate(
        [rows_file], tmp_path / "m.parquet", tmp_path / "s.parquet", extra_results=[other]
    )
    assert len(measurements) == 5 and set(summary.platform_id) == {"cpu-a", "nvidia-h100x1"}
    assert summary.set_index("platform_id").loc["cpu-a", "n_ok"] == 3


def test_shipped_paper_data_follows_the_schema():
    shipped = pd.read_parquet(REPO_ROOT / "paper" / "data" / "measurements.parquet")
    assert list(shipped.columns) == [*SCHEMA["columns"]]
    assert (shipped["schema_version"] == SCHEMA["version"]).all()


def test_replicates_with_the_same_trial_numbers_are_all_kept(tmp_path):
    """Each replicate numbers its trials from 0: (replicate, trial) is the trial, so replicates
    2 and 3 are not duplicates of replicate 1 (they were dropped before the replicate column)."""
    files = []
    for replicate in (1, 2, 3):
        path = tmp_path / f"replicate-{replicate}.parquet"
        _rows("cpu-a", n=2).assign(replicate=replicate).to_parquet(path)
        files.append(path)
    measurements, summary = aggregate(files, tmp_path / "m.parquet", tmp_path / "s.parquet")
    assert len(measurements) == 6 and sorted(measurements["replicate"].unique()) == [1, 2, 3]
    assert len(summary) == 1
    repeated = merge_platforms(_arrow(pd.concat([_rows("cpu-a").assign(replicate=1)] * 2)), [])
    assert len(repeated) == 2  # the same replicate twice is still a duplicate
