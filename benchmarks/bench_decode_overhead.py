"""How much of a batch-1 decode step is framework overhead rather than arithmetic?

Builds a random-weight model from an architecture config (the model rule's own
`materialise_random`, float32), loads it with the project's pytorch backend, and times
`generate` with a prompt of `--prompt` tokens at batch 1:

  step      the decode step: (generate(1 + N new tokens) - generate(1 new token)) / N, the
            median over `--rounds` paired calls, wall and CPU time of this process;
  kernels   torch.profiler over one generate(1 + N): the self CPU time of every aten op
            (the kernels and their dispatch), and of the matrix products alone
            (mm, addmm, bmm, linear's kernels, scaled-dot-product attention), per decode step.

  overhead share = 1 - aten self time per step / profiled step wall time

Both from the same profiled calls, so a machine loaded by other work (which stretches every
op's wall time alike) moves the share less than it moves either time.
The rest is Python: transformers' generate loop, module calls, cache bookkeeping, the
logits processors. The profiler's own per-op cost lands in that rest, so the share printed
is an upper bound on the overhead without the profiler. The project's goal is < 30 %.

    python benchmarks/bench_decode_overhead.py --architecture config/models/study-llama.json

On a machine shared with other work, wall times swing; the CPU-time column of this process
is the steadier one, and the share compares times measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "workflow" / "scripts"))

MATMUL_OPS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_efficient_attention_forward",
    "aten::_scaled_dot_product_attention_math",
)


def _timed(backend, inputs, new_tokens: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    backend.generate(inputs, new_tokens)
    return time.perf_counter() - wall, time.process_time() - cpu


def decode_step_seconds(backend, inputs, steps: int, rounds: int) -> tuple[float, float]:
    """Median (wall, cpu) seconds of one decode step over `rounds` paired calls."""
    walls, cpus = [], []
    for _ in range(rounds):
        long_wall, long_cpu = _timed(backend, inputs, 1 + steps)
        short_wall, short_cpu = _timed(backend, inputs, 1)
        walls.append((long_wall - short_wall) / steps)
        cpus.append((long_cpu - short_cpu) / steps)
    return statistics.median(walls), statistics.median(cpus)


def aten_seconds_per_step(backend, inputs, steps: int, rounds: int) -> tuple[float, float, float]:
    """(aten self time, matmul self time, profiled wall) per decode step, from the profiler:
    generate(1 + steps) minus generate(1), so prefill is not counted; medians over `rounds`
    (the first profiler start of a process is slow, so one unrecorded profile runs first)."""
    from torch.profiler import ProfilerActivity, profile

    def one(new_tokens: int) -> tuple[float, float, float]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            backend.generate(inputs, new_tokens)
            wall = time.perf_counter() - start
        events = prof.key_averages()
        aten = sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::")) / 1e6
        matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / 1e6
        return aten, matmul, wall

    one(2)  # profiler start-up
    per_round = []
    for _ in range(rounds):
        short, long = one(1), one(1 + steps)
        per_round.append([(a - b) / steps for a, b in zip(long, short, strict=True)])
    return tuple(statistics.median(column) for column in zip(*per_round, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", action="append", required=True, help="architecture config.json (repeatable)")
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--steps", type=int, default=16, help="decode steps per timed call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)

    from llenergymeasure.backends import get_backend
    from llenergymeasure.models import materialise_random

    print(
        f"{'model':24s} {'params':>8s} {'step ms':>8s} {'cpu ms':>7s} {'aten ms':>8s} "
        f"{'matmul ms':>9s} {'prof ms':>8s} {'overhead':>8s}"
    )
    for architecture in args.architecture:
        with tempfile.TemporaryDirectory() as work:
            model_dir = Path(work) / "model"
            materialise_random(Path(architecture), model_dir, 0, REPO_ROOT / "data/text/tokenizer.txt")
            backend = get_backend("pytorch")({"threads": args.threads} if args.threads else {}, "cpu")
            backend.load({"quant": f"none-{args.dtype}", "model_dir": str(model_dir), "settings": {}})
            params = sum(p.numel() for p in backend.model.parameters())
            inputs = backend.prepare_inputs(1, args.prompt, 0)
            backend.generate(inputs, 4)  # warm-up: allocator, one-off dispatch caches
            wall, cpu = decode_step_seconds(backend, inputs, args.steps, args.rounds)
            aten, matmul, profiled = aten_seconds_per_step(backend, inputs, args.steps, args.rounds)
            backend.close()
        overhead = 1.0 - aten / profiled
        print(
            f"{Path(architecture).stem:24s} {params / 1e6:7.1f}M {wall * 1e3:8.2f} {cpu * 1e3:7.2f} "
            f"{aten * 1e3:8.2f} {matmul * 1e3:9.2f} {profiled * 1e3:8.2f} {overhead:8.1%}"
        )
        print(
            json.dumps(
                {
                    "model": Path(architecture).stem,
                    "params": params,
                    "prompt": args.prompt,
                    "step_wall_s": wall,
                    "step_cpu_s": cpu,
                    "aten_self_s": aten,
                    "matmul_self_s": matmul,
                    "profiled_step_wall_s": profiled,
                    "overhead_share": overhead,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
