"""Does streaming the measured full window change what it measures?

`trial` streams every call of the full window on backends whose `on_token` hook runs on the
generate path itself (`Backend.streams_in_window`): one Python callback and clock read per
token. This benchmark loads a built variant with such a backend and times, interleaved in
one process, `--rounds` pairs of the same generate call with and without the callback,
per shape, and prints the median streamed / plain ratio of wall and of process CPU time.
A ratio within the run's own noise (the spread of plain / plain pairs, printed beside it)
means the stream costs nothing measurable here.

    python benchmarks/bench_stream_overhead.py --variant results/variants/study-llama/none-float32/variant.json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "workflow" / "scripts"))


def timed(call) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", required=True, type=Path)
    parser.add_argument("--backend", default="pytorch")
    parser.add_argument("--shapes", default="1x64,4x256,16x64", help="BATCHxPROMPT,...")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    from llenergymeasure.backends import get_backend

    backend = get_backend(args.backend)()
    backend.load(json.loads(args.variant.read_text()))
    if not backend.streams_in_window:
        raise SystemExit(f"{args.backend} does not stream in the window: it keeps the separate probe")
    clock = time.perf_counter
    print(f"{args.backend} {args.variant}: {args.rounds} interleaved rounds, {args.new_tokens} new tokens")
    print(f"{'shape':>8} {'plain s':>9} {'wall ratio':>10} {'cpu ratio':>10} {'plain/plain wall':>17}")
    for shape in args.shapes.split(","):
        batch, prompt = (int(x) for x in shape.split("x"))
        inputs = backend.prepare_inputs(batch, prompt, seed=0)
        for _ in range(2):
            backend.generate(inputs, args.new_tokens)
        walls, cpus, noise, plain_s = [], [], [], []
        plain = functools.partial(backend.generate, inputs, args.new_tokens)
        for _ in range(args.rounds):
            stamps: list[float] = []
            streamed = functools.partial(
                backend.generate, inputs, args.new_tokens, on_token=lambda s=stamps: s.append(clock())
            )
            p_wall, p_cpu = timed(plain)
            s_wall, s_cpu = timed(streamed)
            q_wall, _ = timed(plain)
            assert len(stamps) == args.new_tokens, stamps
            walls.append(s_wall / p_wall)
            cpus.append(s_cpu / p_cpu)
            noise.append(q_wall / p_wall)
            plain_s.append(p_wall)
        print(
            f"{shape:>8} {statistics.median(plain_s):9.4f} {statistics.median(walls):10.3f}"
            f" {statistics.median(cpus):10.3f} {statistics.median(noise):17.3f}"
        )


if __name__ == "__main__":
    main()
