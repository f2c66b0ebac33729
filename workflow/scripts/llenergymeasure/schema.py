"""The column contract: config/schema/measurements.schema.yaml, loaded, checked and applied.

Every per-trial column is declared once, in that file, with its type, the stage that writes
it (measure, flops, aggregate), its role (key, metric, descriptor, provenance) and a label.
What each stage needs is derived here: the columns `measure` writes (`columns("measure")`),
the ones `flops` adds, the configuration keys and summary lists stats.py uses, the labels of
tables and figures. `cast` is the one conversion from a schema type to a pandas dtype, and
`conform` is what aggregate applies to the concatenated rows.

This module imports no pipeline stage, so every stage may import it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .paths import REPO_ROOT

SCHEMA_PATH = REPO_ROOT / "config" / "schema" / "measurements.schema.yaml"

PANDAS_TYPES = {"string": "string", "integer": "Int64", "number": "Float64", "boolean": "boolean"}
STAGES = ("measure", "flops", "flops_adapter", "aggregate")  # pipeline order: a stage never imports a later one
ROLES = ("key", "metric", "descriptor", "provenance")
KEY_GROUPS = ("platform", "choice", "workload", "trial", "adapter")
SUMMARY_KINDS = ("headline", "median", "carried")


class SchemaError(ValueError):
    """Rows that do not match the measurements schema, or a schema file that is malformed."""


def _check(schema: dict[str, Any], path: Path) -> None:
    """One line naming the column and the field to fix, for a malformed schema file."""
    allowed = {"type": tuple(PANDAS_TYPES), "stage": STAGES, "role": ROLES}
    for name, spec in schema["columns"].items():
        for field, values in allowed.items():
            if spec.get(field) not in values:
                raise SchemaError(
                    f"{path.name}: column {name!r} has {field} {spec.get(field)!r}; use one of {', '.join(values)}"
                )
        if not isinstance(spec.get("label"), str) or not spec["label"]:
            raise SchemaError(f'{path.name}: column {name!r} has no label; add label: "..."')
        if (spec["role"] == "key") != (spec.get("key") in KEY_GROUPS):
            raise SchemaError(
                f"{path.name}: column {name!r}: a key names its group (key: {' | '.join(KEY_GROUPS)}), "
                "and only a key does"
            )
    for kind in SUMMARY_KINDS:
        for name in schema.get("summary", {}).get(kind, []):
            if name not in schema["columns"]:
                raise SchemaError(f"{path.name}: summary.{kind} lists {name!r}, which is not a column")


@functools.lru_cache(maxsize=4)
def _load(path: Path) -> dict[str, Any]:
    with open(path) as handle:
        schema = yaml.safe_load(handle)
    _check(schema, path)
    return schema


def load(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The schema as a dict (`version`, `summary`, `columns`); read once per process. Do not mutate it."""
    return _load(Path(path))


def columns(stage: str | None = None, role: str | None = None) -> dict[str, str]:
    """Column name -> schema type, in schema order, of one stage and/or role (all when None)."""
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage {stage!r}: use one of {', '.join(STAGES)}")
    if role is not None and role not in ROLES:
        raise ValueError(f"role {role!r}: use one of {', '.join(ROLES)}")
    return {
        name: spec["type"]
        for name, spec in load()["columns"].items()
        if (stage is None or spec["stage"] == stage) and (role is None or spec["role"] == role)
    }


def keys(*groups: str) -> list[str]:
    """The key columns of these groups, group by group in the order given, schema order within one."""
    specs = load()["columns"]
    return [name for group in groups for name, spec in specs.items() if spec.get("key") == group]


def summary(kind: str) -> list[str]:
    """The columns stats.summarise treats as `kind` (headline, median, carried), in its order."""
    if kind not in SUMMARY_KINDS:
        raise ValueError(f"summary kind {kind!r}: use one of {', '.join(SUMMARY_KINDS)}")
    return list(load()["summary"][kind])


def labels() -> dict[str, str]:
    """Column name -> human label (for tables and figures)."""
    return {name: spec["label"] for name, spec in load()["columns"].items()}


def cast(series: Any, kind: str) -> Any:
    """A column cast to the pandas dtype of a schema type (missing values stay missing)."""
    if kind == "string":
        series = series.astype("object").where(series.notna(), None)
    return series.astype(PANDAS_TYPES[kind])


def typed_frame(rows: Iterable[Mapping[str, Any]], types: Mapping[str, str], index: Any = None) -> Any:
    """Rows (dicts) as a DataFrame with exactly the columns of `types`, each cast to its type.

    Columns are built from the Python values (object), so integers above 2**53 stay exact."""
    import pandas as pd

    rows = list(rows)
    index = pd.RangeIndex(len(rows)) if index is None else index
    return pd.DataFrame(
        {
            name: cast(pd.Series([row.get(name) for row in rows], index=index, dtype=object), kind)
            for name, kind in types.items()
        },
        index=index,
    )


def conform(rows: Any, schema: dict[str, Any] | None = None) -> Any:
    """Rows (a pandas DataFrame or an Arrow table) as the schema's pandas table: required
    columns checked, missing optional ones added empty, every column cast to its schema type,
    columns in schema order, `schema_version` stamped. Columns the schema does not know are refused."""
    import pyarrow as pa

    schema = load() if schema is None else schema
    if not isinstance(rows, pa.Table):
        rows = _arrow_table(rows)
    out = conform_table(rows, schema).to_pandas(types_mapper=_pandas_dtype_of_arrow().get)
    out["schema_version"] = schema["version"]
    return out


def conform_table(table: Any, schema: dict[str, Any] | None = None) -> Any:
    """`conform` in Arrow: the table with the schema's columns, in its order and Arrow types."""
    import pyarrow as pa

    schema = load() if schema is None else schema
    specs: dict[str, dict[str, Any]] = schema["columns"]
    unknown = [c for c in table.column_names if c not in specs]
    if unknown:
        raise SchemaError(
            f"columns not in {SCHEMA_PATH.name} (version {schema['version']}): {', '.join(unknown)}; "
            "document them in the schema"
        )
    missing = [c for c, spec in specs.items() if spec.get("required") and c not in table.column_names]
    if missing:
        raise SchemaError(f"required columns missing: {', '.join(missing)}")
    empty: dict[str, Any] = {}  # one all-empty array per type, shared by its missing columns (immutable)
    arrays = []
    for name, spec in specs.items():
        if name in table.column_names:
            arrays.append(_arrow_cast(table[name], spec["type"], name))
            continue
        if spec["type"] not in empty:
            empty[spec["type"]] = pa.nulls(table.num_rows, arrow_type(spec["type"]))
        arrays.append(empty[spec["type"]])
    return pa.Table.from_arrays(arrays, names=list(specs))


def cast_known_columns(table: Any) -> Any:
    """`table` with each column the schema knows cast to its schema type (others unchanged)."""
    specs = load()["columns"]
    for index, name in enumerate(table.column_names):
        if name in specs:
            table = table.set_column(index, name, _arrow_cast(table[name], specs[name]["type"], name))
    return table


def _arrow_cast(column: Any, kind: str, name: str) -> Any:
    """A column cast to the Arrow type of a schema type; a float NaN is missing, as in pandas."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_floating(column.type):
        nan = pc.is_nan(column)
        if pc.any(nan).as_py():
            column = pc.if_else(nan, pa.scalar(None, column.type), column)
    target = arrow_type(kind)
    if column.type == target:
        return column
    try:
        return column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise SchemaError(f"column {name!r} holds {column.type} values that are not {kind}: {error}") from None


def _arrow_table(frame: Any) -> Any:
    import pyarrow as pa

    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise SchemaError(f"rows that Arrow cannot store: {error}") from None


def arrow_type(kind: str) -> Any:
    """The pyarrow type of a schema type (large_string: what pandas writes, no cast on reading)."""
    import pyarrow as pa

    return {"string": pa.large_string, "integer": pa.int64, "number": pa.float64, "boolean": pa.bool_}[kind]()


def _pandas_dtype_of_arrow() -> dict[Any, Any]:
    """Arrow type -> the pandas dtype `cast` gives for the same schema type."""
    import pandas as pd
    import pyarrow as pa

    types = {arrow_type(kind): pd.api.types.pandas_dtype(dtype) for kind, dtype in PANDAS_TYPES.items()}
    return {**types, pa.string(): types[pa.large_string()]}


__all__ = [
    "KEY_GROUPS",
    "PANDAS_TYPES",
    "ROLES",
    "SCHEMA_PATH",
    "STAGES",
    "SUMMARY_KINDS",
    "SchemaError",
    "arrow_type",
    "cast",
    "cast_known_columns",
    "columns",
    "conform",
    "conform_table",
    "keys",
    "labels",
    "load",
    "summary",
    "typed_frame",
]
