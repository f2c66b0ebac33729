"""The protocol's steps for one shape of a measure job (the job itself is `measure`).

Warm up until steady (`warmup`), then per trial, in this order:

1. prefill window: `generate(inputs, 1)` repeated until the window lasts `min_window_s`.
   With `measurement.prefill_window: for-energy` it is measured only where it adds what the
   full window cannot give: an energy split into prefill and decode (the job's meter reads
   energy), or TTFT on a backend that does not stream in its window. Elsewhere TTFT is the
   mean time to the first streamed token of the full window's calls (`ttft_source`);
2. full window: `generate(inputs, new_tokens)` repeated likewise (peak memory read here).
   Where the backend streams on its generate path (`Backend.streams_in_window`), every call
   of this window is streamed: a per-token callback appends one clock read after the call's
   start, and the intervals between a call's tokens are the distribution of time per output
   token;
3. otherwise (vLLM, whose streaming steps the engine by hand), a streamed timing probe
   outside both windows: one generate with that callback.

Inside a window the harness does nothing but call `generate` and read a clock between
calls (and, streamed, once per token); meters are read only at the window's edges, after
the device has synchronised. Energy and time per generate call are window totals divided
by the repetitions. Rows say where the token intervals came from (`token_timing_source`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import statistics
import time
from typing import Any

from . import energy, stats, warmup
from .backends import Backend
from .protocol import Protocol
from .warmup import Warmup


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


def warm_up(backend: Backend, inputs: Any, protocol: Protocol) -> Warmup:
    """Warm up with the protocol's settings (see `warmup`)."""
    return warmup.warm_up(
        backend,
        inputs,
        protocol.new_tokens,
        protocol.warmup_runs,
        protocol.warmup_min_s,
        protocol.warmup_cv_threshold,
        protocol.warmup_max_s,
    )


def measure_window(
    backend: Backend,
    meter: energy.EnergyMeter,
    inputs: Any,
    new_tokens: int,
    min_window_s: float,
    token_stamps: list[list[float]] | None = None,
) -> Window:
    """Repeat `generate(inputs, new_tokens)` until at least `min_window_s` have passed, inside
    one energy window. Only a clock read separates the calls. With `token_stamps`, each call
    is streamed and appends the list of its start's and its tokens' clock reads."""
    generate = backend.generate
    clock = time.perf_counter
    backend.synchronize()
    meter.begin()
    start = clock()
    repetitions = 0
    try:
        while True:
            if token_stamps is None:
                generate(inputs, new_tokens)
            else:
                stamps: list[float] = [clock()]  # the call's start, then one read per token
                token_stamps.append(stamps)
                generate(inputs, new_tokens, on_token=lambda stamps=stamps: stamps.append(clock()))
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


def token_intervals(token_stamps: list[list[float]]) -> list[float]:
    """Seconds between successive output tokens within each streamed call (new_tokens - 1 per
    call); each call's list is its start, then its tokens."""
    return [later - earlier for stamps in token_stamps for earlier, later in itertools.pairwise(stamps[1:])]


def first_token_s(token_stamps: list[list[float]]) -> float | None:
    """Mean seconds from a streamed call's start to its first token (None: no call streamed a token)."""
    firsts = [stamps[1] - stamps[0] for stamps in token_stamps if len(stamps) > 1]
    return statistics.fmean(firsts) if firsts else None


def timing_probe(backend: Backend, inputs: Any, new_tokens: int) -> list[float]:
    """Seconds between successive output tokens of one streamed generate (new_tokens - 1 values)."""
    clock = time.perf_counter
    backend.synchronize()
    stamps: list[float] = [clock()]
    backend.generate(inputs, new_tokens, on_token=lambda: stamps.append(clock()))
    return token_intervals([stamps])


def separate_prefill_window(runner: Backend, meter: energy.EnergyMeter, protocol: Protocol) -> bool:
    """Whether a trial measures the prefill-only window (see the module docstring, step 1)."""
    if protocol.prefill_window == "always" or not runner.streams_in_window:
        return True
    return not isinstance(meter, energy.UnavailableMeter)  # split the energy it reads


def trial_metrics(
    prefill: Window | None,
    full: Window,
    intervals: list[float],
    batch_size: int,
    new_tokens: int,
    idle: energy.IdleReading,
    streamed_ttft_s: float | None = None,
) -> dict[str, Any]:
    """The measured columns of one trial from its windows and token timings. Without a prefill
    window, TTFT is `streamed_ttft_s` (the full window's mean time to first token) and the
    prefill and decode energy are empty."""
    if prefill is None and streamed_ttft_s is None:
        raise ValueError("a trial without a prefill window needs the streamed time to first token")
    ttft = prefill.per_call_s if prefill is not None else streamed_ttft_s
    latency = full.per_call_s
    output_tokens = batch_size * new_tokens
    energy_j = full.per_call(full.reading.joules)
    energy_u = full.per_call(full.reading.uncertainty_j)
    prefill_j = None if prefill is None else prefill.per_call(prefill.reading.joules)
    prefill_u = None if prefill is None else prefill.per_call(prefill.reading.uncertainty_j)
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
        "prefill_window_s": None if prefill is None else prefill.elapsed_s,
        "prefill_window_repetitions": None if prefill is None else prefill.repetitions,
        "ttft_source": "prefill-window" if prefill is not None else "full-window-stream",
    }


def measure_trial(
    runner: Backend,
    meter: energy.EnergyMeter,
    inputs: Any,
    batch_size: int,
    protocol: Protocol,
    idle: energy.IdleReading,
) -> dict[str, Any]:
    """One trial: prefill window (where `separate_prefill_window`), full window (peak memory,
    streamed where the backend streams on its generate path), else the separate streamed
    timing probe."""
    prefill = None
    if separate_prefill_window(runner, meter, protocol):
        prefill = measure_window(runner, meter, inputs, 1, protocol.min_window_s)
    runner.peak_memory_reset()
    stamps: list[list[float]] | None = [] if runner.streams_in_window else None
    full = measure_window(runner, meter, inputs, protocol.new_tokens, protocol.min_window_s, stamps)
    peak = runner.peak_memory_bytes()
    streamed_ttft = None
    if stamps is not None:
        intervals, source, streamed_ttft = token_intervals(stamps), "full-window", first_token_s(stamps)
    else:
        intervals, source = timing_probe(runner, inputs, protocol.new_tokens), "separate-probe"
    metrics = trial_metrics(prefill, full, intervals, batch_size, protocol.new_tokens, idle, streamed_ttft)
    return {**metrics, "peak_memory_bytes": peak, "token_timing_source": source}
