"""The steady state of a serving run, and its row.

In flight at time t: requests sent and not yet finished (from the client's records). The
steady-state window, after ML.ENERGY's definition ("from the point the running batch first
fills until requests start draining"), made concrete:

* fills: the first moment the in-flight count reaches the fill level. At a fixed concurrency
  the fill level is the concurrency (capped at the request count). With Poisson arrivals it is
  the time-weighted mean in-flight count over the arrival phase (first to last send), rounded,
  at least 1: the batch size the arrival rate sustains (Little's law, L = lambda W).
* drains: the last send. After it no request arrives, so the running batch only shrinks.

A run whose window is empty (it drains before it fills) or completes no token inside it has
no steady state, and `steady_window` raises `NoSteadyState`. Energy over the window divided by
the output tokens streamed inside it is J per token; without a sensor both stay empty and the
row says why.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from .load import Record


class NoSteadyState(RuntimeError):
    """The run never reached a steady state."""


@dataclass(frozen=True)
class SteadyWindow:
    start: float
    end: float
    fill_level: int
    run_start: float
    run_end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def share(self) -> float:
        return self.seconds / (self.run_end - self.run_start)


def _span(record: Record) -> tuple[float, float] | None:
    if record.sent is None:
        return None
    end = record.finished or (record.chunks[-1][0] if record.chunks else record.sent)
    return record.sent, end


def in_flight_steps(records: list[Record]) -> list[tuple[float, int]]:
    """(time, in-flight count from then on), one entry per send or finish, in time order."""
    events = []
    for span in filter(None, map(_span, records)):
        events += [(span[0], 1), (span[1], -1)]
    events.sort(key=lambda event: (event[0], -event[1]))  # a send and a finish at one instant: send first
    steps, count = [], 0
    for time, change in events:
        count += change
        steps.append((time, count))
    return steps


def mean_in_flight(steps: list[tuple[float, int]], start: float, end: float) -> float:
    """Time-weighted mean in-flight count over [start, end]."""
    if end <= start:
        return float(steps[0][1]) if steps else 0.0
    total, count, last = 0.0, 0, start
    for time, after in steps:
        if time > start:
            total += count * (min(time, end) - last)
            last = min(time, end)
        if time >= end:
            break
        count = after
    total += count * (end - last)
    return total / (end - start)


def steady_window(records: list[Record], concurrency: int | None) -> SteadyWindow:
    steps = in_flight_steps(records)
    sends = sorted(span[0] for span in filter(None, map(_span, records)))
    if not sends:
        raise NoSteadyState("no request was sent")
    last_send = sends[-1]
    if concurrency is not None:
        fill = min(concurrency, len(sends))
    else:
        fill = max(1, round(mean_in_flight(steps, sends[0], last_send)))
    start = next((time for time, count in steps if count >= fill), None)
    run_end = max(time for time, _ in steps)
    if start is None or start >= last_send:
        raise NoSteadyState(
            f"the in-flight count reached its fill level {fill} only after the last request was sent "
            "(the run drained before it filled); send more requests or raise the rate/concurrency"
        )
    window = SteadyWindow(start, last_send, fill, sends[0], run_end)
    if tokens_in_window(records, window) == 0:
        raise NoSteadyState(f"no token was streamed in the steady window ({window.seconds:.3f} s); send more requests")
    return window


def tokens_in_window(records: list[Record], window: SteadyWindow) -> int:
    return sum(count for record in records for time, count in record.chunks if window.start <= time <= window.end)


def window_energy(slices: list[tuple[float, float, float]], start: float, end: float) -> float | None:
    """Joules in [start, end] from back-to-back meter slices (begin, end, joules), each prorated
    by its overlap (power taken as constant within a slice); None unless slices cover the window."""
    covered = sum(max(0.0, min(e, end) - max(b, start)) for b, e, _ in slices)
    if not slices or covered < (end - start) * (1 - 1e-9):
        return None
    return sum(j * max(0.0, min(e, end) - max(b, start)) / (e - b) for b, e, j in slices if e > b)


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def serving_metrics(
    records: list[Record], window: SteadyWindow, ttft_slo_s: float, tpot_slo_s: float
) -> dict[str, Any]:
    """Latency percentiles, throughput, goodput and steady-state figures of one run."""
    ok = [r for r in records if r.ok]
    duration = window.run_end - window.run_start
    ttft = [r.ttft_s for r in ok]
    itl = [gap for r in ok for gap in r.inter_token_s]
    tpot = [r.tpot_s for r in ok if r.tpot_s is not None]
    e2e = [r.e2e_s for r in ok]
    good = [r for r in ok if r.ttft_s <= ttft_slo_s and (r.tpot_s is None or r.tpot_s <= tpot_slo_s)]
    steady_tokens = tokens_in_window(records, window)
    row: dict[str, Any] = {
        "requests_sent": sum(r.sent is not None for r in records),
        "requests_completed": len(ok),
        "requests_failed": sum(not r.ok for r in records),
        "duration_s": duration,
        "output_tokens_total": sum(r.output_tokens for r in ok),
        "output_tokens_per_s": sum(r.output_tokens for r in ok) / duration,
        "requests_per_s": len(ok) / duration,
        "goodput_requests_per_s": len(good) / duration,
        "goodput_share": len(good) / len(records) if records else None,
        "slo_ttft_s": ttft_slo_s,
        "slo_tpot_s": tpot_slo_s,
        "steady_start_s": window.start - window.run_start,
        "steady_s": window.seconds,
        "steady_share": window.share,
        "steady_fill_level": window.fill_level,
        "steady_output_tokens": steady_tokens,
        "steady_output_tokens_per_s": steady_tokens / window.seconds,
        "ttft_mean_s": statistics.fmean(ttft) if ttft else None,
        "itl_mean_s": statistics.fmean(itl) if itl else None,
        "tpot_mean_s": statistics.fmean(tpot) if tpot else None,
        "e2e_mean_s": statistics.fmean(e2e) if e2e else None,
    }
    for name, values in (("ttft", ttft), ("itl", itl), ("tpot", tpot), ("e2e", e2e)):
        for q in (50, 90, 99):
            row[f"{name}_p{q}_s"] = percentile(values, q)
    return row
