"""`llenergymeasure analyse MEASUREMENTS.parquet --out DIR`: every analysis from a per-trial table.

For a reviewer re-deriving the study's numbers, or another group's own measurements. From
the per-trial table alone it writes ``DIR/summary.parquet`` (`stats.summarise`, as the
aggregate rule does) and ``DIR/<analysis>.parquet`` for every analysis through
`analysis.analyse_files`, the function the ``analyse`` rule runs, with the default config's
analysis settings (reference, compound metrics, FLOPs tolerance, sensor-only energy) and its
architecture configs for the 2N sweep. A shipped study (a ``manifest.json`` beside the table,
as in ``paper/data/``) is analysed with its own analysis section, ``new_tokens`` and, where
it shipped one, its ``fidelity.parquet``, as ``snakemake paper_figures`` analyses it. A table
missing a required column is refused, with one line naming every missing column, before
anything is computed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from .stats import CONFIG_KEYS, HEADLINE_METRICS, StatsInputError

REQUIRED_BASE: tuple[str, ...] = (*CONFIG_KEYS, "trial", "status", *HEADLINE_METRICS)


def required_columns(config_analysis: dict[str, Any]) -> list[str]:
    """Columns a per-trial table needs for every analysis: the configuration keys, trial and
    status, the headline metrics and the compound measure's metrics."""
    required = list(REQUIRED_BASE)
    for metric in config_analysis["compound_metrics"]:
        if metric not in required:
            required.append(metric)
    return required


def parse_reference(text: str) -> dict[str, str]:
    """``MODEL/QUANT/BACKEND`` as the config's reference mapping."""
    parts = text.split("/")
    if len(parts) != 3 or not all(parts):
        raise StatsInputError(f"--reference: {text!r} is not MODEL/QUANT/BACKEND, e.g. tiny-llama/none-float32/pytorch")
    return dict(zip(("model", "quant", "backend"), parts, strict=True))


def analyse_table(
    measurements_path: str | Path,
    out: str | Path,
    reference: dict[str, str] | None = None,
    use_estimated_energy: bool | None = None,
) -> dict[str, pd.DataFrame]:
    """Summary and every analysis of `measurements_path` under `out` (see the module docstring)."""
    from . import analysis, stats
    from .config import DEFAULT_CONFIG_PATH, load_config
    from .io import write_parquet_atomic
    from .outputs import shipped_analysis_config, shipped_new_tokens
    from .paths import REPO_ROOT

    config = load_config(DEFAULT_CONFIG_PATH, has_cuda=False)
    path = Path(measurements_path)
    manifest = path.parent / "manifest.json"  # a shipped study's own settings
    config_analysis = shipped_analysis_config(manifest, config["analysis"])
    if reference is not None:
        config_analysis["reference"] = reference
    if use_estimated_energy is not None:
        config_analysis["use_estimated_energy"] = use_estimated_energy
    try:
        measurements = pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise StatsInputError(f"{path}: not a readable Parquet table ({error})") from None
    missing = [column for column in required_columns(config_analysis) if column not in measurements.columns]
    if missing:
        raise StatsInputError(
            f"{path}: missing required column(s) {', '.join(missing)}; a per-trial table needs "
            f"{', '.join(required_columns(config_analysis))} (docs/ARCHITECTURE.md, 'Rows')"
        )
    out = Path(out)
    summary = stats.summarise(measurements, cv_threshold=config["measurement"]["cv_flag_threshold"])
    write_parquet_atomic(out / "summary.parquet", summary)
    return analysis.analyse_files(
        measurements_path=path,
        summary_path=out / "summary.parquet",
        outputs=analysis.analysis_paths(str(out)),
        config_analysis=config_analysis,
        architecture_paths=sorted((REPO_ROOT / "config" / "models").glob("*.json")),
        families=analysis.families_from_config(config["models"], REPO_ROOT),
        new_tokens=shipped_new_tokens(manifest, config["workload"]["new_tokens"]),
        fidelity_path=fidelity if (fidelity := path.parent / "fidelity.parquet").exists() else None,
    )


def run_cli(args: argparse.Namespace) -> int:
    try:
        reference = parse_reference(args.reference) if args.reference else None
        results = analyse_table(args.measurements, args.out, reference, True if args.use_estimated_energy else None)
    except (StatsInputError, ValueError) as error:
        print(f"llenergymeasure analyse: {error}", file=sys.stderr)
        return 2
    print(f"wrote {Path(args.out) / 'summary.parquet'} and {len(results)} analyses to {args.out}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `llenergymeasure analyse`."""
    parser = subparsers.add_parser(
        "analyse",
        help="summary and every analysis from a per-trial measurements table",
        description="Write DIR/summary.parquet and DIR/<analysis>.parquet for every analysis of the "
        "study, exactly as the pipeline's analyse rule computes them.",
    )
    parser.add_argument("measurements", metavar="MEASUREMENTS.parquet", help="per-trial table")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--reference",
        metavar="MODEL/QUANT/BACKEND",
        help="reference choice of the compound measure (default: the config's)",
    )
    parser.add_argument(
        "--use-estimated-energy",
        action="store_true",
        help="let estimated energy into the energy analyses (default: sensor energy only)",
    )
    parser.set_defaults(func=run_cli)
