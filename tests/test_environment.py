"""Environment capture on this (GPU-less) machine, config hashing, git state, GPU summaries."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess

import pytest

from llenergymeasure import environment


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        return True
    except Exception:
        return False


HAS_NVML = _nvml_works()


@pytest.mark.skipif(HAS_NVML, reason="covers a machine without NVML")
def test_capture_on_cpu_degrades_gpu_fields_to_none(repo_root):
    env = environment.capture("cpu", repo_root, {"study": "x", "seed": 0})
    json.dumps(env)  # serialisable as the .env.json
    for key in (
        "driver",
        "cuda_driver",
        "power_limit_w",
        "sm_clock_mhz",
        "memory_clock_mhz",
        "temperature_c",
        "throttle_reasons",
        "throttle_reasons_seen",
        "contention",
        "gpu_count",
    ):
        assert env[key] is None, key
    assert env["gpu_names"] == [] and env["nvml_error"]
    assert env["device"] == "cpu"
    assert env["device_name"] == env["cpu_model"] and env["cpu_model"]
    assert env["platform_id"] == "cpu-" + environment.slugify(env["cpu_model"])
    assert env["cpu_logical_cores"] >= 1 and env["hostname"]
    assert env["libraries"]["torch"] == importlib.metadata.version("torch")
    assert env["libraries"]["zeus"] == importlib.metadata.version("zeus")
    assert env["config_hash"] == environment.config_hash({"seed": 0, "study": "x"})


def test_git_commit_is_the_checkout_head(repo_root):
    if shutil.which("git") is None or not (repo_root / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(
        ["git", "-C", str(repo_root), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    commit, dirty = environment.git_state(repo_root)
    assert commit == head and re.fullmatch(r"[0-9a-f]{40}", commit)
    assert isinstance(dirty, bool)


def test_git_state_outside_a_checkout_is_none(tmp_path):
    assert environment.git_state(tmp_path) == (None, None)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_dirty_flag_follows_the_working_tree(tmp_path):
    def git(*args):
        subprocess.run(
            ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("commit", "-q", "-m", "one")
    commit, dirty = environment.git_state(tmp_path)
    assert len(commit) == 40 and dirty is False
    (tmp_path / "a.txt").write_text("two\n")
    assert environment.git_state(tmp_path) == (commit, True)


def test_config_hash_is_canonical():
    one = {"b": [1, 2], "a": {"y": 1.5, "x": None}}
    same = {"a": {"x": None, "y": 1.5}, "b": [1, 2]}
    assert environment.config_hash(one) == environment.config_hash(same)
    assert re.fullmatch(r"[0-9a-f]{64}", environment.config_hash(one))
    assert environment.config_hash(one) != environment.config_hash({**one, "b": [2, 1]})


@pytest.mark.parametrize(
    ("device", "gpus", "cpu", "expected"),
    [
        ("cuda", ["NVIDIA H100 80GB HBM3"], "x", "nvidia-h100-80gb-hbm3x1"),
        ("cuda", ["NVIDIA A100-SXM4-40GB"] * 4, "x", "nvidia-a100-sxm4-40gbx4"),
        ("cpu", ["NVIDIA H100 80GB HBM3"], "AMD EPYC 7763 64-Core Processor", "cpu-amd-epyc-7763-64-core-processor"),
        ("cpu", [], "Intel(R) Xeon(R) Processor", "cpu-intel-xeon-processor"),
    ],
)
def test_platform_id(device, gpus, cpu, expected):
    assert environment.platform_id(device, gpus, cpu) == expected


@pytest.mark.skipif(HAS_NVML, reason="covers a machine without NVML")
def test_gpu_state_off_gpu_is_empty_with_the_reason():
    state = environment.capture_gpu_state("before")
    assert state["label"] == "before" and state["gpus"] == []
    assert "NVML" in state["nvml_error"]
    assert environment.summarise_gpu_states([state])["contention"] is None


def _snapshot(reasons, pids):
    return {
        "gpus": [
            {
                "throttle_reasons": reasons,
                "processes": [{"pid": pid, "used_memory_bytes": memory} for pid, memory in pids],
            }
        ]
    }


def test_summary_collects_throttling_and_processes_present_before_the_job():
    states = [_snapshot(["gpu_idle"], [(4242, 1 << 30)]), _snapshot(["sw_power_cap"], [(4242, 1 << 30), (77, 5 << 30)])]
    summary = environment.summarise_gpu_states(states, own_pid=77)
    assert summary["throttle_reasons_seen"] == ["gpu_idle", "sw_power_cap"]
    assert summary["throttled"] is True and summary["contention"] is True
    assert summary["other_gpu_processes"] == [{"pid": 4242, "used_memory_bytes": 1 << 30}]


def test_own_process_is_not_contention_even_under_a_host_pid():
    alone = [_snapshot(["gpu_idle"], []), _snapshot([], [(90001, 5 << 30)])]  # our context, host PID
    summary = environment.summarise_gpu_states(alone, own_pid=77)
    assert summary["contention"] is False and summary["throttled"] is False
    joined = [_snapshot([], []), _snapshot([], [(90001, 5 << 30), (90002, 1 << 20)])]
    summary = environment.summarise_gpu_states(joined, own_pid=77)
    assert summary["contention"] is True
    assert summary["other_gpu_processes"] == [{"pid": 90002, "used_memory_bytes": 1 << 20}]
    visible = [_snapshot([], []), _snapshot([], [(77, 5 << 30), (90002, 1 << 20)])]
    assert environment.summarise_gpu_states(visible, own_pid=77)["other_gpu_processes"][0]["pid"] == 90002


def test_throttle_reason_bits_decode():
    assert environment._decode_reasons(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert environment._decode_reasons(0) == [] and environment._decode_reasons(None) is None


def test_library_versions_are_none_when_absent(monkeypatch):
    monkeypatch.setitem(environment.LIBRARIES, "surely_absent", "surely-absent-distribution-xyz")
    assert environment.library_versions()["surely_absent"] is None
