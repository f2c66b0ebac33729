"""The measurement protocol of one measure job: one variant on one backend, every shape.

Per job (one replicate, in a fresh process): pin the job to its GPUs (`job_gpus`), capture
the environment, pick the energy meter for exactly those GPUs (`energy.select_meter`), load
the backend once, take an idle-power baseline. Per shape (batch size x prompt length): warm
up until steady (`warmup`), then `trials` trials. Per trial, in this order:

1. prefill window: `generate(inputs, 1)` repeated until the window lasts `min_window_s`;
2. full window: `generate(inputs, new_tokens)` repeated likewise (peak memory read here);
3. streamed timing probe, outside both windows: one generate with a per-token callback
   for the distribution of time per output token.

Inside a window the harness does nothing but call `generate` and read a clock between
calls; meters are read only at the window's edges, after the device has synchronised.
Energy and time per generate call are window totals divided by the repetitions.

A shape that fails (out of memory, unsupported, any exception) gives one `status="failed"`
row with the error; a backend that cannot load gives one per shape; the output is always
written (atomically), so the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import statistics
import sys
import time
from typing import Any

from . import energy, environment, job_gpus, stats, warmup
from .backends import Backend, LoadInfo, get_backend
from .io import write_json_atomic
from .lora import base_row_fields
from .manifest import VariantManifest
from .measured_columns import MEASURED_COLUMNS, write_rows
from .paths import REPO_ROOT
from .protocol import MeasureConfigError, Protocol, resolve_protocol
from .warmup import WARMUP_CV_WINDOW, Warmup, coefficient_of_variation

logger = logging.getLogger(__name__)

ERROR_MAX_CHARS = 500


@dataclasses.dataclass(frozen=True)
class Window:
    """One energy window: `repetitions` identical generate calls."""

    repetitions: int
    elapsed_s: float
    reading: energy.EnergyReading

    @property
    def per_call_s(self) -> float:
        return self.elapsed_s / self.repetitions

    def per_call(self, value: float | None) -> float | None:
        return None if value is None else value / self.repetitions


# -- the protocol's steps ----------------------------------------------------------------------


def warm_up(backend: Backend, inputs: Any, protocol: Protocol) -> Warmup:
    """Warm up with the protocol's settings (see `warmup`)."""
    return warmup.warm_up(backend, inputs, protocol.new_tokens, protocol.warmup_runs, protocol.warmup_min_s,
                          protocol.warmup_cv_threshold, protocol.warmup_max_s)


def measure_window(backend: Backend, meter: energy.EnergyMeter, inputs: Any, new_tokens: int, min_window_s: float) -> Window:
    """Repeat `generate(inputs, new_tokens)` until at least `min_window_s` have passed, inside
    one energy window. Only a clock read separates the calls."""
    generate = backend.generate
    clock = time.perf_counter
    backend.synchronize()
    meter.begin()
    start = clock()
    repetitions = 0
    try:
        while True:
            generate(inputs, new_tokens)
            repetitions += 1
            if clock() - start >= min_window_s:
                break
        backend.synchronize()
    except BaseException:
        meter.cancel()  # so that the next window can open
        raise
    elapsed = clock() - start
    reading = meter.end()
    return Window(repetitions, elapsed, reading)


def timing_probe(backend: Backend, inputs: Any, new_tokens: int) -> list[float]:
    """Seconds between successive output tokens of one streamed generate (new_tokens - 1 values)."""
    stamps: list[float] = []
    clock = time.perf_counter
    backend.synchronize()
    backend.generate(inputs, new_tokens, on_token=lambda: stamps.append(clock()))
    return [later - earlier for earlier, later in zip(stamps, stamps[1:])]


def trial_metrics(
    prefill: Window, full: Window, intervals: list[float], batch_size: int, new_tokens: int, idle: energy.IdleReading
) -> dict[str, Any]:
    """The measured columns of one trial from its two windows and its timing probe."""
    ttft = prefill.per_call_s
    latency = full.per_call_s
    output_tokens = batch_size * new_tokens
    energy_j = full.per_call(full.reading.joules)
    energy_u = full.per_call(full.reading.uncertainty_j)
    prefill_j = prefill.per_call(prefill.reading.joules)
    prefill_u = prefill.per_call(prefill.reading.uncertainty_j)
    decode_j = decode_u = None
    if energy_j is not None and prefill_j is not None:
        decode_j = energy_j - prefill_j
        if energy_u is not None and prefill_u is not None:
            decode_u = math.hypot(energy_u, prefill_u)  # independent windows
    net_j = None
    if energy_j is not None and idle.watts is not None:
        net_j = energy_j - idle.watts * latency
    per_device = {name: joules / full.repetitions for name, joules in full.reading.per_device.items()}
    return {
        "latency_s": latency,
        "ttft_s": ttft,
        "tpot_s": (latency - ttft) / (new_tokens - 1),
        "tpot_stream_mean_s": statistics.fmean(intervals) if intervals else None,
        "tpot_p50_s": stats.tail_percentile(intervals, 50),
        "tpot_p90_s": stats.tail_percentile(intervals, 90),
        "tpot_p99_s": stats.tail_percentile(intervals, 99),
        "tokens_per_s": output_tokens / latency,
        "energy_j": energy_j,
        "energy_j_per_output_token": None if energy_j is None else energy_j / output_tokens,
        "energy_uncertainty_j": energy_u,
        "energy_prefill_j": prefill_j,
        "energy_prefill_uncertainty_j": prefill_u,
        "energy_decode_j": decode_j,
        "energy_decode_uncertainty_j": decode_u,
        "energy_net_j": net_j,
        "idle_power_w": idle.watts,
        "energy_source": full.reading.source,
        "energy_is_estimate": full.reading.is_estimate,
        "energy_per_device_json": json.dumps(per_device, sort_keys=True) if per_device else None,
        "energy_cpu_j": full.per_call(full.reading.cpu_j),
        "energy_dram_j": full.per_call(full.reading.dram_j),
        "energy_unavailable_reason": full.reading.reason,
        "window_s": full.elapsed_s,
        "window_repetitions": full.repetitions,
        "prefill_window_s": prefill.elapsed_s,
        "prefill_window_repetitions": prefill.repetitions,
    }


def measure_trial(
    runner: Backend, meter: energy.EnergyMeter, inputs: Any, batch_size: int, protocol: Protocol, idle: energy.IdleReading
) -> dict[str, Any]:
    """One trial: prefill window, full window (peak memory), then the streamed timing probe."""
    prefill = measure_window(runner, meter, inputs, 1, protocol.min_window_s)
    runner.peak_memory_reset()
    full = measure_window(runner, meter, inputs, protocol.new_tokens, protocol.min_window_s)
    peak = runner.peak_memory_bytes()
    intervals = timing_probe(runner, inputs, protocol.new_tokens)
    metrics = trial_metrics(prefill, full, intervals, batch_size, protocol.new_tokens, idle)
    return {**metrics, "peak_memory_bytes": peak}


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


def run_job(config: dict[str, Any], model: str, quant: str, backend: str, variant_path: str, output: str,
            env_output: str, replicate: int = 1, gpu_resource: int | None = None,
            adapter_dir: str | None = None, merged_dir: str | None = None) -> None:
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
    settings = (config.get("backend_settings") or {}).get(backend) or {}
    phases, phase_settings = _phases(backend, adapter_dir, merged_dir, variant, settings)
    gpus = None
    if protocol.device == "cuda":  # before anything initialises CUDA in this process
        gpus = job_gpus.pin_job_gpus(job_gpus.gpus_needed(backend, settings, gpu_resource))
    meter = energy.select_meter(protocol.device, gpus, prefer=protocol.energy_source)
    logger.info("measure %s/%s/%s replicate %d on %s (GPUs %s), energy source %s", model, quant, backend, replicate,
                protocol.device, meter.gpu_label, meter.source)

    env = environment.capture(protocol.device, REPO_ROOT, config)
    gpu_states = [{**env.pop("gpu_state"), "label": "job-start"}]
    base_row: dict[str, Any] = {
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
    shapes = [(b, p) for b in protocol.batch_sizes for p in protocol.prompt_tokens]
    rows: list[dict[str, Any]] = []
    shape_records: list[dict[str, Any]] = []
    idle = energy.IdleReading(None, 0.0, meter.source)
    load_info: LoadInfo | None = None
    description: dict[str, Any] = {}
    runner: Backend | None = None

    # the workload sizes let backends size their KV cache / context to what is measured
    workload = {
        "max_new_tokens": protocol.new_tokens,
        "max_prompt_tokens": max(protocol.prompt_tokens),
        "max_batch_size": max(protocol.batch_sizes),
    }
    try:
        runner = backend_cls({**workload, **settings, **phase_settings}, protocol.device)
        load_info = runner.load(variant)
        description = runner.describe()
        logger.info("loaded %s with %s (%s) in %.2f s", quant, backend, load_info.kernel_path, load_info.load_s or float("nan"))
    except Exception as exc:  # the job still writes its rows: one failed row per shape
        error = _error_text(exc)
        logger.error("loading %s/%s on %s failed: %s", model, quant, backend, error)
        rows = [{**base_row, "batch_size": b, "prompt_tokens": p, "trial": 0, "status": "failed", "error": error} for b, p in shapes]
        _close(runner)
        runner = None
        _release_memory(protocol.device)

    if runner is not None and load_info is not None:
        base_row.update(
            compute_dtype=load_info.compute_dtype,  # what the loaded kernels compute in, not the intent
            kernel_path=load_info.kernel_path,
            weight_bytes_memory=load_info.weight_bytes_memory,
            decompressed_at_load=load_info.decompressed_at_load,
            backend_version=description.get("version"),
            backend_settings_json=json.dumps(description.get("settings", {}), sort_keys=True, default=str),
        )
        try:
            runner.synchronize()
            idle = meter.idle_power(protocol.idle_baseline_s)
        except Exception as exc:  # no baseline: rows keep gross energy, energy_net_j stays empty
            meter.cancel()
            logger.error("idle baseline failed: %s", _error_text(exc))
        logger.info("idle baseline: %s W over %.2f s (%s)", idle.watts, idle.seconds, idle.source)
        for fields, prepare in phases:
            phase_row = {**base_row, **fields}
            try:  # e.g. put an adapter on the model or merge it: outside every window
                phase_row.update(prepare(runner))
            except Exception as exc:
                error = _error_text(exc)
                logger.error("preparing %s failed: %s", fields, error)
                rows += [{**phase_row, "batch_size": b, "prompt_tokens": p, "trial": 0, "status": "failed", "error": error}
                         for b, p in shapes]
                continue
            for batch_size, prompt_tokens in shapes:
                shape_rows, record = _measure_shape(runner, meter, protocol, idle, phase_row, batch_size, prompt_tokens)
                rows.extend(shape_rows)
                shape_records.append({**record, "adapter": phase_row["adapter"], "adapter_merged": phase_row["adapter_merged"]})
                gpu_states.append(environment.capture_gpu_state(f"after b{batch_size} p{prompt_tokens}"))
        _close(runner)

    write_rows(rows, output)
    gpu_states.append(environment.capture_gpu_state("job-end"))
    env.update(
        job={"model": model, "quant": quant, "backend": backend, "replicate": replicate, "variant_path": str(variant_path),
             "gpus": None if gpus is None else dataclasses.asdict(gpus)},
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


def _phases(backend: str, adapter_dir: str | None, merged_dir: str | None, variant: VariantManifest,
            settings: dict[str, Any]) -> tuple[list, dict[str, Any]]:
    """The model states measured in turn, as (row fields, preparation), and the backend settings
    they need at load: the base model alone, or an adapter unmerged then merged
    (lora_build.measurement_phases; on vllm lora_vllm.measurement_phases)."""
    if adapter_dir is None:
        return [({}, lambda runner: {})], {}
    if backend == "vllm":
        from . import lora_vllm

        if merged_dir is None:
            raise MeasureConfigError("an adapter job on vllm needs the merged checkpoint (rule merge_adapter)")
        return (lora_vllm.measurement_phases(adapter_dir, merged_dir, variant.to_json()),
                lora_vllm.engine_settings(adapter_dir, settings))
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
        logger.info("b=%d p=%d: warmed up with %d runs in %.2f s (CV %s, converged %s)", batch_size, prompt_tokens,
                    warmed.runs, warmed.seconds, warmed.cv, warmed.converged)
        warm = warmed.row()
        for trial in range(protocol.trials):
            metrics = measure_trial(runner, meter, inputs, batch_size, protocol, idle)
            rows.append({**shape_row, **warm, **metrics, "trial": trial, "status": "ok", "error": None})
            logger.info(
                "b=%d p=%d trial %d: %.4f s/call, %.1f tok/s, %s J/token (%s)",
                batch_size, prompt_tokens, trial, metrics["latency_s"], metrics["tokens_per_s"],
                metrics["energy_j_per_output_token"], metrics["energy_source"],
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
    "MeasureConfigError",
    "Protocol",
    "WARMUP_CV_WINDOW",
    "Window",
    "Warmup",
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
