"""One serving job: start the server for a variant, run every (rate, trial), write the rows.

Per job: resolve the settings, choose the energy meter, start the server (`server`), send a
few warm-up requests. Per load level (a Poisson rate, or a concurrency) and trial: fresh
seeded requests, the load run, the steady-state window, one row. A run without a steady
state gives a `failed` row that says so, never numbers. The server is always stopped.

Energy over the steady window needs a sensor that sees the server: NVML GPUs (zeus-nvml) or
CPU packages (zeus-rapl), read in back-to-back slices while the load runs. The CPU-TDP
estimate counts only this process's CPU time, not the server's, so serving rows never use
it: without a sensor, energy stays empty and `energy_unavailable_reason` says why.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from .. import energy, environment, schema
from ..backend_specs import sized_for, typed_settings
from ..backends.vllm import engine_settings, runtime_environment, vllm_version
from ..defaults import resolve_device
from ..io import write_json_atomic, write_parquet_atomic
from ..paths import REPO_ROOT
from . import load, server, steady

logger = logging.getLogger(__name__)

SENSOR_SOURCES = ("zeus-nvml", "zeus-rapl")
WARMUP_REQUESTS = 2

# Columns of results/serving/<model>/<quant>/<backend>.parquet (config/schema/serving.schema.yaml)
SERVING_COLUMNS: dict[str, str] = {
    "model": "string",
    "quant": "string",
    "backend": "string",
    "arrival": "string",
    "request_rate": "number",
    "concurrency": "integer",
    "trial": "integer",
    "status": "string",
    "error": "string",
    "requests": "integer",
    "requests_sent": "integer",
    "requests_completed": "integer",
    "requests_failed": "integer",
    "duration_s": "number",
    "output_tokens_total": "integer",
    "output_tokens_per_s": "number",
    "requests_per_s": "number",
    "goodput_requests_per_s": "number",
    "goodput_share": "number",
    "slo_ttft_s": "number",
    "slo_tpot_s": "number",
    "steady_start_s": "number",
    "steady_s": "number",
    "steady_share": "number",
    "steady_fill_level": "integer",
    "steady_output_tokens": "integer",
    "steady_output_tokens_per_s": "number",
    "ttft_mean_s": "number",
    "ttft_p50_s": "number",
    "ttft_p90_s": "number",
    "ttft_p99_s": "number",
    "itl_mean_s": "number",
    "itl_p50_s": "number",
    "itl_p90_s": "number",
    "itl_p99_s": "number",
    "tpot_mean_s": "number",
    "tpot_p50_s": "number",
    "tpot_p90_s": "number",
    "tpot_p99_s": "number",
    "e2e_mean_s": "number",
    "e2e_p50_s": "number",
    "e2e_p90_s": "number",
    "e2e_p99_s": "number",
    "energy_steady_j": "number",
    "energy_j_per_output_token": "number",
    "energy_source": "string",
    "energy_unavailable_reason": "string",
    "kv_cache_memory_bytes": "integer",
    "max_num_seqs": "integer",
    "server_startup_s": "number",
    "backend_version": "string",
    "device": "string",
    "device_name": "string",
    "platform_id": "string",
    "config_hash": "string",
    "git_commit": "string",
}
REQUEST_COLUMNS: dict[str, str] = {
    "request_rate": "number",
    "concurrency": "integer",
    "trial": "integer",
    "index": "integer",
    "prompt_tokens": "integer",
    "requested_tokens": "integer",
    "output_tokens": "integer",
    "sent_s": "number",
    "ttft_s": "number",
    "tpot_s": "number",
    "e2e_s": "number",
    "error": "string",
}


class EnergySlices:
    """Back-to-back meter windows of `slice_s` on a thread, while a load run goes on."""

    def __init__(self, meter: energy.EnergyMeter, slice_s: float) -> None:
        self.meter, self.slice_s = meter, slice_s
        self.slices: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        mark = time.perf_counter()  # each slice starts where the last ended: they tile the run
        while not self._stop.is_set():
            self.meter.begin()
            self._stop.wait(self.slice_s)
            reading = self.meter.end()
            now = time.perf_counter()
            if reading.joules is not None:  # a slice that read nothing leaves a gap: no window energy then
                self.slices.append((mark, now, reading.joules))
            mark = now

    def __enter__(self) -> EnergySlices:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _frame(rows: list[dict[str, Any]], columns: dict[str, str]) -> Any:
    return schema.typed_frame(rows, columns)


def _levels(serving: dict[str, Any]) -> list[tuple[float | None, int | None]]:
    if serving["arrival"] == "poisson":
        return [(float(rate), None) for rate in serving["rates"]]
    return [(None, int(level)) for level in serving["concurrency"]]


def _request_rows(
    records: list[load.Record], start: float, rate: float | None, concurrency: int | None, trial: int
) -> list[dict[str, Any]]:
    return [
        {
            "request_rate": rate,
            "concurrency": concurrency,
            "trial": trial,
            "index": r.index,
            "prompt_tokens": r.prompt_tokens,
            "requested_tokens": r.requested_tokens,
            "output_tokens": r.output_tokens,
            "sent_s": None if r.sent is None else r.sent - start,
            "ttft_s": r.ttft_s,
            "tpot_s": r.tpot_s,
            "e2e_s": r.e2e_s,
            "error": r.error,
        }
        for r in records
    ]


def _sensorless_reason(meter: energy.EnergyMeter) -> str | None:
    """Why the server's energy cannot be measured (None: a sensor sees it)."""
    if meter.source in SENSOR_SOURCES:
        return None
    return (
        f"no energy sensor sees the server (meter {meter.source}: {meter.describe().get('reason') or 'no NVML or RAPL'}; "
        "the CPU-TDP estimate covers only this process's CPU time)"
    )


def _serve_trial(
    running: Any,
    serving: dict[str, Any],
    requests: list,
    row: dict[str, Any],
    rate: float | None,
    concurrency: int | None,
    meter: energy.EnergyMeter,
    reason: str | None,
) -> tuple[dict[str, Any], list]:
    """One (load level, trial) against the running server: its row and the request records."""
    run = (running.url, server.SERVED_MODEL_NAME, requests, concurrency, serving["max_duration_s"])
    if reason is None:
        with EnergySlices(meter, serving["energy_slice_s"]) as sliced:
            start, records = load.run_load(*run)
    else:
        start, records = load.run_load(*run)
    request_rows = _request_rows(records, start, rate, concurrency, row["trial"])
    try:
        window = steady.steady_window(records, concurrency)
    except steady.NoSteadyState as exc:
        logger.error(
            "rate %s concurrency %s trial %d refused: no steady state: %s", rate, concurrency, row["trial"], exc
        )
        return {**row, "status": "failed", "error": f"no steady state: {exc}"}, request_rows
    metrics = steady.serving_metrics(records, window, serving["slo"]["ttft_s"], serving["slo"]["tpot_s"])
    joules = steady.window_energy(sliced.slices, window.start, window.end) if reason is None else None
    per_token = None if joules is None else joules / metrics["steady_output_tokens"]
    logger.info(
        "rate %s concurrency %s trial %d: %d/%d completed, TTFT p50 %.3f s p90 %.3f s, ITL p50 %.4f s "
        "p90 %.4f s, steady %.1f s (%.0f %% of the run, fill %d), J/token %s",
        *(rate, concurrency, row["trial"], metrics["requests_completed"], serving["requests"]),
        *(metrics["ttft_p50_s"], metrics["ttft_p90_s"], metrics["itl_p50_s"], metrics["itl_p90_s"]),
        *(metrics["steady_s"], 100 * metrics["steady_share"], metrics["steady_fill_level"]),
        per_token if reason is None else f"unavailable ({reason})",
    )
    ok = {
        **row,
        **metrics,
        "status": "ok",
        "error": None,
        "energy_steady_j": joules,
        "energy_j_per_output_token": per_token,
    }
    return ok, request_rows


def run_serving_job(
    config: dict[str, Any],
    model: str,
    quant: str,
    backend: str,
    variant_path: str,
    output: str,
    requests_output: str,
    env_output: str,
    server_log: str,
) -> None:
    """Serve one variant on vLLM and measure every configured load level and trial."""
    started = time.time()
    serving = config["serving"]
    device = resolve_device(config)
    variant = json.loads(Path(variant_path).read_text())
    prompt_max = serving["prompt_tokens"].get("max", serving["prompt_tokens"].get("value"))
    output_max = serving["output_tokens"].get("max", serving["output_tokens"].get("value"))
    settings = sized_for(
        typed_settings(backend, (config.get("backend_settings") or {}).get(backend)),
        {"max_prompt_tokens": prompt_max, "max_new_tokens": output_max},
    )
    engine = engine_settings(variant, settings, device)
    run_env = runtime_environment(device, settings, in_process=False)
    meter = energy.select_meter(device, prefer=config["measurement"]["energy_source"])
    reason = _sensorless_reason(meter)
    env = environment.capture(device, REPO_ROOT, config)
    env.pop("gpu_state", None)
    vocab = int(json.loads((Path(engine["model"]) / "config.json").read_text())["vocab_size"])
    base = {
        "model": model,
        "quant": quant,
        "backend": backend,
        "arrival": serving["arrival"],
        "requests": serving["requests"],
        "backend_version": vllm_version(),
        "device": device,
        "device_name": env["device_name"],
        "platform_id": env["platform_id"],
        "config_hash": env["config_hash"],
        "git_commit": env["git_commit"],
        "kv_cache_memory_bytes": engine.get("kv_cache_memory_bytes"),
        "max_num_seqs": engine.get("max_num_seqs"),
        "energy_source": meter.source if reason is None else "unavailable",
        "energy_unavailable_reason": reason,
    }
    rows: list[dict[str, Any]] = []
    request_rows: list[dict[str, Any]] = []
    Path(server_log).write_text("")
    with server.running_server(engine, run_env, server_log, serving["server_start_timeout_s"]) as running:
        base["server_startup_s"] = running.startup_s
        warm = load.make_requests(
            WARMUP_REQUESTS, serving["prompt_tokens"], serving["output_tokens"], vocab, config["seed"], None
        )
        load.run_load(running.url, server.SERVED_MODEL_NAME, warm, 1, serving["max_duration_s"])
        for level_index, (rate, concurrency) in enumerate(_levels(serving)):
            for trial in range(serving["trials"]):
                seed = config["seed"] + 1 + 1000 * level_index + trial
                requests = load.make_requests(
                    serving["requests"], serving["prompt_tokens"], serving["output_tokens"], vocab, seed, rate
                )
                row = {**base, "request_rate": rate, "concurrency": concurrency, "trial": trial}
                row, records = _serve_trial(running, serving, requests, row, rate, concurrency, meter, reason)
                rows.append(row)
                request_rows += records
        command = running.command
    write_parquet_atomic(output, _frame(rows, SERVING_COLUMNS))
    write_parquet_atomic(requests_output, _frame(request_rows, REQUEST_COLUMNS))
    env.update(
        job={"model": model, "quant": quant, "backend": backend, "scenario": "serving"},
        serving=serving,
        engine_settings=engine,
        server_environment=run_env,
        server_command=command,
        energy_meter=meter.describe(),
        rows=len(rows),
        failed_rows=sum(r["status"] == "failed" for r in rows),
        wall_s=time.time() - started,
    )
    write_json_atomic(env_output, env)
    logger.info("wrote %d serving rows (%d failed) to %s", len(rows), env["failed_rows"], output)


__all__ = ["REQUEST_COLUMNS", "SERVING_COLUMNS", "EnergySlices", "run_serving_job"]
