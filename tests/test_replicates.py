"""Replicates: whole measure jobs in fresh processes, run replicate-major with the configuration
order rotated per replicate, rows carrying `replicate`, and a grown replicate count that runs
only the new replicates.

The first test plans the DAG only (cheap); the second runs the real workflow (real snakemake,
real measure jobs on a tiny random-weight model) in a copy of the repository and reads the
order in which snakemake started the measure jobs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import BIN, copy_workflow, run_snakemake

AGGREGATE = "results/aggregate/measurements.parquet"

STUDY = {
    "study": "replicates",
    "device": "cpu",
    "models": {
        "tiny-gpt2": {
            "architecture": "config/models/tiny-gpt2.json",
            "backends": {"pytorch": ["none-float32", "none-bfloat16"]},
        }
    },
    "workload": {"batch_sizes": [1], "prompt_tokens": [8], "new_tokens": 4},
    "measurement": {
        "trials": 2,
        "replicates": 2,
        "warmup_runs": 1,
        "warmup_cv_threshold": None,
        "warmup_min_s": {"cpu": 0.0},
        "min_window_s": {"cpu": 0.02},
        "idle_baseline_s": {"cpu": 0.1},
    },
}
CONFIGS = ["tiny-gpt2/none-float32/pytorch", "tiny-gpt2/none-bfloat16/pytorch"]


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("LLEM_CPU_TDP_W", None)
    return env


def _write(path: Path, study: dict) -> Path:
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _started_measure_jobs(output: str) -> list[str]:
    """Outputs of the measure jobs in the order snakemake started them ("rule measure:" blocks)."""
    started, in_measure = [], False
    for line in output.splitlines():
        if re.match(r"^(local)?rule \w+:", line.strip()):
            in_measure = line.strip() in ("rule measure:", "localrule measure:")
        elif in_measure and line.strip().startswith("output:"):
            found = re.search(r"results/measure/(\S+?/replicate-\d+)\.parquet", line)
            if found:
                started.append(found.group(1))
            in_measure = False
    return started


def test_dry_run_plans_one_measure_job_per_replicate_and_one_flops_job_per_model(tmp_path):
    workdir = copy_workflow(tmp_path / "repo")
    study = _write(tmp_path / "study.yaml", {**STUDY, "measurement": {**STUDY["measurement"], "replicates": 3}})
    dry = run_snakemake(workdir, AGGREGATE, "-n", "--cores", "2", "--configfile", str(study), env=_env(), timeout=300)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    planned = set(_started_measure_jobs(dry.stdout))
    assert planned == {f"{config}/replicate-{r}" for config in CONFIGS for r in (1, 2, 3)}
    assert set(re.findall(r"results/flops/(\S+?)/measured\.arrow", dry.stdout)) == {"tiny-gpt2"}
    counts = re.findall(r"^\s*flops\s+(\d+)$", dry.stdout, re.MULTILINE)  # the job count table(s)
    assert counts and set(counts) == {"1"}, dry.stdout[-2000:]


def test_a_bad_stated_power_stops_the_plan_in_one_line(tmp_path):
    workdir = copy_workflow(tmp_path / "repo")
    dry = run_snakemake(workdir, "-n", "--cores", "1", env={**_env(), "LLEM_CPU_TDP_W": "85W"}, timeout=300)
    assert dry.returncode != 0
    lines = [line for line in (dry.stdout + dry.stderr).splitlines() if "LLEM_CPU_TDP_W" in line]
    assert lines == [
        "environment error: LLEM_CPU_TDP_W='85W': expected the processor's power in watts, a positive "
        "float; fix it or unset it (energy is then unavailable)"
    ], dry.stdout[-2000:] + dry.stderr[-2000:]
    assert "rule " not in dry.stdout


@pytest.mark.pipeline
def test_replicates_run_interleaved_and_growing_them_runs_only_the_new_ones(tmp_path):
    workdir = copy_workflow(tmp_path / "repo")
    study = _write(tmp_path / "study.yaml", STUDY)
    result = run_snakemake(workdir, AGGREGATE, "--cores", "2", "--configfile", str(study), env=_env(), timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]

    # replicate 1 of both configurations, then replicate 2 with their order rotated by one
    assert _started_measure_jobs(output) == [
        f"{CONFIGS[0]}/replicate-1",
        f"{CONFIGS[1]}/replicate-1",
        f"{CONFIGS[1]}/replicate-2",
        f"{CONFIGS[0]}/replicate-2",
    ], output[-4000:]
    rows = pd.read_parquet(workdir / AGGREGATE)
    assert len(rows) == 2 * 2 * 2 and (rows.status == "ok").all()
    assert rows.groupby("quant")["replicate"].apply(lambda r: sorted(set(r))).tolist() == [[1, 2], [1, 2]]
    assert (rows.groupby(["quant", "replicate"]).size() == 2).all()  # trials 0 and 1 of each replicate
    # fresh processes: every replicate has its own environment record (own pid, own load)
    envs = sorted((workdir / "results" / "measure").rglob("replicate-*.env.json"))
    assert len(envs) == 4

    finished = {p: p.stat().st_mtime_ns for p in (workdir / "results" / "measure").rglob("*.parquet")}
    grown = _write(study, {**STUDY, "measurement": {**STUDY["measurement"], "replicates": 3}})
    dry = run_snakemake(workdir, AGGREGATE, "-n", "--cores", "2", "--configfile", str(grown), env=_env(), timeout=300)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    planned = set(_started_measure_jobs(dry.stdout))  # the outputs of the planned measure jobs
    assert planned == {f"{config}/replicate-3" for config in CONFIGS}, dry.stdout[-3000:]
    assert not re.search(r"rule (model|quantise):", dry.stdout)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
