"""Where a sweep's wall time goes: inside measured windows, or outside them?

Reads one Snakemake run's main log (``.snakemake/log/<run>.snakemake.log``: every job's start
and end, to the second) and the measure jobs' rows under ``results/measure/`` and prints

  * the run's wall time (first job start to last job end) and per rule the summed job time;
  * inside the measure jobs: the measured windows (full + prefill-only windows of every
    trial, ``window_s`` + ``prefill_window_s``), the warm-up (``warmup_s`` per shape) and the
    rest (the separate streamed timing probe where rows say `separate-probe`, load, idle baseline, start-up);
  * the measured-window share = measured windows / run wall time (issue 16's goal: >= 70 %).

Jobs that ran in parallel overlap, so per-rule sums can exceed the wall time.

    python benchmarks/window_share.py --workdir . [--log .snakemake/log/2026-...snakemake.log]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
RULE = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+)")


def job_spans(log_text: str) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """(rule, start, end) of every finished job in a Snakemake main log."""
    stamp, pending = None, None
    starts: dict[str, tuple[str, dt.datetime]] = {}
    spans = []
    for line in log_text.splitlines():
        if match := STAMP.match(line):
            stamp = dt.datetime.strptime(" ".join(match.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif match := RULE.match(line):
            pending = match.group(1)
        elif (match := JOBID.match(line)) and pending is not None:
            starts[match.group(1)] = (pending, stamp)
            pending = None
        elif (match := FINISHED.match(line)) and match.group(1) in starts:
            rule, start = starts.pop(match.group(1))
            spans.append((rule, start, stamp))
    return spans


def measure_breakdown(results: Path) -> dict[str, float]:
    """Seconds of measured windows, warm-up and trials in the measure jobs' rows."""
    files = sorted((results / "measure").rglob("*.parquet"))
    if not files:
        return {"windows_s": 0.0, "warmup_s": 0.0, "trials": 0}
    rows = pd.concat([pd.read_parquet(f).assign(_file=str(f)) for f in files], ignore_index=True)
    windows = (
        pd.to_numeric(rows["window_s"], errors="coerce").sum()
        + pd.to_numeric(rows["prefill_window_s"], errors="coerce").sum()
    )
    shapes = rows.groupby(["_file", "batch_size", "prompt_tokens"])["warmup_s"].first()
    # a separate streamed probe (one generate outside the windows) only where rows say so;
    # rows from before token_timing_source all had one
    source = rows["token_timing_source"] if "token_timing_source" in rows else pd.Series("separate-probe", rows.index)
    probed = rows[source.fillna("separate-probe") == "separate-probe"]
    return {
        "windows_s": float(windows),
        "warmup_s": float(pd.to_numeric(shapes, errors="coerce").sum()),
        "probe_estimate_s": float(pd.to_numeric(probed["latency_s"], errors="coerce").sum()),
        "trials": len(rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("."))
    parser.add_argument("--log", type=Path, help="Snakemake main log (default: the newest)")
    args = parser.parse_args(argv)
    log = args.log or max(
        (args.workdir / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime
    )
    spans = job_spans(log.read_text())
    if not spans:
        print(f"{log}: no finished job", file=sys.stderr)
        return 1
    wall = (max(e for _, _, e in spans) - min(s for _, s, _ in spans)).total_seconds()
    per_rule: dict[str, list[float]] = defaultdict(list)
    for rule, start, end in spans:
        per_rule[rule].append((end - start).total_seconds())
    print(f"run {log.name}: wall {wall:.0f} s, {len(spans)} jobs")
    for rule, seconds in sorted(per_rule.items(), key=lambda item: -sum(item[1])):
        print(
            f"  {rule:18s} {len(seconds):4d} jobs {sum(seconds):8.0f} s  ({100 * sum(seconds) / wall:5.1f} % of wall)"
        )
    inside = measure_breakdown(args.workdir / "results")
    measure_s = sum(per_rule.get("measure", [])) + sum(per_rule.get("measure_vllm", []))
    print(
        f"measure jobs {measure_s:.0f} s: windows {inside['windows_s']:.1f} s, warm-up {inside['warmup_s']:.1f} s, "
        f"separate streamed probes ~{inside.get('probe_estimate_s', 0):.1f} s (one generate per vLLM trial), "
        f"rest (load, idle baseline, start-up) {measure_s - inside['windows_s'] - inside['warmup_s'] - inside.get('probe_estimate_s', 0):.1f} s"
    )
    print(
        f"measured-window share: {100 * inside['windows_s'] / wall:.1f} % of the run's wall time "
        f"({100 * inside['windows_s'] / measure_s:.1f} % of measure-job time)"
        if measure_s
        else "no measure job"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
