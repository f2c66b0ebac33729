"""The measurement protocol of one measure job: one variant on one backend, every shape.

The steps of one trial (warm-up, windows, timing probe, metrics) are in `trial`; this module is
the job. Per job (one replicate, in a fresh process): pin the job to its GPUs (`job_gpus`), capture
the environment, pick the energy meter for exactly those GPUs (`energy.select_meter`), load
the backend once, take an idle-power baseline. Per shape (batch size x prompt length): warm
up until steady, then `trials` trials (`trial`: two windows and a timing probe each).

A shape that fails (out of memory, unsupported, any exception) gives one `status="failed"`
row with the error; a backend that cannot load gives one per shape; the output is always
written (atomically), so the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import sys
import time
from typing import Any

from . import energy, environment, job_gpus
from .backend_specs import sized_for, typed_settings
from .backends import Backend, LoadInfo, get_backend
from .io import write_json_atomic
from .lora import base_row_fields
from .manifest import VariantManifest
from .measured_columns import MEASURED_COLUMNS, write_rows
from .paths import REPO_ROOT
from .protocol import MeasureConfigError, Protocol, resolve_protocol
from .trial import Window, measure_trial, measure_window, timing_probe, trial_metrics, warm_up
from .warmup import WARMUP_CV_WINDOW, Warmup, coefficient_of_variation

logger = logging.getLogger(__name__)

ERROR_MAX_CHARS = 500


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
    return text[:ERROR_MAX_CHARS]


def _release_memory(device: str) -> None:
    """After a failure (e.g. out of memory), give the allocator its memory back."""
    gc.collect()
    if device == "cuda" and "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# -- the job ---------------------------------------------------------------------------------


def _failed_rows(row: dict[str, Any], shapes: list[tuple[int, int]], error: str) -> list[dict[str, Any]]:
    """One failure row per shape, carrying the error (the job goes on writing its rows)."""
    return [
        {**row, "batch_size": b, "prompt_tokens": p, "trial": 0, "status": "failed", "error": error} for b, p in shapes
    ]


def _base_row(
    model: str,
    quant: str,
    backend: str,
    protocol: Protocol,
    variant: VariantManifest,
    env: dict[str, Any],
    meter: energy.EnergyMeter,
    replicate: int,
) -> dict[str, Any]:
    """The fields every row of the job shares: the choice, the variant, the platform, the meter."""
    return {
        "model": model,
        "quant": quant,
        "backend": backend,
        "output_tokens": protocol.new_tokens,
        **variant.row_fields(),
        "device": protocol.device,
        "device_name": env["device_name"],
        "platform_id": env["platform_id"],
        "config_hash": env["config_hash"],
        "git_commit": env["git_commit"],
        **base_row_fields(),
        "replicate": replicate,
        "energy_gpu_indices": meter.gpu_label,
        "energy_assumption": meter.assumption,
    }


def _loaded_fields(load_info: LoadInfo, description: dict[str, Any]) -> dict[str, Any]:
    """What the loaded backend says about itself (not what the config intended)."""
    return {
        "compute_dtype": load_info.compute_dtype,  # what the loaded kernels compute in
        "kernel_path": load_info.kernel_path,
        "weight_bytes_memory": load_info.weight_bytes_memory,
        "decompressed_at_load": load_info.decompressed_at_load,
        "backend_version": description.get("version"),
        "backend_settings_json": json.dumps(description.get("settings", {}), sort_keys=True, default=str),
    }


def _idle_baseline(runner: Backend, meter: energy.EnergyMeter, protocol: Protocol) -> energy.IdleReading:
    idle = energy.IdleReading(None, 0.0, meter.source)
    try:
        runner.synchronize()
        idle = meter.idle_power(protocol.idle_baseline_s)
    except Exception as exc:  # no baseline: rows keep gross energy, energy_net_j stays empty
        meter.cancel()
        logger.error("idle baseline failed: %s", _error_text(exc))
    logger.info("idle baseline: %s W over %.2f s (%s)", idle.watts, idle.seconds, idle.source)
    return idle


def _measure_phases(
    runner: Backend,
    meter: energy.EnergyMeter,
    protocol: Protocol,
    idle: energy.IdleReading,
    base_row: dict[str, Any],
    phases: list,
    shapes: list[tuple[int, int]],
    shape_records: list[dict[str, Any]],
    gpu_states: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every shape in every model state (base, or adapter unmerged then merged); the records of
    each shape and the GPU state after it are appended to `shape_records` and `gpu_states`."""
    rows: list[dict[str, Any]] = []
    for fields, prepare in phases:
        phase_row = {**base_row, **fields}
        try:  # e.g. put an adapter on the model or merge it: outside every window
            phase_row.update(prepare(runner))
        except Exception as exc:
            error = _error_text(exc)
            logger.error("preparing %s failed: %s", fields, error)
            rows += _failed_rows(phase_row, shapes, error)
            continue
        for batch_size, prompt_tokens in shapes:
            shape_rows, record = _measure_shape(runner, meter, protocol, idle, phase_row, batch_size, prompt_tokens)
            rows.extend(shape_rows)
            shape_records.append(
                {**record, "adapter": phase_row["adapter"], "adapter_merged": phase_row["adapter_merged"]}
            )
            gpu_states.append(environment.capture_gpu_state(f"after b{batch_size} p{prompt_tokens}"))
    return rows


def run_job(
    config: dict[str, Any],
    model: str,
    quant: str,
    backend: str,
    variant_path: str,
    output: str,
    env_output: str,
    replicate: int = 1,
    gpu_resource: int | None = None,
    adapter_dir: str | None = None,
    merged_dir: str | None = None,
) -> None:
    """Measure every configured shape of one variant on one backend (one replicate of the job);
    write rows and environment. `gpu_resource`: the job's `gpu` resource (GPUs it was given).
    With `adapter_dir`, measure the variant with that LoRA adapter, unmerged then merged (on vllm
    from the merged checkpoint `merged_dir`)."""
    started = time.time()
    protocol = resolve_protocol(config)
    if isinstance(replicate, bool) or not isinstance(replicate, int) or replicate < 1:
        raise MeasureConfigError(f"replicate: expected an integer >= 1, got {replicate!r}")
    variant = VariantManifest.read(variant_path)
    backend_cls = get_backend(backend)
    # backend_settings.<backend>, checked by load_config; the typed instance from here on
    settings = typed_settings(backend, (config.get("backend_settings") or {}).get(backend))
    phases, phase_settings = _phases(backend, adapter_dir, merged_dir, variant, settings)
    # the workload sizes let backends size their KV cache / context to what is measured
    settings = sized_for(
        dataclasses.replace(settings, **phase_settings),
        {"max_new_tokens": protocol.new_tokens, "max_prompt_tokens": max(protocol.prompt_tokens)},
    )
    gpus = None
    if protocol.device == "cuda":  # before anything initialises CUDA in this process
        gpus = job_gpus.pin_job_gpus(job_gpus.gpus_needed(backend, settings, gpu_resource))
    meter = energy.select_meter(protocol.device, gpus, prefer=protocol.energy_source)
    logger.info(
        "measure %s/%s/%s replicate %d on %s (GPUs %s), energy source %s",
        *(model, quant, backend, replicate, protocol.device, meter.gpu_label, meter.source),
    )

    env = environment.capture(protocol.device, REPO_ROOT, config)
    gpu_states = [{**env.pop("gpu_state"), "label": "job-start"}]
    base_row = _base_row(model, quant, backend, protocol, variant, env, meter, replicate)
    shapes = protocol.shapes()
    rows: list[dict[str, Any]] = []
    shape_records: list[dict[str, Any]] = []
    idle = energy.IdleReading(None, 0.0, meter.source)
    load_info: LoadInfo | None = None
    description: dict[str, Any] = {}
    runner: Backend | None = None
    try:
        runner = backend_cls(settings, protocol.device)
        load_info = runner.load(variant)
        description = runner.describe()
        logger.info(
            "loaded %s with %s (%s) in %.2f s", quant, backend, load_info.kernel_path, load_info.load_s or float("nan")
        )
    except Exception as exc:  # the job still writes its rows: one failed row per shape
        error = _error_text(exc)
        logger.error("loading %s/%s on %s failed: %s", model, quant, backend, error)
        rows = _failed_rows(base_row, shapes, error)
        _close(runner)
        runner = None
        _release_memory(protocol.device)
    if runner is not None and load_info is not None:
        base_row.update(_loaded_fields(load_info, description))
        idle = _idle_baseline(runner, meter, protocol)
        rows = _measure_phases(runner, meter, protocol, idle, base_row, phases, shapes, shape_records, gpu_states)
        _close(runner)

    write_rows(rows, output)
    gpu_states.append(environment.capture_gpu_state("job-end"))
    env.update(
        job={
            "model": model,
            "quant": quant,
            "backend": backend,
            "replicate": replicate,
            "variant_path": str(variant_path),
            "gpus": None if gpus is None else dataclasses.asdict(gpus),
        },
        protocol=dataclasses.asdict(protocol),
        energy_meter=meter.describe(),
        idle_baseline=dataclasses.asdict(idle),
        load_info=None if load_info is None else dataclasses.asdict(load_info),
        backend_description=description,
        shapes=shape_records,
        gpu_states=gpu_states,
        **environment.summarise_gpu_states(gpu_states),
        rows=len(rows),
        failed_rows=sum(row["status"] == "failed" for row in rows),
        wall_s=time.time() - started,
    )
    write_json_atomic(env_output, env)
    logger.info("wrote %d rows (%d failed) to %s", len(rows), env["failed_rows"], output)


def _phases(
    backend: str, adapter_dir: str | None, merged_dir: str | None, variant: VariantManifest, settings: Any
) -> tuple[list, dict[str, Any]]:
    """The model states measured in turn, as (row fields, preparation), and the backend settings
    they need at load: the base model alone, or an adapter unmerged then merged
    (lora_build.measurement_phases; on vllm lora_vllm.measurement_phases)."""
    if adapter_dir is None:
        return [({}, lambda runner: {})], {}
    if backend == "vllm":
        from . import lora_vllm

        if merged_dir is None:
            raise MeasureConfigError("an adapter job on vllm needs the merged checkpoint (rule merge_adapter)")
        return (
            lora_vllm.measurement_phases(adapter_dir, merged_dir, variant.to_json()),
            lora_vllm.engine_settings(adapter_dir, settings),
        )
    from .lora_build import measurement_phases

    return measurement_phases(adapter_dir), {}


def _close(runner: Backend | None) -> None:
    if runner is not None:
        try:
            runner.close()
        except Exception as exc:
            logger.warning("closing the backend failed: %s", _error_text(exc))


def _measure_shape(
    runner: Backend,
    meter: energy.EnergyMeter,
    protocol: Protocol,
    idle: energy.IdleReading,
    base_row: dict[str, Any],
    batch_size: int,
    prompt_tokens: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Warm up and run every trial of one shape; a failure ends the shape with a failed row."""
    shape_row = {**base_row, "batch_size": batch_size, "prompt_tokens": prompt_tokens}
    rows: list[dict[str, Any]] = []
    record: dict[str, Any] = {"batch_size": batch_size, "prompt_tokens": prompt_tokens, "error": None}
    try:
        inputs = runner.prepare_inputs(batch_size, prompt_tokens, protocol.seed)
        warmed = warm_up(runner, inputs, protocol)
        record["warmup"] = dataclasses.asdict(warmed)
        logger.info(
            "b=%d p=%d: warmed up with %d runs in %.2f s (CV %s, converged %s)",
            batch_size,
            prompt_tokens,
            warmed.runs,
            warmed.seconds,
            warmed.cv,
            warmed.converged,
        )
        warm = warmed.row()
        for trial in range(protocol.trials):
            metrics = measure_trial(runner, meter, inputs, batch_size, protocol, idle)
            rows.append({**shape_row, **warm, **metrics, "trial": trial, "status": "ok", "error": None})
            logger.info(
                "b=%d p=%d trial %d: %.4f s/call, %.1f tok/s, %s J/token (%s)",
                batch_size,
                prompt_tokens,
                trial,
                metrics["latency_s"],
                metrics["tokens_per_s"],
                metrics["energy_j_per_output_token"],
                metrics["energy_source"],
            )
    except Exception as exc:
        error = _error_text(exc)
        logger.error("b=%d p=%d failed after %d trials: %s", batch_size, prompt_tokens, len(rows), error)
        record["error"] = error
        rows.append({**shape_row, "trial": len(rows), "status": "failed", "error": error})
        _release_memory(protocol.device)
    return rows, record


__all__ = [
    "MEASURED_COLUMNS",
    "WARMUP_CV_WINDOW",
    "MeasureConfigError",
    "Protocol",
    "Warmup",
    "Window",
    "coefficient_of_variation",
    "measure_trial",
    "measure_window",
    "resolve_protocol",
    "run_job",
    "timing_probe",
    "trial_metrics",
    "warm_up",
    "write_rows",
]
