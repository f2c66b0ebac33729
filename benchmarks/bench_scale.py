"""Scale benchmark: planning a 2,000-job sweep and aggregating 100,000 trial rows.

    .venv/bin/python benchmarks/bench_scale.py [--jobs 2000] [--rows 100000] [--repeats 3]

1. `snakemake -n` on a generated study config with `--jobs` measure jobs (a measure job is
   one (model, quant, backend); models are many entries pointing at the tiny architectures),
   run in a copy of the repository in a temporary directory. Target: <= 15 s.
2. `llenergymeasure.aggregate.aggregate` on `--rows` synthetic trial rows spread over one
   Arrow IPC file per measure job (as the flops rule leaves them; `--row-format parquet`
   writes them as Parquet instead, as the flops rule did before). Target: <= 10 s.

Prints wall times (median and min/max over `--repeats` runs) and the targets. The rows
are synthetic and say so (`weights: random`, `energy_source: estimate-cpu-tdp`): this
measures the pipeline's bookkeeping, not any model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "workflow" / "scripts"))

from llenergymeasure.variants import (  # noqa: E402
    VARIANTS,
    check_supported,
    quants_for_backend,
)

DRY_RUN_TARGET_S = 15.0
AGGREGATE_TARGET_S = 10.0
ARCHITECTURES = ("config/models/tiny-llama.json", "config/models/tiny-gpt2.json")
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "results", "logs", ".snakemake", "__pycache__", ".pytest_cache")


def cpu_jobs_per_model(architecture: str) -> dict[str, list[str]]:
    """Backend -> variants this architecture can run without CUDA (the widest CPU sweep)."""
    model_type = json.loads((REPO_ROOT / architecture).read_text())["model_type"]
    per_backend = {}
    for backend in ("pytorch", "pytorch-compiled", "llamacpp"):
        per_backend[backend] = [q for q in quants_for_backend(backend) if check_supported(q, False, model_type) is None]
    return per_backend


def sweep_config(n_jobs: int) -> dict:
    """A valid study config with exactly `n_jobs` measure jobs."""
    models: dict[str, dict] = {}
    remaining = n_jobs
    index = 0
    while remaining > 0:
        architecture = ARCHITECTURES[index % len(ARCHITECTURES)]
        backends: dict[str, list[str]] = {}
        for backend, quants in cpu_jobs_per_model(architecture).items():
            take = quants[: min(len(quants), remaining)]
            if take:
                backends[backend] = take
                remaining -= len(take)
        models[f"m{index:04d}"] = {"architecture": architecture, "backends": backends}
        index += 1
    return {
        "study": "scale-benchmark",
        "device": "cpu",
        "models": models,
        "workload": {"batch_sizes": [1, 2, 4, 8, 16], "prompt_tokens": [32, 64], "new_tokens": 16},
        "measurement": {"trials": 5},
    }


def time_dry_run(n_jobs: int, repeats: int) -> tuple[list[float], int]:
    """Wall seconds of `snakemake -n` (quiet) on the generated sweep; and the jobs it planned."""
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        workdir = Path(tmp) / "repo"
        shutil.copytree(REPO_ROOT, workdir, ignore=COPY_IGNORE)
        config = Path(tmp) / "sweep.yaml"
        config.write_text(yaml.safe_dump(sweep_config(n_jobs), sort_keys=False))
        command = [
            str(Path(sys.executable).parent / "snakemake"),
            "-n",
            "--cores",
            "1",
            "--configfile",
            str(config),
            "--quiet",
            "rules",
        ]
        times, planned = [], 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if result.returncode != 0:
                raise SystemExit(f"snakemake -n failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
            planned = count_planned_measure_jobs(result.stdout + result.stderr)
    return times, planned


def count_planned_measure_jobs(output: str) -> int:
    """The measure count from snakemake's 'Job stats' table (`--quiet rules`)."""
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "measure" and parts[1].isdigit():
            return int(parts[1])
    return 0


def synthetic_rows(n_rows: int, n_files: int, out_dir: Path, row_format: str = "arrow") -> list[Path]:
    """Write `n_rows` schema-conforming synthetic trial rows over `n_files` files (`row_format`:
    arrow, as the flops rule writes them, or parquet)."""
    import numpy as np
    import pandas as pd

    from llenergymeasure.io import write_arrow_atomic

    rng = np.random.default_rng(0)
    per_backend = cpu_jobs_per_model(ARCHITECTURES[0])
    combos = [(b, q) for b, qs in per_backend.items() for q in qs]
    shapes = [(bs, s) for bs in (1, 2, 4, 8, 16) for s in (32, 64)]
    rows_per_file = n_rows // n_files
    trials = max(1, rows_per_file // len(shapes))
    paths = []
    for index in range(n_files):
        backend, quant = combos[index % len(combos)]
        model = f"m{index // len(combos):04d}"
        n = rows_per_file + (1 if index < n_rows % n_files else 0)
        shape = [shapes[(i // trials) % len(shapes)] for i in range(n)]
        batch = np.array([s[0] for s in shape])
        prompt = np.array([s[1] for s in shape])
        latency = rng.lognormal(-1.0, 0.1, n) * batch
        ttft = latency * 0.2
        energy = latency * rng.normal(30.0, 1.0, n)
        status = np.where(rng.random(n) < 0.01, "failed", "ok")
        frame = pd.DataFrame(
            {
                "model": model,
                "quant": quant,
                "backend": backend,
                "dtype": "float32",
                "batch_size": batch,
                "prompt_tokens": prompt,
                "output_tokens": 16,
                "trial": np.arange(n) % trials,
                "status": status,
                "error": np.where(status == "failed", "synthetic failure", None),
                "latency_s": latency,
                "ttft_s": ttft,
                "tpot_s": (latency - ttft) / 15,
                "tokens_per_s": batch * 16 / latency,
                "energy_j": energy,
                "energy_j_per_output_token": energy / (batch * 16),
                "energy_uncertainty_j": energy * 0.2,
                "energy_source": "estimate-cpu-tdp",
                "energy_is_estimate": True,
                "peak_memory_bytes": rng.integers(10**7, 10**8, n),
                "quant_method": VARIANTS[quant].method,
                "weight_bits": VARIANTS[quant].weight_bits,
                "weights": "random",
                "platform_id": "cpu-x1",
                "device": "cpu",
                "device_name": "synthetic",
                "flops_total": batch * 1e9,
                "flops_method": "analytical-exact",
            }
        )
        path = out_dir / backend / quant / f"{model}.{row_format}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if row_format == "arrow":
            write_arrow_atomic(path, frame)
        else:
            frame.to_parquet(path, index=False)
        paths.append(path)
    return paths


def time_aggregate(
    n_rows: int, n_files: int, repeats: int, row_format: str = "arrow", threads: int = 2
) -> tuple[list[float], list[float], int, int]:
    """Wall and process CPU seconds (all threads) of aggregate() over synthetic rows; and the
    row and summary counts. CPU seconds compare runs on a shared machine; wall is the target."""
    from llenergymeasure.aggregate import aggregate

    with tempfile.TemporaryDirectory(prefix="bench-aggregate-") as tmp:
        paths = synthetic_rows(n_rows, n_files, Path(tmp) / "flops", row_format)
        times, cpu_times, n_measurements, n_summary = [], [], 0, 0
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            measurements, summary = aggregate(
                paths, Path(tmp) / "measurements.parquet", Path(tmp) / "summary.parquet", threads=threads
            )
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
            n_measurements, n_summary = len(measurements), len(summary)
    return times, cpu_times, n_measurements, n_summary


def describe(times: list[float]) -> str:
    return f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}, n={len(times)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="measure jobs in the generated sweep")
    parser.add_argument("--rows", type=int, default=100_000, help="synthetic trial rows to aggregate")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-dry-run", action="store_true")
    parser.add_argument("--skip-aggregate", action="store_true")
    parser.add_argument("--row-format", choices=("arrow", "parquet"), default="arrow", help="per-job row files")
    parser.add_argument("--threads", type=int, default=2, help="aggregate's threads (the rule's: 2)")
    args = parser.parse_args()

    within = True
    if not args.skip_dry_run:
        times, planned = time_dry_run(args.jobs, args.repeats)
        ok = statistics.median(times) <= DRY_RUN_TARGET_S
        within &= ok
        print(
            f"snakemake -n, {args.jobs} measure jobs requested, {planned} planned: {describe(times)}; "
            f"target <= {DRY_RUN_TARGET_S:.0f} s: {'met' if ok else 'MISSED'}"
        )
    if not args.skip_aggregate:
        times, cpu_times, n_rows, n_configs = time_aggregate(
            args.rows, args.jobs, args.repeats, args.row_format, args.threads
        )
        ok = statistics.median(times) <= AGGREGATE_TARGET_S
        within &= ok
        print(
            f"aggregate ({args.threads} threads), {n_rows} synthetic trial rows in {args.jobs} {args.row_format} "
            f"files -> {n_configs} configurations: "
            f"{describe(times)}; CPU {describe(cpu_times)}; target <= {AGGREGATE_TARGET_S:.0f} s: {'met' if ok else 'MISSED'}"
        )
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
