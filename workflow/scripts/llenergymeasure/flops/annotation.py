"""The columns the `flops` rule adds to measured rows: FLOPs with their provenance, MFU, MBU.

Every row carries `flops_method`, `flops_confidence` and `flops_reason` (see `counting`); a
row whose count is `unsupported` has empty FLOP columns and MFU. Rows of the
`pytorch-compiled` backend are counted with its static KV cache: prompt + the
`max_new_tokens` room it was configured with (backends/pytorch_compiled.py), as recorded in
the row's `backend_settings_json`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from llenergymeasure import hardware, schema

from .analytical import decode_bytes_per_step
from .architecture import FlopsConfigError
from .counting import count_generate

STATIC_CACHE_BACKENDS = ("pytorch-compiled",)

_DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "half": 2, "bfloat16": 2, "bf16": 2}

FAMILY_COLUMN = "model_family"  # the architecture family, for per-family analyses
# The columns `annotate` adds besides the family: the schema's flops-stage columns.
_ANNOTATION_TYPES: dict[str, str] = {
    name: kind for name, kind in schema.columns("flops").items() if name != FAMILY_COLUMN
}
ANNOTATION_COLUMNS: tuple[str, ...] = tuple(_ANNOTATION_TYPES)


def _as_int(value: Any) -> int | None:
    try:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _is_true(value: Any) -> bool:
    """True for Python or NumPy True only (missing values and NA are not true)."""
    return value is True or (type(value).__name__ == "bool_" and bool(value))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def static_cache_length(row: dict) -> int | None:
    """The static KV cache a row's backend attended over (None: a dynamic cache).

    Raises FlopsConfigError when a static-cache backend's row does not record its room."""
    if row.get("backend") not in STATIC_CACHE_BACKENDS:
        return None
    try:
        settings = json.loads(_text(row.get("backend_settings_json")) or "null")
        room = settings["max_new_tokens"]
    except (TypeError, KeyError, json.JSONDecodeError):
        raise FlopsConfigError(
            f"a {row.get('backend')} row lacks max_new_tokens in backend_settings_json, so its static cache length "
            "is unknown; re-run measure to record it"
        ) from None
    prompt = _as_int(row.get("prompt_tokens"))
    return None if prompt is None or _as_int(room) is None else prompt + _as_int(room)


def annotate(rows, hf_config: dict, extra_flops_per_token: int = 0):
    """Add the FLOP columns, prefill MFU and decode MBU to measured rows (a pandas DataFrame).

    Failed rows keep their analytical FLOPs (when their shape is known) but get empty MFU/MBU;
    so do rows on hardware that config/hardware.yaml does not list."""
    import pandas as pd

    out = rows.copy()
    cache: dict[tuple, dict] = {}
    records: list[dict[str, Any]] = []
    for row in out.to_dict("records"):
        batch = _as_int(row.get("batch_size"))
        prompt = _as_int(row.get("prompt_tokens"))
        new = _as_int(row.get("output_tokens"))
        quant = _text(row.get("quant"))
        record: dict[str, Any] = {name: None for name in ANNOTATION_COLUMNS}
        if batch and prompt and new and batch > 0 and prompt > 0 and new > 0:
            static = static_cache_length(row)
            key = (batch, prompt, new, quant, static)
            if key not in cache:
                cache[key] = count_generate(
                    hf_config,
                    batch,
                    prompt,
                    new,
                    quant,
                    static_cache_len=static,
                    extra_flops_per_token=extra_flops_per_token,
                )
            counted = cache[key]
            for name in ANNOTATION_COLUMNS:
                if name in counted:
                    record[name] = counted[name]
            record["flops_method"] = counted["method"]
            record["flops_confidence"] = counted["confidence"]
            record["flops_reason"] = counted["reason"]
            record["flops_static_cache_len"] = static
            if _is_true(row.get("decompressed_at_load")):
                record["int_ops_total"] = None  # the backend expanded the weights: float matmuls ran
            if row.get("status") == "ok":
                record["mfu_prefill"] = _row_mfu(row, counted)
                record["mbu_decode"] = _row_mbu(row, hf_config, batch, prompt, new)
        records.append(record)
    added = schema.typed_frame(records, _ANNOTATION_TYPES, index=out.index)
    for name in ANNOTATION_COLUMNS:
        out[name] = added[name]
    # the architecture family, for per-family analyses (llama, gpt2, mixtral, ...)
    out[FAMILY_COLUMN] = pd.Series(str(hf_config.get("model_type") or "unknown"), index=out.index, dtype="string")
    return out


def _row_mfu(row: dict, counted: dict) -> float | None:
    seconds = _as_positive_float(row.get("ttft_s"))
    device = _text(row.get("device_name"))
    dtype = _text(row.get("compute_dtype")) or _text(row.get("dtype"))
    if seconds is None or device is None or dtype is None or counted["flops_prefill"] is None:
        return None
    return hardware.mfu(counted["flops_prefill"], seconds, device, dtype)


def _row_mbu(row: dict, hf_config: dict, batch: int, prompt: int, new: int) -> float | None:
    seconds = _as_positive_float(row.get("tpot_s"))
    device = _text(row.get("device_name"))
    kv_dtype = _text(row.get("dtype"))
    if kv_dtype not in _DTYPE_BYTES:
        kv_dtype = _text(row.get("compute_dtype"))
    resident = _as_positive_float(row.get("weight_bytes_memory"))
    if seconds is None or device is None or kv_dtype not in _DTYPE_BYTES or resident is None:
        return None
    try:
        moved = decode_bytes_per_step(hf_config, batch, prompt, new, resident, _DTYPE_BYTES[kv_dtype])
    except FlopsConfigError:  # a layout the byte model does not parse: no MBU rather than a guess
        return None
    if moved is None:
        return None
    return hardware.mbu(moved, seconds, device)
