"""profiles/slurm against a real one-node SLURM cluster started on this machine.

The cluster (tests/slurm_cluster.py) runs Debian's slurmctld/slurmd/munge; every job
really goes through sbatch and srun via snakemake-executor-plugin-slurm. The profile
used is profiles/slurm itself, with only what a one-node CPU test cluster must change
(partitions, GPU counts, memory, status command) rewritten into a copy.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, copy_workflow, run_snakemake
from slurm_cluster import ClusterUnavailable, LocalSlurmCluster, unavailable_reason

PROFILE = REPO_ROOT / "profiles" / "slurm" / "config.yaml"

pytestmark = pytest.mark.slurm


def load_profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


# ------------------------------------------------------------------ static checks (no cluster)


def test_profile_uses_slurm_executor_and_bounded_queue():
    profile = load_profile()
    assert profile["executor"] == "slurm"
    assert 100 <= profile["jobs"] <= 5000
    assert profile["keep-going"] is True
    assert profile["rerun-incomplete"] is True


def test_profile_gpu_rules_ask_for_gpus_through_the_gpu_resource():
    resources = load_profile()["set-resources"]
    for rule in ("measure", "quantise"):
        assert int(resources[rule]["gpu"]) >= 1, rule
        assert resources[rule]["slurm_partition"] != load_profile()["default-resources"]["slurm_partition"]
    for rule in ("model", "gguf", "flops", "aggregate", "analyse", "figure", "latex_tables"):
        assert "gpu" not in resources.get(rule, {}), f"{rule} is CPU-only"


def test_profile_never_passes_gres_or_managed_options_in_slurm_extra():
    from snakemake_executor_plugin_slurm.validation import get_forbidden_slurm_options

    profile = load_profile()
    extras = [profile["default-resources"].get("slurm_extra", "")]
    extras += [res.get("slurm_extra", "") for res in profile["set-resources"].values()]
    for extra in extras:
        for pattern, what in get_forbidden_slurm_options().items():
            assert not re.search(pattern, str(extra)), f"slurm_extra sets the {what}"


def test_profile_plugin_settings_are_known_to_the_installed_plugin():
    """Every slurm-* key is an ExecutorSettings field of the installed plugin."""
    import dataclasses

    from snakemake_executor_plugin_slurm import ExecutorSettings

    fields = {f.name.replace("_", "-") for f in dataclasses.fields(ExecutorSettings)}
    for key in load_profile():
        if key.startswith("slurm-"):
            assert key.removeprefix("slurm-") in fields, key


def test_profile_groups_only_cpu_rules_and_every_group_has_a_size():
    profile = load_profile()
    resources = profile["set-resources"]
    for rule, group in profile["groups"].items():
        assert "gpu" not in resources.get(rule, {}), f"{rule} is grouped but uses a GPU"
        assert profile["group-components"][group] > 1


def test_profile_names_only_rules_the_workflow_has():
    """A misspelt rule in set-resources/set-threads/groups would silently do nothing."""
    result = run_snakemake(REPO_ROOT, "--list-rules", "--workflow-profile", str(PROFILE.parent), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rules = set(result.stdout.split())
    profile = load_profile()
    for section in ("set-resources", "set-threads", "groups"):
        unknown = set(profile[section]) - rules
        assert not unknown, f"{section} names rules the workflow does not have: {sorted(unknown)}"


def test_profile_sets_cores_because_rules_size_threads_from_it():
    """Without `cores`, a cluster run stops while parsing (rules use workflow.cores)."""
    profile = load_profile()
    assert isinstance(profile.get("cores"), int) and profile["cores"] >= 1
    assert all(threads <= profile["cores"] for threads in profile["set-threads"].values())


# ------------------------------------------------------------------ the real cluster


@pytest.fixture(scope="module")
def cluster():
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no local SLURM cluster: {reason}")
    c = LocalSlurmCluster()
    try:
        c.start()
    except ClusterUnavailable as exc:  # packages cannot be installed here; daemon failures still fail
        pytest.skip(f"no local SLURM cluster: {exc}")
    print(f"\nSLURM cluster up in {c.start_s:.1f} s")
    yield c
    c.stop()
    print(f"SLURM cluster stopped in {c.stop_s:.1f} s")


def cluster_profile(dest: Path, cluster: LocalSlurmCluster, mem_mb: int = 2000) -> Path:
    """Write profiles/slurm adapted to the one-node CPU test cluster into `dest`; return the folder.

    Changes only what this cluster requires: its partition, no GPUs, memory the node has,
    squeue as status command (no slurmdbd), no account, a short first status check.
    """
    profile = load_profile()
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        if "slurm_partition" in resources:
            resources["slurm_partition"] = f"'{cluster.partition}'"
        if "gpu" in resources:
            resources["gpu"] = 0
        resources.pop("gpu_model", None)
        if "mem_mb" in resources:
            resources["mem_mb"] = mem_mb
    profile["set-threads"] = {rule: 1 for rule in profile.get("set-threads", {})}
    profile["slurm-status-command"] = "squeue"
    profile["slurm-no-account"] = True
    profile["slurm-init-seconds-before-status-checks"] = 2
    profile["slurm-keep-successful-logs"] = True
    profile["latency-wait"] = 5
    profile["retries"] = 0
    profile["cores"] = 2
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


TRIVIAL_SNAKEFILE = """
rule all:
    input: "c.txt"

rule a:
    output: "a.txt"
    shell: "echo $SLURM_JOB_ID > {output}"

rule b:
    input: "a.txt"
    output: "b.txt"
    shell: "cat {input} > {output}; echo $SLURM_JOB_ID >> {output}"

rule c:
    input: "b.txt"
    output: "c.txt"
    shell: "cat {input} > {output}; echo $SLURM_JOB_ID >> {output}"
"""


def test_three_jobs_go_through_sbatch(cluster, tmp_path):
    workdir = tmp_path / "trivial"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(TRIVIAL_SNAKEFILE)
    profile = cluster_profile(tmp_path / "profile", cluster)
    before = cluster.submitted_job_count()
    t0 = time.monotonic()
    result = run_snakemake(workdir, "--workflow-profile", str(profile), timeout=300)
    elapsed = time.monotonic() - t0
    assert result.returncode == 0, result.stderr[-4000:] + cluster.logs()
    print(f"3-job workflow through sbatch: {elapsed:.1f} s")
    job_ids = (workdir / "c.txt").read_text().split()
    # Three distinct SLURM job ids: each rule ran inside its own SLURM job.
    assert len(job_ids) == 3 and len(set(job_ids)) == 3 and all(j.isdigit() for j in job_ids)
    assert cluster.submitted_job_count() - before == 3


SMALL_STUDY = {
    "study": "slurm-small",
    "device": "cpu",
    "models": {
        "tiny-gpt2": {
            "source": "config",
            "architecture": "config/models/tiny-gpt2.json",
            "backends": {"pytorch": ["none-float32"]},
        }
    },
    "workload": {"batch_sizes": [1], "prompt_tokens": [16], "new_tokens": 4},
    "measurement": {
        "trials": 2,
        "replicates": 1,
        "warmup_runs": 1,
        "min_window_s": {"cpu": 0.05},
        "idle_baseline_s": {"cpu": 0.2},
    },
    "analysis": {"reference": {"model": "tiny-gpt2", "quant": "none-float32", "backend": "pytorch"}},
}

# Log folders the plugin makes per submitted rule (rule_<name>) or group job (group_<id>_<rules>):
# every rule that does real work must have gone through sbatch.
SUBMITTED = ("group_*_model", "rule_quantise", "rule_measure", "group_*_flops")
# Declared `localrules` in the Snakefile: cheap table and figure rules run on the submitting host.
LOCAL = ("rule_aggregate", "rule_analyse", "rule_figure", "rule_latex_tables")


def test_small_study_through_slurm_matches_a_local_run(cluster, tmp_path):
    """The real pipeline, through profiles/slurm and sbatch, gives the rows a local run gives."""
    import pandas as pd

    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(SMALL_STUDY, sort_keys=False))
    local, remote = copy_workflow(tmp_path / "local"), copy_workflow(tmp_path / "slurm")

    t0 = time.monotonic()
    result = run_snakemake(
        local, "results/aggregate/measurements.parquet", "--cores", "2", "--configfile", str(study), timeout=600
    )
    local_s = time.monotonic() - t0
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    profile = cluster_profile(tmp_path / "profile", cluster)
    before = cluster.submitted_job_count()
    t0 = time.monotonic()
    result = run_snakemake(remote, "--workflow-profile", str(profile), "--configfile", str(study), timeout=900)
    slurm_s = time.monotonic() - t0
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:] + cluster.logs()
    print(
        f"small study: local {local_s:.0f} s, through SLURM {slurm_s:.0f} s, "
        f"{cluster.submitted_job_count() - before} sbatch jobs"
    )

    # Every working rule ran inside a SLURM job (the plugin keeps one log folder per rule/group).
    slurm_logs = remote / "logs" / "slurm"
    folders = sorted(p.name for p in slurm_logs.iterdir()) if slurm_logs.is_dir() else []
    for pattern in SUBMITTED:
        logs = [log for folder in slurm_logs.glob(pattern) for log in folder.rglob("*.log")]
        assert logs, f"{pattern} did not go through sbatch; SLURM log folders: {folders}"
    for pattern in LOCAL:
        assert not list(slurm_logs.glob(pattern)), f"{pattern} is a local rule but was submitted: {folders}"
    assert cluster.submitted_job_count() - before >= len(SUBMITTED)

    local_rows = pd.read_parquet(local / "results" / "aggregate" / "measurements.parquet")
    slurm_rows = pd.read_parquet(remote / "results" / "aggregate" / "measurements.parquet")
    assert list(slurm_rows.columns) == list(local_rows.columns)
    assert dict(slurm_rows.dtypes.astype(str)) == dict(local_rows.dtypes.astype(str))
    assert len(slurm_rows) == len(local_rows) == 2  # 1 model x 1 variant x 1 shape x 2 trials
    keys = ["model", "quant", "backend", "batch_size", "prompt_tokens", "output_tokens", "trial"]
    assert sorted(map(tuple, slurm_rows[keys].to_numpy())) == sorted(map(tuple, local_rows[keys].to_numpy()))
    assert set(slurm_rows["status"]) == {"ok"}
    assert slurm_rows["latency_s"].gt(0).all() and slurm_rows["flops_total"].gt(0).all()
    # the rest of the DAG finished on the cluster too
    assert (remote / "results" / "aggregate" / "summary.parquet").is_file()
    assert list((remote / "results" / "figures").glob("*.png"))
