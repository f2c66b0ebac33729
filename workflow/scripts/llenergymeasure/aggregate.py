"""Aggregate per-job rows into the study's tidy tables, checked against a versioned schema.

`measurements.parquet`: one row per trial (every configuration, every platform merged in).
`summary.parquet`: one row per configuration with medians and order-statistic intervals (stats.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import yaml

from .paths import REPO_ROOT
from .lora import KEY_COLUMNS

log = logging.getLogger(__name__)

MEASUREMENTS_SCHEMA_PATH = REPO_ROOT / "config" / "schema" / "measurements.schema.yaml"

PANDAS_TYPES = {"string": "string", "integer": "Int64", "number": "Float64", "boolean": "boolean"}


def as_schema_type(series: Any, kind: str) -> Any:
    """A column cast to the pandas dtype of a schema type (missing values stay missing)."""
    if kind == "string":
        series = series.astype("object").where(series.notna(), None)
    return series.astype(PANDAS_TYPES[kind])


class SchemaError(ValueError):
    """Rows that do not match the measurements schema."""


def load_measurements_schema(path: Path = MEASUREMENTS_SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


def conform(frame: Any, schema: dict[str, Any]) -> Any:
    """Check required columns, add missing optional ones as empty, cast to the schema's types,
    and order columns as the schema lists them (columns the schema does not know are refused)."""
    import pandas as pd

    columns: dict[str, dict[str, Any]] = schema["columns"]
    unknown = [c for c in frame.columns if c not in columns]
    if unknown:
        raise SchemaError(
            f"columns not in {MEASUREMENTS_SCHEMA_PATH.name} (version {schema['version']}): {', '.join(unknown)}; "
            "document them in the schema"
        )
    missing = [c for c, spec in columns.items() if spec.get("required") and c not in frame.columns]
    if missing:
        raise SchemaError(f"required columns missing: {', '.join(missing)}")
    out = pd.DataFrame(index=frame.index)
    for name, spec in columns.items():
        if name in frame.columns:
            out[name] = as_schema_type(frame[name], spec["type"])
        else:
            out[name] = pd.Series(pd.NA, index=frame.index, dtype=PANDAS_TYPES[spec["type"]])
    out["schema_version"] = schema["version"]
    return out.reset_index(drop=True)


def read_row_files(paths: Iterable[str | Path]) -> Any:
    """Concatenate the per-job row files (Parquet) into one pandas table, empty files skipped.

    Each file is read with pyarrow and the rows are converted to pandas once (thousands of
    files: a per-file pandas conversion costs several times the read). Columns are aligned
    by name, a column missing from a file is empty there, as `pandas.concat` would do; if
    two files store one column with types arrow cannot unify, pandas concatenates them.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for path in paths:
        with pq.ParquetFile(path) as handle:
            table = handle.read(use_threads=False)
        if table.num_rows:
            tables.append(table)
    if not tables:
        raise SchemaError("no rows to aggregate: every input file is empty")
    try:
        combined = pa.concat_tables(tables, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.concat([table.to_pandas() for table in tables], ignore_index=True)
    # integers stay integers where a file has an empty cell (FLOP counts exceed 2**53)
    integers = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(),
                pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}
    return combined.to_pandas(types_mapper=integers.get).reset_index(drop=True)


def merge_platforms(frame: Any, extra_folders: Iterable[str | Path]) -> Any:
    """Append other platforms' or clusters' measurements (their results/aggregate folders)."""
    import pandas as pd

    frames = [frame]
    for folder in extra_folders:
        other = pd.read_parquet(Path(folder) / "measurements.parquet")
        frames.append(other.drop(columns=["schema_version"], errors="ignore"))
    merged = pd.concat(frames, ignore_index=True)
    # a trial is one (replicate, trial) of one configuration; tables from before replicates lack the column
    keys = ["platform_id", "model", "quant", "backend", "batch_size", "prompt_tokens", "output_tokens", "replicate", "trial"]
    if "replicate" not in merged.columns:
        keys.remove("replicate")
    keys += [key for key in KEY_COLUMNS if key in merged]  # LoRA adapters: a base row and an adapter's differ
    duplicated = merged.duplicated(subset=keys, keep="first")
    if duplicated.any():
        log.warning("dropping %d duplicated trial rows found in merged results", int(duplicated.sum()))
        merged = merged[~duplicated]
    return merged


def aggregate(row_files: Iterable[str | Path], measurements_out: str | Path, summary_out: str | Path,
              extra_results: Iterable[str | Path] = (), cv_threshold: float = 0.05) -> tuple[Any, Any]:
    """Concatenate, conform, summarise; write both tables atomically."""
    from . import adapter_analysis
    from .io import write_parquet_atomic

    schema = load_measurements_schema()
    rows = merge_platforms(adapter_analysis.with_adapter_columns(read_row_files(row_files)), extra_results)
    measurements = conform(adapter_analysis.with_adapter_columns(rows), schema)  # older tables: base rows
    summary = adapter_analysis.summarise(measurements, cv_threshold=cv_threshold)
    write_parquet_atomic(measurements_out, measurements)
    write_parquet_atomic(summary_out, summary)
    log.info("aggregated %d rows into %d configurations", len(measurements), len(summary))
    return measurements, summary
