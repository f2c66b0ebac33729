#!/usr/bin/env python
"""Refresh the shipped study results in paper/data/ from a pipeline run's results/.

Outside the Snakemake DAG on purpose: shipping results is a deliberate act, not a side
effect of a run. Copies the aggregate tables (and the analyses, when present) and writes
``manifest.json``: file hashes, schema version, the config hashes and commits the rows were
measured with, each platform's devices, energy sources, driver, CUDA and library versions
(from the measure jobs' ``.env.json`` files), and the study's ``analysis`` section, which
``snakemake paper_figures`` uses.

    python paper/refresh.py                      # results/ -> paper/data/
    python paper/refresh.py --config STUDY.yaml  # the config the study ran with
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
try:
    import llenergymeasure  # noqa: F401  (installed with the project)
except ImportError:  # a plain checkout
    sys.path.insert(0, str(REPO / "workflow" / "scripts"))

import pandas as pd  # noqa: E402

from llenergymeasure.config import (  # noqa: E402
    ConfigError,
    load_config,
    measurement_settings,
)
from llenergymeasure.environment import config_hash  # noqa: E402
from llenergymeasure.io import sha256_file as sha256  # noqa: E402
from llenergymeasure.io import write_json_atomic  # noqa: E402
from llenergymeasure.variants import BACKEND_NAMES  # noqa: E402

TABLES = ("measurements.parquet", "summary.parquet")
OPTIONAL_TABLES = ("fidelity.parquet",)  # shipped when the run made it (rule fidelity_table)
# Environment fields recorded per platform in the manifest.
ENVIRONMENT_FIELDS = (
    "device",
    "device_name",
    "gpu_names",
    "gpu_count",
    "driver",
    "cuda_driver",
    "cuda_runtime",
    "cudnn",
    "power_limit_w",
    "cpu_model",
    "cpu_logical_cores",
    "machine",
    "os",
    "python",
    "libraries",
)


class RefreshError(RuntimeError):
    """The results to ship are missing or inconsistent."""


def _unique(values) -> list:
    """Distinct non-empty values as plain JSON types (numpy scalars unwrapped), sorted."""
    distinct = {v.item() if hasattr(v, "item") else v for v in values if v is not None and not pd.isna(v)}
    return sorted(distinct, key=str)


def _shown(path: Path) -> str:
    """`path` relative to the repository when inside it (no machine-specific prefixes)."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _one_or_all(values: list) -> Any:
    """One value when they agree, else the list of distinct values (as JSON text, sorted)."""
    distinct = sorted({json.dumps(v, sort_keys=True) for v in values})
    decoded = [json.loads(v) for v in distinct]
    return decoded[0] if len(decoded) == 1 else decoded


def environments(measure_dirs: list[Path]) -> dict[str, dict[str, Any]]:
    """Platform id -> the recorded environment fields of its measure jobs."""
    by_platform: dict[str, list[dict]] = defaultdict(list)
    for directory in measure_dirs:
        for path in sorted(directory.rglob("*.env.json")):
            env = json.loads(path.read_text())
            by_platform[str(env.get("platform_id"))].append(env)
    return {
        platform: {field: _one_or_all([env.get(field) for env in envs]) for field in ENVIRONMENT_FIELDS}
        | {"measure_jobs": len(envs)}
        for platform, envs in sorted(by_platform.items())
    }


def _git_head(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def refresh(results: Path, dest: Path, config_path: Path) -> dict[str, Any]:
    """Copy `results`' aggregate (and analysis) into `dest` and write its manifest."""
    aggregate = results / "aggregate"
    for name in TABLES:
        if not (aggregate / name).is_file():
            raise RefreshError(f"{aggregate / name}: missing; run the pipeline (snakemake --cores all) first")
    try:
        config = load_config(config_path)
    except ConfigError as error:
        raise RefreshError(f"--config {config_path}: {error}") from None
    measurements = pd.read_parquet(aggregate / "measurements.parquet")
    summary = pd.read_parquet(aggregate / "summary.parquet")

    dest.mkdir(parents=True, exist_ok=True)
    shipped = [*TABLES, *(n for n in OPTIONAL_TABLES if (aggregate / n).is_file())]
    for name in shipped:
        tmp = dest / f".{name}.tmp"
        shutil.copyfile(aggregate / name, tmp)
        tmp.replace(dest / name)
    analysis_files = sorted((results / "analysis").glob("*.parquet"))
    if analysis_files:
        shutil.rmtree(dest / "analysis", ignore_errors=True)
        (dest / "analysis").mkdir()
        for path in analysis_files:
            shutil.copyfile(path, dest / "analysis" / path.name)

    # measure jobs of this run and of every merged folder (their results/measure beside aggregate)
    measure_dirs = [results / "measure"] + [
        (REPO / folder).resolve().parent / "measure" for folder in config["analysis"].get("extra_results", [])
    ]
    envs = environments([d for d in measure_dirs if d.is_dir()])
    platforms = {}
    for platform, rows in measurements.groupby("platform_id", sort=True):
        platforms[str(platform)] = {
            "devices": _unique(rows["device_name"]),
            "energy_sources": _unique(rows["energy_source"]),
            "energy_is_estimate": _unique(rows["energy_is_estimate"]),
            "models": _unique(rows["model"]),
            "trials": len(rows),
            "failed_trials": int((rows["status"].astype(object) == "failed").sum()),
            "environment": envs.get(str(platform)),
        }
    row_hashes = _unique(measurements.get("config_hash", pd.Series(dtype=object)))
    manifest = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": _shown(aggregate),
        "refreshed_at_commit": _git_head(REPO),
        "schema_version": _unique(measurements.get("schema_version", pd.Series(dtype=object))),
        "config_hashes": row_hashes,
        "commits": _unique(measurements.get("git_commit", pd.Series(dtype=object))),
        "config": _shown(config_path),
        # rows carry the hash of the measurement settings they depend on (one per backend)
        "config_matches_rows": bool(row_hashes)
        and set(row_hashes) <= {config_hash(measurement_settings(config, backend)) for backend in BACKEND_NAMES},
        "analysis": config["analysis"],
        # the 2N-formula sweep of paper_figures runs at the study's new_tokens (outputs.study_new_tokens)
        "workload": config["workload"],
        "platforms": platforms,
        "configurations": len(summary),
        "files": {
            str(path.relative_to(dest)): {"sha256": sha256(path), "bytes": path.stat().st_size}
            for path in sorted([dest / n for n in shipped] + sorted((dest / "analysis").glob("*.parquet")))
        },
    }
    write_json_atomic(dest / "manifest.json", manifest)
    for path in [dest / "manifest.json", *(dest / n for n in shipped)]:
        path.chmod(0o644)  # shipped files are for everyone to read
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "results", help="the run's results/ folder")
    parser.add_argument("--dest", type=Path, default=REPO / "paper" / "data", help="where to ship them")
    parser.add_argument(
        "--config",
        type=Path,
        default=REPO / "config" / "config.yaml",
        help="the config the study ran with (its analysis section is shipped)",
    )
    args = parser.parse_args(argv)
    try:
        manifest = refresh(args.results, args.dest, args.config)
    except RefreshError as error:
        print(f"refresh: {error}", file=sys.stderr)
        return 2
    if not manifest["config_matches_rows"]:
        print(
            f"refresh: warning: {args.config} hashes to none of the rows' config hashes "
            f"{manifest['config_hashes']}; pass the study's config with --config",
            file=sys.stderr,
        )
    print(
        f"shipped {manifest['configurations']} configurations from "
        f"{len(manifest['platforms'])} platform(s) to {args.dest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
