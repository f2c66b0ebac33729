"""Faults: a pipeline killed mid-measure resumes without redoing or duplicating anything, and a
configuration that cannot run leaves failure rows while the rest of the sweep completes.

Both tests run the real workflow (real snakemake, real measure jobs on tiny random-weight
models) in a copy of the repository in a temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO_ROOT, SNAKEMAKE, copy_workflow, run_snakemake

pytestmark = pytest.mark.pipeline

ROW_KEYS = ["model", "quant", "backend", "batch_size", "prompt_tokens", "output_tokens", "replicate", "trial"]
AGGREGATE = "results/aggregate/measurements.parquet"

# Three measure jobs of a few seconds each, so that a kill can land inside the measure stage.
KILL_STUDY = {
    "study": "fault-kill",
    "device": "cpu",
    "models": {
        "tiny-gpt2": {
            "architecture": "config/models/tiny-gpt2.json",
            "backends": {"pytorch": ["none-float32", "none-bfloat16"]},
        },
        "tiny-llama": {"architecture": "config/models/tiny-llama.json", "backends": {"pytorch": ["none-float32"]}},
    },
    "workload": {"batch_sizes": [1, 2], "prompt_tokens": [16], "new_tokens": 4},
    "measurement": {
        "trials": 3,
        "replicates": 1,
        "warmup_runs": 1,
        "warmup_cv_threshold": None,
        "min_window_s": {"cpu": 0.2},
        "idle_baseline_s": {"cpu": 0.5},
    },
}
KILL_JOBS = 3
KILL_ROWS = KILL_JOBS * 2 * 3  # jobs x batch sizes x trials

# A shape that cannot run: batch 200,000,000 x 16 prompt tokens needs 25.6 GB for the token
# ids alone, more than the address-space limit the run gets (below), so it fails for real.
ADDRESS_SPACE_LIMIT = 8 << 30


def _batch_past_the_address_space() -> int:
    """A batch the memory preflight lets through (its estimate, a floor of the real peak, fits
    this machine's RAM) that cannot run under ADDRESS_SPACE_LIMIT: it fails at run time."""
    from llenergymeasure.memory_preflight import estimate, host_memory, largest_fitting_batch

    arch = json.loads((REPO_ROOT / "config" / "models" / "tiny-gpt2.json").read_text())
    target = 2 * ADDRESS_SPACE_LIMIT
    ram = host_memory()
    assert ram is not None and ram.bytes > target, f"this test needs more than {target >> 30} GiB of RAM"
    batch = largest_fitting_batch(arch, "none-float32", "pytorch", 16, 4, target)
    assert estimate(arch, "none-bfloat16", "pytorch", batch, 16, 4).total > ADDRESS_SPACE_LIMIT
    return batch


HUGE_BATCH = _batch_past_the_address_space()
FAIL_STUDY = {
    "study": "fault-failing-configuration",
    "device": "cpu",
    "models": {
        "tiny-gpt2": {
            "architecture": "config/models/tiny-gpt2.json",
            "backends": {"pytorch": ["none-float32", "none-bfloat16"]},
        },
        # A hub snapshot that cannot be fetched (offline, and the repository does not exist):
        # its model job fails, so its quantise/measure/flops jobs never run.
        "unreachable": {
            "source": "hub",
            "repo_id": "llenergymeasure-tests/does-not-exist",
            "revision": "0" * 40,
            "backends": {"pytorch": ["none-float32"]},
        },
    },
    "workload": {"batch_sizes": [1, HUGE_BATCH], "prompt_tokens": [16], "new_tokens": 4},
    "measurement": {
        "trials": 2,
        "replicates": 1,
        "warmup_runs": 1,
        "warmup_cv_threshold": None,
        "min_window_s": {"cpu": 0.05},
        "idle_baseline_s": {"cpu": 0.2},
    },
}


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _planned(output: str) -> dict[str, int]:
    """rule -> count from the first 'Job stats' table snakemake printed."""
    table = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    counts = {}
    for line in table.splitlines():
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if match and match.group(1) == "total":
            break
        if match:
            counts[match.group(1)] = int(match.group(2))
    return counts


def _measure_outputs(workdir: Path) -> dict[Path, int]:
    """Finished measure row files and their mtimes (ns)."""
    return {p: p.stat().st_mtime_ns for p in sorted((workdir / "results" / "measure").rglob("*.parquet"))}


# rule -> (glob of its finished, atomically written output under results/, jobs in KILL_STUDY)
KILL_OUTPUTS = {
    "model": ("models/*/model_manifest.json", 2),
    "quantise": ("variants/*/*/variant.json", 3),
    "measure": ("measure/*/*/*/replicate-*.parquet", 3),
    "flops": ("flops/*/measured.arrow", 2),  # one flops job per model
}


def _finished(workdir: Path) -> dict[str, dict[Path, int]]:
    """rule -> {finished output: mtime in ns}."""
    results = workdir / "results"
    return {
        rule: {p: p.stat().st_mtime_ns for p in results.glob(pattern)} for rule, (pattern, _) in KILL_OUTPUTS.items()
    }


def _running_measure(workdir: Path) -> bool:
    """A measure job has started (its log exists) and not yet written its rows."""
    for log in (workdir / "logs" / "measure").rglob("*.log"):
        rows = workdir / "results" / log.relative_to(workdir / "logs").with_suffix(".parquet")
        if not rows.exists() and log.stat().st_size > 0:
            return True
    return False


def test_sigkill_mid_measure_then_rerun_redoes_nothing_finished(tmp_path):
    import pandas as pd

    workdir = copy_workflow(tmp_path / "repo")
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(KILL_STUDY, sort_keys=False))
    args = [AGGREGATE, "--cores", "1", "--configfile", str(study)]

    # Run in its own session so that SIGKILL reaches snakemake and every job it started.
    with open(tmp_path / "first-run.log", "wb") as log:
        proc = subprocess.Popen(
            [SNAKEMAKE, *args], cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True
        )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            done = _measure_outputs(workdir)
            if 1 <= len(done) < KILL_JOBS and _running_measure(workdir):
                time.sleep(1.0)  # well inside the next measure job
                break
            time.sleep(0.2)
        assert proc.poll() is None, (
            "the run ended before a kill point was reached:\n" + (tmp_path / "first-run.log").read_text()[-3000:]
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    finished = _finished(workdir)
    measured = finished["measure"]
    assert 1 <= len(measured) < KILL_JOBS, f"kill landed outside the measure stage: {list(measured)}"
    for path in measured:  # atomic writes: whatever exists is complete
        assert len(pd.read_parquet(path)) == 2 * 3, path
    assert not (workdir / AGGREGATE).exists()

    # What a user does after a crash: release the stale lock, run again.
    unlock = run_snakemake(workdir, *args, "--unlock", env=_env(), timeout=300)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    rerun = run_snakemake(workdir, *args, env=_env(), timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]

    # Exactly the unfinished jobs ran again; no finished output was rewritten.
    planned = _planned(rerun.stdout + rerun.stderr)
    for rule, (_, total) in KILL_OUTPUTS.items():
        assert planned.get(rule, 0) == total - len(finished[rule]), (rule, planned)
        for path, mtime in finished[rule].items():
            assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"

    rows = pd.read_parquet(workdir / AGGREGATE)
    assert len(rows) == KILL_ROWS
    assert not rows.duplicated(subset=ROW_KEYS).any()
    assert set(rows["status"]) == {"ok"}
    # no temporary files of interrupted atomic writes end up as results
    assert not list((workdir / "results").rglob("*.parquet.*")), list((workdir / "results").rglob("*.parquet.*"))


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


def test_failing_configuration_leaves_failure_rows_and_the_rest_completes(tmp_path):
    import pandas as pd

    workdir = copy_workflow(tmp_path / "repo")
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(FAIL_STUDY, sort_keys=False))
    result = subprocess.run(
        [SNAKEMAKE, AGGREGATE, "--cores", "2", "--keep-going", "--configfile", str(study)],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=900,
        preexec_fn=_limit_address_space,
    )
    output = result.stdout + result.stderr
    # The unreachable model's job fails, so the run as a whole reports failure ...
    assert result.returncode != 0, output[-3000:]
    assert "rule model" in output and "unreachable" in output
    assert not (workdir / "results" / "measure" / "unreachable").exists()
    # ... but with --keep-going every job of the other model finished, and the shape that
    # could not run is a failure row beside the shapes that could.
    for quant in ("none-float32", "none-bfloat16"):
        annotated = pd.read_feather(workdir / "results" / "flops" / "tiny-gpt2" / "measured.arrow")
        rows = annotated[annotated["quant"] == quant]
        ok = rows[rows["status"] == "ok"]
        failed = rows[rows["status"] == "failed"]
        assert len(ok) == 2 and set(ok["batch_size"]) == {1}
        assert len(failed) == 1 and int(failed["batch_size"].iloc[0]) == HUGE_BATCH
        error = str(failed["error"].iloc[0])
        assert "allocate" in error.lower() and "\n" not in error, error
        assert failed["latency_s"].isna().all() and failed["energy_j"].isna().all()
        assert ok["latency_s"].gt(0).all()


def test_growing_the_sweep_does_not_redo_finished_jobs(tmp_path):
    """Adding a model to a finished sweep (and writing the config with other key order) plans
    only the new model's jobs: finished measurements are never re-run for an unrelated edit."""
    workdir = copy_workflow(tmp_path / "repo")
    first = {
        **KILL_STUDY,
        "models": {
            "tiny-gpt2": {"architecture": "config/models/tiny-gpt2.json", "backends": {"pytorch": ["none-float32"]}}
        },
        "measurement": {**KILL_STUDY["measurement"], "trials": 1},
    }
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(first, sort_keys=False))
    result = run_snakemake(workdir, AGGREGATE, "--cores", "2", "--configfile", str(study), env=_env(), timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    grown = yaml.safe_load(study.read_text())
    grown["models"]["tiny-llama"] = {
        "architecture": "config/models/tiny-llama.json",
        "backends": {"pytorch": ["none-float32"]},
    }
    study.write_text(yaml.safe_dump(grown, sort_keys=True))  # same content for tiny-gpt2, other key order
    dry = run_snakemake(workdir, AGGREGATE, "-n", "--cores", "2", "--configfile", str(study), env=_env(), timeout=300)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    planned = _planned(dry.stdout + dry.stderr)
    redone = [line.strip() for line in dry.stdout.splitlines() if "tiny-gpt2" in line and "reason:" in line]
    assert planned.get("model") == 1 and planned.get("quantise") == 1 and planned.get("measure") == 1, (
        f"{planned}; tiny-gpt2 jobs re-planned: {redone[:3]}"
    )
