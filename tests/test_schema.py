"""The column contract (schema.py over config/schema/measurements.schema.yaml): every column
declared with its type, stage, role and label; what the stages use is derived from it; every
schema type survives both casts (pandas `cast` and the Arrow `conform`)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO_ROOT

from llenergymeasure import flops, schema, stats, tables

SPECS = schema.load()["columns"]


def test_every_column_has_a_type_stage_role_and_label():
    for name, spec in SPECS.items():
        assert spec["type"] in schema.PANDAS_TYPES and spec["stage"] in schema.STAGES, name
        assert spec["role"] in schema.ROLES and spec["label"], name
    assert set(schema.labels()) == set(SPECS)
    # each stage writes something, and the union of the stages is every column
    assert all(schema.columns(stage) for stage in schema.STAGES)
    assert sum(len(schema.columns(stage)) for stage in schema.STAGES) == len(SPECS)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["latency_s"].pop("label"), "column 'latency_s' has no label"),
        (
            lambda c: c["latency_s"].update(stage="figures"),
            "column 'latency_s' has stage 'figures'; use one of measure",
        ),
        (lambda c: c["trial"].pop("key"), "column 'trial': a key names its group"),
        (lambda c: c["dtype"].update(type="float"), "column 'dtype' has type 'float'"),
    ],
)
def test_a_malformed_schema_is_refused_naming_the_column(tmp_path, edit, message):
    document = yaml.safe_load(schema.SCHEMA_PATH.read_text())
    edit(document["columns"])
    path = tmp_path / "measurements.schema.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(schema.SchemaError, match=message):
        schema.load(path)


def test_the_summary_lists_and_keys_come_from_the_contract():
    assert stats.CONFIG_KEYS == [
        "platform_id",
        "model",
        "quant",
        "backend",
        "batch_size",
        "prompt_tokens",
        "output_tokens",
    ]
    assert stats.CONFIG_KEYS == [*stats.schema.keys("platform"), *stats.CHOICE_KEYS, *stats.WORKLOAD_KEYS]
    assert all(SPECS[c]["role"] == "key" for c in stats.CONFIG_KEYS)
    assert all(SPECS[c]["role"] == "metric" for c in [*stats.HEADLINE_METRICS, *stats.MEDIAN_METRICS])
    assert not any(SPECS[c]["role"] == "key" for c in stats.CARRIED_COLUMNS)
    assert stats.HEADLINE_METRICS[0] == "energy_j_per_output_token"  # cv_flagged_metrics lists them in this order
    assert not set(stats.HEADLINE_METRICS) & set(stats.MEDIAN_METRICS)


def test_flops_annotation_adds_exactly_the_flops_stage_columns():
    hf_config = json.loads((REPO_ROOT / "config" / "models" / "tiny-llama.json").read_text())
    rows = pd.DataFrame(
        {
            "batch_size": [1, 2],
            "prompt_tokens": [8, 8],
            "output_tokens": [4, 4],
            "quant": ["none-float32"] * 2,
            "backend": ["pytorch"] * 2,
            "status": ["ok", "failed"],
            "ttft_s": [0.01, None],
            "tpot_s": [0.002, None],
            "device_name": ["synthetic"] * 2,
            "dtype": ["float32"] * 2,
        }
    )
    out = flops.annotate(rows, hf_config)
    added = [c for c in out.columns if c not in rows.columns]
    assert added == [*list(schema.columns("flops"))[1:], "model_family"]  # the family after the counts
    assert set(added) == set(schema.columns("flops"))
    for name in added:
        assert str(out[name].dtype) == str(pd.api.types.pandas_dtype(schema.PANDAS_TYPES[SPECS[name]["type"]])), name


def test_table_labels_agree_with_the_contract():
    """tables.METRIC_LABELS names a metric as the schema labels the column (figures read both)."""
    labels = schema.labels()
    for metric, label in tables.METRIC_LABELS.items():
        if metric in labels:
            assert labels[metric] == label, metric


VALUES = {
    "string": ["ok", None, "naïve text"],
    "integer": [2**60 + 1, None, -3],
    "number": [0.1, None, 1e300],
    "boolean": [True, None, False],
}


@pytest.mark.parametrize("kind", list(VALUES))
def test_every_schema_type_round_trips_through_both_casts(kind, tmp_path: Path):
    cast = schema.cast(pd.Series(VALUES[kind], dtype=object), kind)
    assert str(cast.dtype) == str(pd.api.types.pandas_dtype(schema.PANDAS_TYPES[kind]))
    assert [None if pd.isna(v) else v for v in cast.tolist()] == VALUES[kind]  # exact, missing stays missing
    # through a Parquet file and the Arrow conform, as aggregate reads job files: the same column
    column = next(name for name, spec in SPECS.items() if spec["type"] == kind and not spec.get("required"))
    required = {
        name: schema.cast(pd.Series(["x"] * 3 if spec["type"] == "string" else [1] * 3, dtype=object), spec["type"])
        for name, spec in SPECS.items()
        if spec.get("required")
    }
    frame = pd.DataFrame({**required, column: cast})
    frame.to_parquet(tmp_path / "rows.parquet", index=False)
    conformed = schema.conform(pd.read_parquet(tmp_path / "rows.parquet"))
    pd.testing.assert_series_equal(conformed[column], cast, check_names=False)
    pd.testing.assert_series_equal(schema.conform(frame)[column], cast, check_names=False)
