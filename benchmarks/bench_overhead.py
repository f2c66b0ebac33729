"""Does the measurement harness slow down what it measures?

Loads one variant once, then alternates, round after round, in the same process on the same
inputs:
  bare     a plain loop of `backend.generate(inputs, new_tokens)` for `--window` seconds;
  harness  one full trial of the protocol (`measure.measure_trial`: prefill window, full
           window with the selected energy meter and peak-memory reading, streamed probe),
           whose reported tokens/s is what a row would say.
Prints tokens/s of each, per round and as medians, and their ratio (target >= 0.99).

    python benchmarks/bench_overhead.py --variant results/variants/tiny-llama/none-float32/variant.json

The variant comes from the pipeline (`snakemake results/variants/tiny-llama/none-float32/variant.json`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "workflow" / "scripts"))

from llenergymeasure import energy, measure  # noqa: E402
from llenergymeasure.backends import Backend, get_backend  # noqa: E402


def bare_tokens_per_s(backend: Backend, inputs: Any, batch_size: int, new_tokens: int, seconds: float) -> float:
    """Tokens/s of a plain generate loop lasting at least `seconds`."""
    backend.synchronize()
    start = time.perf_counter()
    calls = 0
    while True:
        backend.generate(inputs, new_tokens)
        calls += 1
        if time.perf_counter() - start >= seconds:
            break
    backend.synchronize()
    return calls * batch_size * new_tokens / (time.perf_counter() - start)


def compare(backend: Backend, device: str, batch_size: int, prompt_tokens: int, new_tokens: int,
            window_s: float, rounds: int, seed: int = 0) -> dict[str, Any]:
    """Alternate bare loops and harness trials; return per-round figures and medians."""
    protocol = measure.Protocol(
        device=device, batch_sizes=(batch_size,), prompt_tokens=(prompt_tokens,), new_tokens=new_tokens,
        seed=seed, trials=1, warmup_runs=2, warmup_min_s=0.0, warmup_cv_threshold=None, warmup_max_s=60.0,
        min_window_s=window_s, idle_baseline_s=0.0, energy_source="auto",
    )
    meter = energy.select_meter(device)
    idle = energy.IdleReading(None, 0.0, meter.source)
    inputs = backend.prepare_inputs(batch_size, prompt_tokens, seed)
    measure.warm_up(backend, inputs, protocol)
    bare, harness = [], []
    for index in range(rounds):
        first_bare = index % 2 == 0  # alternate the order so drift does not favour either
        if first_bare:
            bare.append(bare_tokens_per_s(backend, inputs, batch_size, new_tokens, window_s))
        harness.append(measure.measure_trial(backend, meter, inputs, batch_size, protocol, idle)["tokens_per_s"])
        if not first_bare:
            bare.append(bare_tokens_per_s(backend, inputs, batch_size, new_tokens, window_s))
    bare_median, harness_median = statistics.median(bare), statistics.median(harness)
    round_ratios = [h / b for h, b in zip(harness, bare)]
    return {
        "energy_source": meter.source,
        "batch_size": batch_size, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
        "window_s": window_s, "rounds": rounds,
        "bare_tokens_per_s": bare, "harness_tokens_per_s": harness,
        "bare_median": bare_median, "harness_median": harness_median,
        "ratio_of_medians": harness_median / bare_median,
        # Adjacent bare/harness pairs share the machine's state, so the median of the paired
        # ratios is the robust figure on a machine shared with other work.
        "round_ratios": round_ratios,
        "ratio": statistics.median(round_ratios),
    }


def report(result: dict[str, Any]) -> None:
    print(f"energy source {result['energy_source']}, batch {result['batch_size']}, prompt {result['prompt_tokens']}, "
          f"new tokens {result['new_tokens']}, {result['rounds']} rounds of {result['window_s']} s windows")
    for index, (bare, harness) in enumerate(zip(result["bare_tokens_per_s"], result["harness_tokens_per_s"])):
        print(f"  round {index}: bare {bare:10.1f} tok/s   harness {harness:10.1f} tok/s   ratio {harness / bare:.4f}")
    print(f"median: bare {result['bare_median']:.1f} tok/s, harness {result['harness_median']:.1f} tok/s "
          f"(ratio of medians {result['ratio_of_medians']:.4f})")
    print(f"overhead ratio, median of paired rounds (harness / bare): {result['ratio']:.4f}  (target >= 0.99)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", type=Path, default=REPO_ROOT / "results/variants/tiny-llama/none-float32/variant.json")
    parser.add_argument("--backend", default="pytorch")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--window", type=float, default=0.5, help="seconds per bare loop and per energy window")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--settings", default="{}", help="backend settings as JSON, e.g. '{\"threads\": 2}'")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if not args.variant.is_file():
        parser.error(f"--variant: {args.variant} does not exist; build it with "
                     f"`snakemake {args.variant.relative_to(REPO_ROOT) if args.variant.is_relative_to(REPO_ROOT) else args.variant}` or pass another")
    backend = get_backend(args.backend)(json.loads(args.settings), args.device)
    backend.load(json.loads(args.variant.read_text()))
    result = compare(backend, args.device, args.batch_size, args.prompt_tokens, args.new_tokens, args.window, args.rounds)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
