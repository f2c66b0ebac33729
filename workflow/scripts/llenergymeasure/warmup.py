"""Warm-up: run the measured call until its latency is steady, and say whether it got there.

Each warm-up call is the call the trials measure, `generate(inputs, new_tokens)` of the same
shape, so that every code path a trial takes (prefill, a full-length decode, the KV cache
grown to its final size, llama.cpp's compute buffers) has run before trial 0. Warm-up goes
on while any of these holds:

* fewer than `warmup_runs` calls;
* less than `warmup_min_s` seconds (the time floor: CPU frequency, GPU clocks, temperature);
* with `warmup_cv_threshold`: fewer than `WARMUP_CV_WINDOW` calls, or the coefficient of
  variation of the last `WARMUP_CV_WINDOW` latencies is above the threshold,

and stops at `warmup_max_s` whatever the CV (it never cuts the fixed count short). Every row
records the calls, the seconds, the final rolling CV and `warmup_converged`: True when the CV
stop was met, False when the cap ended an unsteady warm-up, None when no CV stop was set.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

from .backends import Backend

# Latencies of the last this-many warm-up calls give the rolling coefficient of variation.
WARMUP_CV_WINDOW = 5


@dataclasses.dataclass(frozen=True)
class Warmup:
    runs: int
    seconds: float
    cv: float | None
    converged: bool | None

    def row(self) -> dict[str, Any]:
        """The warm-up columns of every row of the shape."""
        return {
            "warmup_runs": self.runs,
            "warmup_s": self.seconds,
            "warmup_cv": self.cv,
            "warmup_converged": self.converged,
        }


def coefficient_of_variation(values: list[float]) -> float | None:
    """Sample standard deviation over mean; None for fewer than two values or a zero mean."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean > 0 else None


def warm_up(
    backend: Backend, inputs: Any, new_tokens: int, runs: int, min_s: float, cv_threshold: float | None, max_s: float
) -> Warmup:
    """Call `generate(inputs, new_tokens)` until steady (see the module docstring)."""
    latencies: list[float] = []
    start = time.perf_counter()

    def steady() -> bool:
        cv = coefficient_of_variation(latencies[-WARMUP_CV_WINDOW:])
        return len(latencies) >= WARMUP_CV_WINDOW and cv is not None and cv <= cv_threshold

    while True:
        elapsed = time.perf_counter() - start
        if len(latencies) >= runs:
            if elapsed >= max_s:
                break
            if elapsed >= min_s and (cv_threshold is None or steady()):
                break
        began = time.perf_counter()
        backend.generate(inputs, new_tokens)
        backend.synchronize()
        latencies.append(time.perf_counter() - began)
    converged = None if cv_threshold is None else steady()
    return Warmup(
        len(latencies), time.perf_counter() - start, coefficient_of_variation(latencies[-WARMUP_CV_WINDOW:]), converged
    )


__all__ = ["WARMUP_CV_WINDOW", "Warmup", "coefficient_of_variation", "warm_up"]
