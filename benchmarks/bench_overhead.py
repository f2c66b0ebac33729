"""Does the measurement harness slow down what it measures?

Loads one variant once, then alternates, round after round, in the same process on the same
inputs:
  bare     a plain loop of `backend.generate(inputs, new_tokens)` for `--window` seconds (for
           vllm: the engine's own `LLM.generate(inputs, SamplingParams)`, past our backend);
  harness  one trial as the protocol runs it (prefill window, full window with the selected
           energy meter and peak-memory reading, streamed probe), whose tokens/s is what a
           row would say.
Prints tokens/s of each, per round and as medians, and the median of the paired ratios
(target >= 0.99). On a machine shared with other work wall-clock rates swing far more than
1%, so it also prints the ratio of tokens per CPU-second of this process, which other
processes cannot move.

    python benchmarks/bench_overhead.py --variant results/variants/tiny-llama/none-float32/variant.json

The variant comes from the pipeline (`snakemake results/variants/tiny-llama/none-float32/variant.json`).
vLLM runs in its own venv:

    .venv-vllm/bin/python benchmarks/bench_overhead.py --backend vllm --settings '{"max_prompt_tokens": 64, "max_new_tokens": 32}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "workflow" / "scripts"))

from llenergymeasure import energy, job_gpus, measure  # noqa: E402
from llenergymeasure.backends import Backend, get_backend  # noqa: E402


@dataclass(frozen=True)
class Rate:
    """Tokens generated per wall second and per CPU second of this process."""

    wall: float
    cpu: float


def bare_call(backend: Backend, inputs: Any, new_tokens: int) -> Callable[[], Any]:
    """The engine's own generate call: vLLM's `LLM.generate` directly, else the backend's generate."""
    if backend.name == "vllm":
        params = backend.sampling_params(new_tokens)
        return lambda: backend.llm.generate(inputs, params, use_tqdm=False)
    return lambda: backend.generate(inputs, new_tokens)


def bare_rate(backend: Backend, inputs: Any, batch_size: int, new_tokens: int, seconds: float) -> Rate:
    """A plain generate loop lasting at least `seconds`."""
    call = bare_call(backend, inputs, new_tokens)
    backend.synchronize()
    cpu_start, start = time.process_time(), time.perf_counter()
    calls = 0
    while True:
        call()
        calls += 1
        if time.perf_counter() - start >= seconds:
            break
    backend.synchronize()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    tokens = calls * batch_size * new_tokens
    return Rate(tokens / wall, tokens / cpu)


def harness_rate(
    backend: Backend, meter: energy.EnergyMeter, inputs: Any, batch_size: int, protocol: measure.Protocol
) -> Rate:
    """One trial as `measure.measure_trial` runs it (prefill window, full window with the meter
    and peak memory, streamed probe); wall rate as the row reports it, CPU rate over the full
    window including the meter's reads at its edges."""
    measure.measure_window(backend, meter, inputs, 1, protocol.min_window_s)
    backend.peak_memory_reset()
    cpu_start = time.process_time()
    full = measure.measure_window(backend, meter, inputs, protocol.new_tokens, protocol.min_window_s)
    cpu = time.process_time() - cpu_start
    backend.peak_memory_bytes()
    measure.timing_probe(backend, inputs, protocol.new_tokens)
    tokens = full.repetitions * batch_size * protocol.new_tokens
    return Rate(tokens / full.elapsed_s, tokens / cpu)


def compare(
    backend: Backend,
    meter: energy.EnergyMeter,
    device: str,
    batch_size: int,
    prompt_tokens: int,
    new_tokens: int,
    window_s: float,
    rounds: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Alternate bare loops and harness trials; return per-round figures and medians."""
    protocol = measure.Protocol(
        device=device,
        batch_sizes=(batch_size,),
        prompt_tokens=(prompt_tokens,),
        new_tokens=new_tokens,
        seed=seed,
        trials=1,
        warmup_runs=2,
        warmup_min_s=0.0,
        warmup_cv_threshold=None,
        warmup_max_s=60.0,
        min_window_s=window_s,
        idle_baseline_s=0.0,
        energy_source="auto",
    )
    inputs = backend.prepare_inputs(batch_size, prompt_tokens, seed)
    measure.warm_up(backend, inputs, protocol)
    bare: list[Rate] = []
    harness: list[Rate] = []
    for index in range(rounds):
        first_bare = index % 2 == 0  # alternate the order so drift does not favour either
        if first_bare:
            bare.append(bare_rate(backend, inputs, batch_size, new_tokens, window_s))
        harness.append(harness_rate(backend, meter, inputs, batch_size, protocol))
        if not first_bare:
            bare.append(bare_rate(backend, inputs, batch_size, new_tokens, window_s))

    def paired(kind: str) -> list[float]:
        return [getattr(h, kind) / getattr(b, kind) for h, b in zip(harness, bare, strict=True)]

    return {
        "energy_source": meter.source,
        "batch_size": batch_size,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "window_s": window_s,
        "rounds": rounds,
        "bare": [vars(rate) for rate in bare],
        "harness": [vars(rate) for rate in harness],
        "bare_median_tokens_per_s": statistics.median(rate.wall for rate in bare),
        "harness_median_tokens_per_s": statistics.median(rate.wall for rate in harness),
        # Adjacent bare/harness pairs share the machine's state, so medians of paired ratios
        # are the robust figures; the CPU-time ratio is immune to other processes taking the cores.
        "ratio": statistics.median(paired("wall")),
        "cpu_ratio": statistics.median(paired("cpu")),
    }


def report(result: dict[str, Any]) -> None:
    print(
        f"energy source {result['energy_source']}, batch {result['batch_size']}, prompt {result['prompt_tokens']}, "
        f"new tokens {result['new_tokens']}, {result['rounds']} rounds of {result['window_s']} s windows"
    )
    for index, (bare, harness) in enumerate(zip(result["bare"], result["harness"], strict=True)):
        print(
            f"  round {index:2d}: tok/s bare {bare['wall']:9.1f} harness {harness['wall']:9.1f} "
            f"ratio {harness['wall'] / bare['wall']:.4f} | tok per CPU-s ratio {harness['cpu'] / bare['cpu']:.4f}"
        )
    print(
        f"median tok/s: bare {result['bare_median_tokens_per_s']:.1f}, harness {result['harness_median_tokens_per_s']:.1f}"
    )
    print(f"overhead ratio (harness / bare tok/s, median of paired rounds): {result['ratio']:.4f}  (target >= 0.99)")
    print(f"CPU-time ratio (harness / bare tok per CPU-second, median of pairs): {result['cpu_ratio']:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variant", type=Path, default=REPO_ROOT / "results/variants/tiny-llama/none-float32/variant.json"
    )
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
        parser.error(
            f"--variant: {args.variant} does not exist; build one with the pipeline, e.g. "
            "`snakemake results/variants/tiny-llama/none-float32/variant.json`, or pass another"
        )
    # one GPU, pinned before the backend initialises CUDA, so the meter reads that GPU only
    gpus = job_gpus.pin_job_gpus(1) if args.device == "cuda" else None
    meter = energy.select_meter(args.device, gpus)
    backend = get_backend(args.backend)(json.loads(args.settings), args.device)
    backend.load(json.loads(args.variant.read_text()))
    result = compare(
        backend, meter, args.device, args.batch_size, args.prompt_tokens, args.new_tokens, args.window, args.rounds
    )
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
