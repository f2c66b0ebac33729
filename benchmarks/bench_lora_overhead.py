"""What does an unmerged LoRA adapter cost on this machine, against merged and the base model?

Loads one variant three times in one process: the base model, the model with an adapter
unmerged and with it merged. With `--backend pytorch` (the default) unmerged is PEFT's
`PeftModel` and merged is `merge_and_unload`; with `--backend vllm` (run it with the vLLM
venv's python) three in-process vLLM engines: the plain model, one with `enable_lora` whose
every request carries the adapter's LoRARequest, and one loaded from the merged checkpoint of
rule merge_adapter (`--merged`), as a vllm adapter job measures them (lora_vllm). Then, round
after round, in a rotating order on the same inputs, each runs one window of
`generate(inputs, new_tokens)` repeated for `--window` seconds. Prints tokens per wall second
and per CPU second of this process (other processes on a shared machine move the first far
more than the second), and the ratio of medians with a bootstrap 95% interval
(`intervals.ratio_of_medians`: order-statistic intervals, with their exact coverage bound) of
unmerged/base, merged/base and unmerged/merged, and the median of the per-round paired ratios
with its order-statistic interval and coverage (`intervals.median_interval`; windows of one
round run seconds apart under the same load, so their ratio drifts less than the rates do).

    python benchmarks/bench_lora_overhead.py \
        --variant results/variants/tiny-llama/none-float32/variant.json \
        --adapter results/adapters/tiny-llama/lora-r8

Both come from the pipeline (`snakemake results/adapters/tiny-llama/lora-r8` and the variant).

    .venv-vllm/bin/python benchmarks/bench_lora_overhead.py --backend vllm \
        --variant ... --adapter ... --merged results/adapters-merged/tiny-llama/lora-r8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "workflow" / "scripts"))

import numpy as np  # noqa: E402

from llenergymeasure import intervals  # noqa: E402
from llenergymeasure.backends import get_backend  # noqa: E402
from llenergymeasure.lora_build import measurement_phases  # noqa: E402

STATES = ("base", "unmerged", "merged")


def window(backend, inputs, new_tokens: int, seconds: float, tokens_per_call: int) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second of this process) over one window."""
    wall, cpu = time.perf_counter(), time.process_time()
    calls = 0
    while True:
        backend.generate(inputs, new_tokens)
        calls += 1
        if time.perf_counter() - wall >= seconds:
            break
    return calls * tokens_per_call / (time.perf_counter() - wall), calls * tokens_per_call / (time.process_time() - cpu)


def load_pytorch(variant: dict, settings: dict, args: argparse.Namespace) -> dict:
    backends = {}
    for state in STATES:
        backend = get_backend("pytorch")(settings, "cpu")
        backend.load(variant)
        backends[state] = backend
    (_, unmerge), (_, merge) = measurement_phases(args.adapter)
    unmerge(backends["unmerged"])
    unmerge(backends["merged"])
    print("merge:", merge(backends["merged"]))
    return backends


def load_vllm(variant: dict, settings: dict, args: argparse.Namespace) -> dict:
    from llenergymeasure import lora_vllm

    if not args.merged:
        raise SystemExit("--backend vllm needs --merged (the merge_adapter checkpoint)")
    settings = {
        **settings,
        "max_prompt_tokens": args.prompt,
        "max_new_tokens": args.new,
        "kv_cache_memory_bytes": 1 << 27,
        "load_format": "auto",
    }
    backends = {}
    for state in STATES:
        extra = lora_vllm.engine_settings(args.adapter, settings) if state == "unmerged" else {}
        backend = get_backend("vllm")({**settings, **extra}, "cpu")
        backend.load({**variant, "checkpoint_dir": args.merged} if state == "merged" else variant)
        backends[state] = backend
    (_, unmerged), _ = lora_vllm.measurement_phases(args.adapter, args.merged, variant)
    print("adapter load:", unmerged(backends["unmerged"]))
    return backends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--window", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", choices=("pytorch", "vllm"), default="pytorch")
    parser.add_argument("--merged", help="the merge_adapter checkpoint (--backend vllm)")
    args = parser.parse_args()
    variant = json.loads(Path(args.variant).read_text())
    settings = {"threads": args.threads}
    load = load_vllm if args.backend == "vllm" else load_pytorch
    backends = load(variant, settings, args)
    inputs = backends["base"].prepare_inputs(args.batch, args.prompt, seed=0)
    tokens = args.batch * args.new
    for backend in backends.values():  # warm-up
        window(backend, inputs, args.new, args.window, tokens)
    rates: dict[str, dict[str, list[float]]] = {s: {"wall": [], "cpu": []} for s in backends}
    order = list(backends)
    for round_index in range(args.rounds):
        for state in order[round_index % 3 :] + order[: round_index % 3]:
            wall, cpu = window(backends[state], inputs, args.new, args.window, tokens)
            rates[state]["wall"].append(wall)
            rates[state]["cpu"].append(cpu)
        print(f"round {round_index}: " + "  ".join(f"{s} {rates[s]['wall'][-1]:.1f}" for s in order), flush=True)
    print(
        f"\n{args.backend}: b={args.batch} s={args.prompt} t={args.new}, {args.rounds} rounds x {args.window} s windows, "
        f"{args.threads} thread(s)"
    )
    for clock in ("wall", "cpu"):
        medians = {s: statistics.median(rates[s][clock]) for s in order}
        print(f"{clock:4s} tok/s median: " + ", ".join(f"{s} {medians[s]:.1f}" for s in order))
        for top, bottom in (("unmerged", "base"), ("merged", "base"), ("unmerged", "merged")):
            ratio, low, high, cover = intervals.ratio_of_medians(rates[top][clock], rates[bottom][clock])
            # the same round's windows ran seconds apart, under the same load: their ratio drifts less
            paired = np.array(rates[top][clock]) / np.array(rates[bottom][clock])
            paired_low, paired_high, paired_cover = intervals.median_interval(paired)
            print(
                f"  {clock} {top}/{bottom}: ratio of medians {ratio:.3f} [{low:.3f}, {high:.3f}] (coverage >= {cover:.3f}); "
                f"median paired ratio {statistics.median(paired):.3f} [{paired_low:.3f}, {paired_high:.3f}] "
                f"(coverage {paired_cover:.3f})"
            )


if __name__ == "__main__":
    main()
