"""The per-trial columns a measure job writes, typed in the vocabulary of
config/schema/measurements.schema.yaml (the `flops` rule adds the flops/mfu/mbu columns)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .aggregate import as_schema_type
from .io import write_parquet_atomic
from .lora import ROW_COLUMNS

# The columns `measure` writes (flops/mfu/mbu columns are added by the `flops` rule), with
# types in the vocabulary of config/schema/measurements.schema.yaml.
MEASURED_COLUMNS: dict[str, str] = {
    "model": "string",
    "quant": "string",
    "backend": "string",
    "dtype": "string",
    "batch_size": "integer",
    "prompt_tokens": "integer",
    "output_tokens": "integer",
    "trial": "integer",
    "status": "string",
    "error": "string",
    "latency_s": "number",
    "ttft_s": "number",
    "tpot_s": "number",
    "tpot_stream_mean_s": "number",
    "tpot_p50_s": "number",
    "tpot_p90_s": "number",
    "tpot_p99_s": "number",
    "tokens_per_s": "number",
    "energy_j": "number",
    "energy_j_per_output_token": "number",
    "energy_uncertainty_j": "number",
    "energy_prefill_j": "number",
    "energy_prefill_uncertainty_j": "number",
    "energy_decode_j": "number",
    "energy_decode_uncertainty_j": "number",
    "energy_net_j": "number",
    "idle_power_w": "number",
    "energy_source": "string",
    "energy_is_estimate": "boolean",
    "energy_per_device_json": "string",
    "window_s": "number",
    "window_repetitions": "integer",
    "prefill_window_s": "number",
    "prefill_window_repetitions": "integer",
    "warmup_runs": "integer",
    "warmup_s": "number",
    "warmup_cv": "number",
    "peak_memory_bytes": "integer",
    "quant_method": "string",
    "weight_bits": "integer",
    "compute_dtype": "string",
    "weight_bytes_disk": "integer",
    "weight_bytes_memory": "integer",
    "kernel_path": "string",
    "decompressed_at_load": "boolean",
    "weights": "string",
    "perplexity": "number",
    "backend_version": "string",
    "backend_settings_json": "string",
    "device": "string",
    "device_name": "string",
    "platform_id": "string",
    "config_hash": "string",
    "git_commit": "string",
    # energy attribution, replicates and warm-up convergence (issue 12)
    "replicate": "integer",
    "energy_gpu_indices": "string",
    "energy_cpu_j": "number",
    "energy_dram_j": "number",
    "energy_assumption": "string",
    "energy_unavailable_reason": "string",
    "warmup_converged": "boolean",
    **ROW_COLUMNS,  # LoRA adapters (lora.py): 'none' on base-model rows
}


def write_rows(rows: list[dict[str, Any]], output: str | Path) -> None:
    """The job's rows as Parquet, typed per MEASURED_COLUMNS, written atomically."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(MEASURED_COLUMNS))
    for column, kind in MEASURED_COLUMNS.items():
        frame[column] = as_schema_type(frame[column], kind)
    write_parquet_atomic(output, frame)


__all__ = ["MEASURED_COLUMNS", "write_rows"]
