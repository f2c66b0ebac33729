"""The per-trial columns a measure job writes: the schema's stage-`measure` columns
(config/schema/measurements.schema.yaml; the `flops` rule adds the flops/mfu/mbu columns)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import schema
from .io import write_parquet_atomic

# Column name -> schema type of every column `measure` writes, in schema order.
MEASURED_COLUMNS: dict[str, str] = schema.columns("measure")


def write_rows(rows: list[dict[str, Any]], output: str | Path) -> None:
    """The job's rows as Parquet, typed per MEASURED_COLUMNS, written atomically.

    A row field the schema does not declare for stage measure is refused, not dropped."""
    undeclared = sorted({name for row in rows for name in row} - set(MEASURED_COLUMNS))
    if undeclared:
        raise schema.SchemaError(
            f"measure built columns not declared with stage: measure in {schema.SCHEMA_PATH.name}: "
            f"{', '.join(undeclared)}; declare them there"
        )
    write_parquet_atomic(output, schema.typed_frame(rows, MEASURED_COLUMNS))


__all__ = ["MEASURED_COLUMNS", "write_rows"]
