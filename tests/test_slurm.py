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

from conftest import REPO_ROOT, run_snakemake
from slurm_cluster import LocalSlurmCluster, unavailable_reason

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
    for rule in ("model", "gguf", "flops", "aggregate", "analyse", "figures"):
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


# ------------------------------------------------------------------ the real cluster


@pytest.fixture(scope="module")
def cluster():
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no local SLURM cluster: {reason}")
    c = LocalSlurmCluster()
    c.start()
    print(f"\nSLURM cluster up in {c.start_s:.1f} s")
    yield c
    c.stop()
    print(f"SLURM cluster stopped in {c.stop_s:.1f} s")


def cluster_profile(dest: Path, cluster: LocalSlurmCluster, mem_mb: int = 1000) -> Path:
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
    profile["latency-wait"] = 5
    profile["retries"] = 0
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
