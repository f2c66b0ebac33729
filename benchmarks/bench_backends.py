"""Backends side by side: one model, one shape, tokens/s and energy per token for each backend.

For every backend that can run here, loads its variant of the model once, warms up, then
measures with the pipeline's own harness (`measure.measure_window` and the energy meter
`energy.select_meter` picks): a prefill-only window (`generate(inputs, 1)`) and a full
window (`generate(inputs, new_tokens)`). Prints per backend:

  tok/s        output tokens per second of the full window (batch x new tokens / latency)
  ms/step      decode time per step: (full latency - prefill latency) / (new tokens - 1)
  J/token      energy of the full window per output token, with its uncertainty and source
               (an estimate is marked `~`; `n/a` where no sensor can read this device)
  MBU          decode memory-bandwidth utilisation: weights + KV cache read per step
               (`flops.decode_bytes_per_step`) / ms per step / the device's peak bandwidth
               (`config/hardware.yaml`); `n/a` where the device is not in the table
  compile s    pytorch-compiled only: torch.compile time at load, outside every window

    python benchmarks/bench_backends.py --model tiny-llama --batch 1 --prompt 64 --new 32

Variants come from the pipeline (results/variants/<model>/<quant>/variant.json):
pytorch, pytorch-compiled and vllm use none-<dtype>; llamacpp uses gguf-f16 (or --gguf).
A backend whose library, device or variant is missing is listed with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "workflow" / "scripts"))

from llenergymeasure import energy, environment, flops, hardware, job_gpus, measure  # noqa: E402
from llenergymeasure.backends import BACKENDS, get_backend  # noqa: E402
from llenergymeasure.config import cuda_visible  # noqa: E402

ALL_BACKENDS = tuple(BACKENDS)
KV_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def variant_path(results: Path, model: str, backend: str, dtype: str, gguf: str) -> Path:
    quant = gguf if backend == "llamacpp" else f"none-{dtype}"
    return results / "variants" / model / quant / "variant.json"


def device_name(device: str) -> str | None:
    if device == "cuda":
        gpus = environment.capture_gpu_state("bench")["gpus"]
        return gpus[0].get("name") if gpus else None
    return environment.cpu_model_name()


def measure_backend(
    name: str,
    variant: dict[str, Any],
    args: argparse.Namespace,
    device: str,
    hf_config: dict[str, Any],
    meter: energy.EnergyMeter,
) -> dict[str, Any]:
    settings: dict[str, Any] = {"max_new_tokens": args.new}
    if args.threads:
        settings["threads"] = args.threads
    backend = get_backend(name)(settings, device)
    try:
        info = backend.load(variant)
        inputs = backend.prepare_inputs(args.batch, args.prompt, seed=0)
        for _ in range(args.warmup):
            backend.generate(inputs, 2)
        prefill = measure.measure_window(backend, meter, inputs, 1, args.window)
        full = measure.measure_window(backend, meter, inputs, args.new, args.window)
        version = backend.describe().get("version")
    finally:
        backend.close()
    tokens = args.batch * args.new
    step_s = (full.per_call_s - prefill.per_call_s) / (args.new - 1) if args.new > 1 else None
    joules = full.per_call(full.reading.joules)
    uncertainty = full.per_call(full.reading.uncertainty_j)
    kv_dtype = "float16" if name == "llamacpp" else info.compute_dtype  # llama.cpp keeps an f16 KV cache
    mbu = None
    if step_s and step_s > 0 and info.weight_bytes_memory and kv_dtype in KV_BYTES:
        moved = flops.decode_bytes_per_step(
            hf_config, args.batch, args.prompt, args.new, info.weight_bytes_memory, KV_BYTES[kv_dtype]
        )
        mbu = hardware.mbu(moved, step_s, device_name(device)) if moved else None
    return {
        "backend": name,
        "quant": variant["quant"],
        "kernel": info.kernel_path,
        "version": version,
        "tok_s": tokens / full.per_call_s,
        "ttft_ms": 1e3 * prefill.per_call_s,
        "step_ms": None if step_s is None else 1e3 * step_s,
        "j_per_token": None if joules is None else joules / tokens,
        "j_unc": None if uncertainty is None else uncertainty / tokens,
        "source": full.reading.source,
        "estimate": full.reading.is_estimate,
        "mbu": mbu,
        "compile_s": info.extra.get("compile_s"),
        "repetitions": full.repetitions,
    }


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def print_table(rows: list[dict[str, Any]], skipped: list[tuple[str, str]], header: str) -> None:
    print(header)
    print(
        f"{'backend':<17} {'quant':<12} {'tok/s':>9} {'ms/step':>8} {'TTFT ms':>8} {'J/token':>30} "
        f"{'MBU':>6} {'compile s':>9}  kernel"
    )
    for r in rows:
        energy_text = "n/a"
        if r["j_per_token"] is not None:
            energy_text = (
                f"{'~' if r['estimate'] else ''}{r['j_per_token']:.3g} ±{_fmt(r['j_unc'], '.2g')} {r['source']}"
            )
        print(
            f"{r['backend']:<17} {r['quant']:<12} {r['tok_s']:>9.1f} {_fmt(r['step_ms'], '.2f'):>8} "
            f"{r['ttft_ms']:>8.2f} {energy_text:>30} {_fmt(r['mbu'], '.1%'):>6} {_fmt(r['compile_s'], '.1f'):>9}  "
            f"{r['kernel']} ({r['version']})"
        )
    for name, reason in skipped:
        print(f"{name:<17} skipped: {reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "results")
    parser.add_argument("--backends", nargs="+", default=list(ALL_BACKENDS), choices=ALL_BACKENDS)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--dtype",
        choices=tuple(KV_BYTES),
        help="pytorch/vllm variant dtype (default: float32 on CPU, bfloat16 on CUDA)",
    )
    parser.add_argument("--gguf", default="gguf-f16", help="the llamacpp variant (gguf-f16, gguf-q8_0, gguf-q4_k_m)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--window", type=float, default=1.0, help="seconds per measured window")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, help="CPU threads for every backend (default: all usable cores)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.prompt < 1 or args.new < 2:
        parser.error("--batch and --prompt must be >= 1 and --new >= 2 (a decode step is needed for ms/step)")
    os.chdir(args.results.resolve().parent)  # variant manifests hold paths relative to the workflow directory
    device = ("cuda" if cuda_visible() else "cpu") if args.device == "auto" else args.device
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    gpus = job_gpus.pin_job_gpus(1) if device == "cuda" else None  # before any backend initialises CUDA
    meter = energy.select_meter(device, gpus)
    rows, skipped = [], []
    for name in args.backends:
        if name not in BACKENDS:
            skipped.append((name, "not registered in llenergymeasure.backends.BACKENDS"))
            continue
        if name == "vllm" and device != "cuda":
            skipped.append((name, "needs CUDA"))
            continue
        path = variant_path(args.results, args.model, name, dtype, args.gguf)
        if not path.is_file():
            skipped.append((name, f"no variant at {path} (make it with snakemake)"))
            continue
        variant = json.loads(path.read_text())
        hf_config = json.loads((Path(variant["model_dir"]) / "config.json").read_text())
        try:
            rows.append(measure_backend(name, variant, args, device, hf_config, meter))
        except (ImportError, RuntimeError, ValueError, OSError) as exc:
            skipped.append((name, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
    header = (
        f"{args.model}, batch {args.batch}, prompt {args.prompt}, new {args.new}, device {device} "
        f"({device_name(device)}), energy meter {meter.source}{' (estimate)' if meter.is_estimate else ''}"
    )
    print_table(rows, skipped, header)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
