"""The measurement protocol of one measure job: one variant on one backend, every shape.

Per job: capture the environment, pick the energy meter, load the backend once, take an
idle-power baseline. Per shape (batch size x prompt length): warm up, then `trials` trials.
Per trial, in this order:

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
from pathlib import Path
from typing import Any

from . import energy, environment, stats
from .aggregate import as_schema_type
from .backends import Backend, LoadInfo, get_backend
from .config import DEFAULTS, cuda_visible, resolve_device
from .io import write_json_atomic, write_parquet_atomic
from .lora import ROW_COLUMNS, base_row_fields
from .manifest import VariantManifest
from .paths import REPO_ROOT

logger = logging.getLogger(__name__)

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
    **ROW_COLUMNS,  # LoRA adapters (lora.py): 'none' on base-model rows
}

# Latencies of the last this-many warmup runs give the rolling coefficient of variation.
WARMUP_CV_WINDOW = 5
ERROR_MAX_CHARS = 500


class MeasureConfigError(ValueError):
    """A setting the protocol needs is missing or unusable (one line naming the field)."""


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The settings of one job, resolved for its device."""

    device: str
    batch_sizes: tuple[int, ...]
    prompt_tokens: tuple[int, ...]
    new_tokens: int
    seed: int
    trials: int
    warmup_runs: int
    warmup_min_s: float
    warmup_cv_threshold: float | None
    warmup_max_s: float
    min_window_s: float
    idle_baseline_s: float
    energy_source: str


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


@dataclasses.dataclass(frozen=True)
class Warmup:
    runs: int
    seconds: float
    cv: float | None


def _number(section: dict[str, Any], key: str, field: str, minimum: float = 0.0) -> float:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise MeasureConfigError(f"{field}: expected a number >= {minimum}, got {value!r}")
    return float(value)


def _per_device(section: dict[str, Any], key: str, device: str) -> float:
    value = section.get(key)
    if not isinstance(value, dict) or device not in value:
        raise MeasureConfigError(f"measurement.{key}: give seconds per device, e.g. {{cuda: 5.0, cpu: 0.25}} (missing {device!r})")
    return _number(value, device, f"measurement.{key}.{device}")


def _int_list(section: dict[str, Any], key: str, minimum: int) -> tuple[int, ...]:
    values = section.get(key)
    if not isinstance(values, list) or not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values):
        raise MeasureConfigError(f"workload.{key}: expected a non-empty list of integers >= {minimum}, got {values!r}")
    return tuple(values)


def resolve_protocol(config: dict[str, Any]) -> Protocol:
    """Check and resolve the workload and measurement settings before any expensive work."""
    device = resolve_device(config)
    if device not in ("cpu", "cuda"):
        raise MeasureConfigError(f"device: {device!r} is not a device; allowed: auto, cpu, cuda")
    if device == "cuda" and not cuda_visible():
        raise MeasureConfigError("device: 'cuda' requested but no NVIDIA GPU is visible; use device auto or cpu")
    workload = config.get("workload")
    measurement = config.get("measurement")
    if not isinstance(workload, dict):
        raise MeasureConfigError("workload: missing; give batch_sizes, prompt_tokens and new_tokens")
    if not isinstance(measurement, dict):
        raise MeasureConfigError("measurement: missing; give at least trials")
    measurement = {**DEFAULTS["measurement"], **measurement}  # the one place defaults live
    new_tokens = workload.get("new_tokens")
    if not isinstance(new_tokens, int) or isinstance(new_tokens, bool) or new_tokens < 2:
        raise MeasureConfigError(f"workload.new_tokens: expected an integer >= 2 (decode needs a second token), got {new_tokens!r}")
    trials = measurement.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise MeasureConfigError(f"measurement.trials: expected an integer >= 1, got {trials!r}")
    warmup_runs = measurement.get("warmup_runs")
    if not isinstance(warmup_runs, int) or isinstance(warmup_runs, bool) or warmup_runs < 0:
        raise MeasureConfigError(f"measurement.warmup_runs: expected an integer >= 0, got {warmup_runs!r}")
    threshold = measurement.get("warmup_cv_threshold")
    if threshold is not None:
        threshold = _number(measurement, "warmup_cv_threshold", "measurement.warmup_cv_threshold", 1e-9)
    source = measurement.get("energy_source")
    if source not in energy.PREFER_CHOICES:
        raise MeasureConfigError(f"measurement.energy_source: {source!r} is not a source; allowed: {', '.join(energy.PREFER_CHOICES)}")
    seed = config.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise MeasureConfigError(f"seed: expected an integer >= 0, got {seed!r}")
    return Protocol(
        device=device,
        batch_sizes=_int_list(workload, "batch_sizes", 1),
        prompt_tokens=_int_list(workload, "prompt_tokens", 1),
        new_tokens=new_tokens,
        seed=seed,
        trials=trials,
        warmup_runs=warmup_runs,
        warmup_min_s=_per_device(measurement, "warmup_min_s", device),
        warmup_cv_threshold=threshold,
        warmup_max_s=_number(measurement, "warmup_max_s", "measurement.warmup_max_s"),
        min_window_s=_per_device(measurement, "min_window_s", device),
        idle_baseline_s=_per_device(measurement, "idle_baseline_s", device),
        energy_source=source,
    )


# -- the protocol's steps ----------------------------------------------------------------------


def coefficient_of_variation(values: list[float]) -> float | None:
    """Sample standard deviation over mean; None for fewer than two values or a zero mean."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean > 0 else None


def warm_up(backend: Backend, inputs: Any, protocol: Protocol) -> Warmup:
    """2-token generate calls: at least `warmup_runs` of them and `warmup_min_s` seconds; with a
    CV threshold, on until the rolling latency CV is below it; never past `warmup_max_s`
    (except to finish the fixed count of runs)."""
    latencies: list[float] = []
    start = time.perf_counter()

    def done() -> bool:
        elapsed = time.perf_counter() - start
        if len(latencies) < protocol.warmup_runs:
            return False
        if elapsed >= protocol.warmup_max_s:
            return True
        if elapsed < protocol.warmup_min_s:
            return False
        if protocol.warmup_cv_threshold is None:
            return True
        cv = coefficient_of_variation(latencies[-WARMUP_CV_WINDOW:])
        return len(latencies) >= WARMUP_CV_WINDOW and cv is not None and cv <= protocol.warmup_cv_threshold

    while not done():
        began = time.perf_counter()
        backend.generate(inputs, 2)
        backend.synchronize()
        latencies.append(time.perf_counter() - began)
    return Warmup(len(latencies), time.perf_counter() - start, coefficient_of_variation(latencies[-WARMUP_CV_WINDOW:]))


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


def write_rows(rows: list[dict[str, Any]], output: str | Path) -> None:
    """The job's rows as Parquet, typed per MEASURED_COLUMNS, written atomically."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(MEASURED_COLUMNS))
    for column, kind in MEASURED_COLUMNS.items():
        frame[column] = as_schema_type(frame[column], kind)
    write_parquet_atomic(output, frame)


# -- the job ---------------------------------------------------------------------------------


def run_job(config: dict[str, Any], model: str, quant: str, backend: str, variant_path: str, output: str, env_output: str,
            adapter_dir: str | None = None) -> None:
    """Measure every configured shape of one variant on one backend; write rows and environment.
    With `adapter_dir`, measure the variant with that LoRA adapter, unmerged then merged."""
    started = time.time()
    protocol = resolve_protocol(config)
    variant = VariantManifest.read(variant_path)
    backend_cls = get_backend(backend)
    meter = energy.select_meter(protocol.device, prefer=protocol.energy_source)
    logger.info("measure %s/%s/%s on %s, energy source %s", model, quant, backend, protocol.device, meter.source)

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
    settings = {**workload, **((config.get("backend_settings") or {}).get(backend) or {})}
    try:
        runner = backend_cls(settings, protocol.device)
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
        for fields, prepare in _phases(adapter_dir):
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
        job={"model": model, "quant": quant, "backend": backend, "variant_path": str(variant_path)},
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


def _phases(adapter_dir: str | None) -> list:
    """The model states measured in turn, as (row fields, preparation): the base model alone,
    or an adapter unmerged then merged (lora_build.measurement_phases)."""
    if adapter_dir is None:
        return [({}, lambda runner: {})]
    from .lora_build import measurement_phases

    return measurement_phases(adapter_dir)


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
        warmup = warm_up(runner, inputs, protocol)
        record["warmup"] = dataclasses.asdict(warmup)
        logger.info("b=%d p=%d: warmed up with %d runs in %.2f s (CV %s)", batch_size, prompt_tokens, warmup.runs, warmup.seconds, warmup.cv)
        warm = {"warmup_runs": warmup.runs, "warmup_s": warmup.seconds, "warmup_cv": warmup.cv}
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
