"""Scenario serving: steady-state arithmetic on known timelines, the seeded load, the config
checks, and for real on CPU the vLLM server under Poisson load at two rates, its rows, its
figures, and no server process left behind after a forced failure or a killed job."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT, SCRIPTS, copy_workflow, run_snakemake, vllm_python

from llenergymeasure.config import ConfigError, load_config
from llenergymeasure.serving import steady
from llenergymeasure.serving.load import Record, make_requests
from llenergymeasure.serving.server import group_alive, server_command

SERVING_SCHEMA = yaml.safe_load((REPO_ROOT / "config/schema/serving.schema.yaml").read_text())


def _record(index, sent, finished, chunk_times, tokens=1):
    record = Record(index, prompt_tokens=8, requested_tokens=len(chunk_times) * tokens, sent=sent)
    record.chunks = [(t, tokens) for t in chunk_times]
    record.finished = finished
    return record


def test_steady_window_at_a_fixed_concurrency_runs_from_full_to_the_last_send():
    # concurrency 2: requests 0 and 1 at t=10, then each finish starts the next; the last send is at t=13
    records = [
        _record(0, 10.0, 12.0, [10.5, 11.0, 12.0]),
        _record(1, 10.0, 13.0, [11.0, 12.0, 13.0]),
        _record(2, 12.0, 14.0, [12.5, 13.5, 14.0]),
        _record(3, 13.0, 15.0, [13.5, 14.5, 15.0]),
    ]
    window = steady.steady_window(records, concurrency=2)
    assert (window.start, window.end, window.fill_level) == (10.0, 13.0, 2)
    assert window.share == pytest.approx(3.0 / 5.0)
    # tokens streamed inside [10, 13]: 3 + 3 + 1 (12.5) + 0
    assert steady.tokens_in_window(records, window) == 7
    metrics = steady.serving_metrics(records, window, ttft_slo_s=0.6, tpot_slo_s=1.0)
    assert metrics["requests_completed"] == 4 and metrics["steady_output_tokens"] == 7
    assert metrics["ttft_p50_s"] == pytest.approx(0.5)  # TTFTs 0.5, 1.0, 0.5, 0.5
    assert metrics["goodput_requests_per_s"] == pytest.approx(3 / 5.0)  # request 1's TTFT 1.0 misses 0.6


def test_poisson_fill_level_is_the_mean_in_flight_of_the_arrival_phase():
    # sends at 0, 1, 2, 3, each lasting 2.5 s. In flight over the arrival phase [0, 3]:
    # 1 on [0, 1), 2 on [1, 2), 3 on [2, 2.5), 2 on [2.5, 3): mean (1 + 2 + 1.5 + 1) / 3 = 1.833 -> fill 2
    records = [_record(i, float(i), i + 2.5, [i + 0.5, i + 2.5]) for i in range(4)]
    steps = steady.in_flight_steps(records)
    assert steady.mean_in_flight(steps, 0.0, 3.0) == pytest.approx(5.5 / 3)
    assert steady.mean_in_flight(steps, 1.0, 2.0) == pytest.approx(2.0)
    window = steady.steady_window(records, concurrency=None)
    assert window.fill_level == 2 and window.start == 1.0 and window.end == 3.0
    assert window.share == pytest.approx(2.0 / 5.5)


def test_a_run_that_drains_before_it_fills_is_refused():
    # concurrency 3 asked, but each request ends before the next is sent: never 3 in flight before the last send
    records = [_record(i, float(i), i + 0.5, [i + 0.25, i + 0.5]) for i in range(3)]
    with pytest.raises(steady.NoSteadyState, match="drained before it filled"):
        steady.steady_window(records, concurrency=3)
    with pytest.raises(steady.NoSteadyState, match="no request was sent"):
        steady.steady_window([Record(0, 8, 2)], concurrency=1)


def test_window_energy_prorates_slices_and_refuses_a_gap():
    slices = [(0.0, 1.0, 10.0), (1.0, 2.0, 20.0), (2.0, 3.0, 30.0)]
    assert steady.window_energy(slices, 0.5, 2.5) == pytest.approx(5.0 + 20.0 + 15.0)
    assert steady.window_energy(slices, 0.0, 3.0) == pytest.approx(60.0)
    assert steady.window_energy([slices[0], slices[2]], 0.5, 2.5) is None  # the middle second is not covered
    assert steady.window_energy([], 0.0, 1.0) is None


def test_requests_are_seeded_and_poisson_gaps_have_the_configured_rate():
    prompt = {"distribution": "uniform", "min": 4, "max": 9}
    output = {"distribution": "fixed", "value": 5}
    first = make_requests(2000, prompt, output, vocab_size=512, seed=7, rate=4.0)
    again = make_requests(2000, prompt, output, vocab_size=512, seed=7, rate=4.0)
    assert [r.prompt for r in first] == [r.prompt for r in again]
    assert {len(r.prompt) for r in first} == set(range(4, 10)) and {r.output_tokens for r in first} == {5}
    gaps = np.diff([0.0] + [r.arrival_s for r in first])
    # mean of 2000 exponential gaps at 4/s: 0.25 s with standard error 0.25/sqrt(2000) = 0.0056
    assert abs(gaps.mean() - 0.25) < 4 * 0.25 / np.sqrt(2000)
    assert all(3 <= t < 512 for r in first for t in r.prompt)
    assert make_requests(3, prompt, output, 512, seed=8, rate=4.0)[0].prompt != first[0].prompt


def test_server_command_is_loopback_and_carries_the_engine_settings():
    command = server_command(
        {
            "model": "/m",
            "dtype": "float32",
            "enforce_eager": True,
            "enable_prefix_caching": False,
            "kv_cache_memory_bytes": 1 << 30,
        },
        5555,
        python="py",
    )
    assert command[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--host") + 1] == "127.0.0.1" and command[command.index("--port") + 1] == "5555"
    assert "--enforce-eager" in command and "--no-enable-prefix-caching" in command
    assert command[command.index("--kv-cache-memory-bytes") + 1] == str(1 << 30)


def _serving_config(**serving):
    return {
        "models": {"m": {"architecture": "config/models/tiny-llama.json", "backends": {"vllm": ["none-float32"]}}},
        "workload": {"batch_sizes": [1], "prompt_tokens": [8], "new_tokens": 4},
        "measurement": {"trials": 1},
        "device": "cpu",
        "scenarios": ["serving"],
        "serving": serving,
    }


def test_config_checks_the_serving_section_before_any_job():
    assert load_config(_serving_config(rates=[1.0, 2.0]))["serving"]["requests"] == 32
    with pytest.raises(ConfigError, match=r"serving.rates: required for serving.arrival 'poisson'"):
        load_config(_serving_config())
    with pytest.raises(ConfigError, match=r"serving.concurrency: not used with serving.arrival 'poisson'"):
        load_config(_serving_config(rates=[1.0], concurrency=[2]))
    with pytest.raises(ConfigError, match=r"serving.prompt_tokens: min 9 is above max 4"):
        load_config(_serving_config(rates=[1.0], prompt_tokens={"distribution": "uniform", "min": 9, "max": 4}))
    with pytest.raises(ConfigError, match=r"exceeds models.m's 512 positions"):
        load_config(_serving_config(rates=[1.0], prompt_tokens={"distribution": "fixed", "value": 500}))
    no_vllm = _serving_config(rates=[1.0])
    no_vllm["models"]["m"]["backends"] = {"pytorch": ["none-float32"]}
    with pytest.raises(ConfigError, match="scenarios: serving needs a model with a serving backend"):
        load_config(no_vllm)


def _vllm_processes_under(path) -> list[int]:
    """Processes whose command line names `path` (a test's own workflow copy or model)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "vllm" in cmdline and str(path) in cmdline:
                found.append(int(entry))
    return found


def _group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (zombies excluded)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def test_serving_run_at_two_rates_against_the_real_server(tmp_path):
    import pandas as pd

    from llenergymeasure.aggregate import conform

    workflow = copy_workflow(tmp_path / "repo")
    study = workflow / "config/studies/serving-cpu.yaml"
    start = time.perf_counter()
    result = run_snakemake(workflow, "--cores", "2", "--configfile", str(study), timeout=600)
    elapsed = time.perf_counter() - start
    log = workflow / "logs/serve/tiny-llama/none-float32/vllm.log"
    assert result.returncode == 0, result.stderr[-3000:] + (log.read_text()[-4000:] if log.exists() else "")
    print(f"serving run (model, variant, server start, 2 rates, figures): {elapsed:.1f} s")
    rows = pd.read_parquet(workflow / "results/serving/tiny-llama/none-float32/vllm.parquet")
    conform(rows, SERVING_SCHEMA)
    assert sorted(rows.request_rate) == [2.0, 8.0]
    assert (rows.status == "ok").all(), rows.error.tolist()
    assert (rows.requests_completed == 24).all()
    assert ((rows.steady_share > 0) & (rows.steady_share < 1)).all()
    assert (rows.ttft_p50_s <= rows.ttft_p90_s).all() and (rows.itl_p50_s <= rows.itl_p99_s).all()
    assert (rows.steady_output_tokens > 0).all()
    # no sensor here: energy is empty and says why, never 0 J
    assert rows.energy_j_per_output_token.isna().all() and (rows.energy_source == "unavailable").all()
    assert rows.energy_unavailable_reason.str.contains("no energy sensor").all()
    requests = pd.read_parquet(workflow / "results/serving/tiny-llama/none-float32/vllm.requests.parquet")
    assert len(requests) == 2 * 24 and (requests.output_tokens == requests.requested_tokens).all()
    assert requests.requested_tokens.between(16, 32).all() and requests.prompt_tokens.between(16, 64).all()
    for name in ("serving_latency", "serving_energy"):
        for ext in ("pdf", "png"):
            assert (workflow / f"results/figures/{name}.{ext}").stat().st_size > 1000
    server_log = (workflow / "logs/serve/tiny-llama/none-float32/vllm.server.log").read_text()
    assert "127.0.0.1" in server_log
    server_pid = int(re.search(r"server pid (\d+) on 127\.0\.0\.1", log.read_text()).group(1))
    assert _group_members(server_pid) == []  # the server and the engine processes it spawned are gone


FAILING_JOB = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {scripts!r})
    from llenergymeasure.serving.server import ServerError, group_alive, running_server

    def main():
        engine = {{"model": {model!r}, "dtype": "float32", "load_format": "dummy", "max_model_len": 64,
                   "enforce_eager": True, "kv_cache_memory_bytes": 1 << 30}}
        mode = sys.argv[1]
        if mode == "timeout":  # forced failure: the server cannot be ready in 4 s
            try:
                with running_server(engine, {{}}, "server.log", start_timeout_s=4.0):
                    pass
            except ServerError as exc:
                print("ERROR " + str(exc), flush=True)
            return
        with running_server(engine, {{}}, "server.log", start_timeout_s=600.0) as server:  # mode "kill": wait to be killed
            print("READY", flush=True)
            time.sleep(600)

    if __name__ == "__main__":
        main()
""")


def test_no_server_is_left_after_a_forced_failure_or_a_killed_job(tmp_path):
    from llenergymeasure.models import materialise_random

    model = tmp_path / "tiny-llama"
    materialise_random(
        REPO_ROOT / "config/models/tiny-llama.json", model, seed=0, tokenizer_text=REPO_ROOT / "data/text/tokenizer.txt"
    )
    script = tmp_path / "job.py"
    script.write_text(FAILING_JOB.format(scripts=str(SCRIPTS), model=str(model)))

    failed = subprocess.run(
        [str(vllm_python()), str(script), "timeout"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert "ERROR the vLLM server was not ready after 4 s" in failed.stdout, failed.stdout + failed.stderr[-2000:]
    assert _vllm_processes_under(model) == []

    job = subprocess.Popen([str(vllm_python()), str(script), "kill"], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline().strip() == "READY", (tmp_path / "server.log").read_text()[-3000:]
        servers = _vllm_processes_under(model)
        assert len(servers) == 1, "one server should be running while the job runs"
        group = servers[0]  # the server leads its own process group, its engine processes in it
        assert len(_group_members(group)) >= 2, "the server's engine process should be in its group"
        job.send_signal(signal.SIGKILL)  # no finally runs: only the parent-death signal can stop the server
        job.wait(timeout=30)
        deadline = time.monotonic() + 60
        while _group_members(group) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _group_members(group) == [], "the server outlived its killed job"
        assert not group_alive(group) or not _group_members(group)
    finally:
        if job.poll() is None:
            job.kill()
        for pid in _vllm_processes_under(model):  # never leave a server to other tests
            os.killpg(pid, signal.SIGKILL)


def test_energy_slices_are_back_to_back_and_cover_a_window():
    """The slicer on a real meter (the CPU estimate from a stated power, the one meter every machine
    can have; serving rows never use it, but the slicing is the same for Zeus NVML/RAPL meters)."""
    from llenergymeasure.energy import CpuTdpEstimateMeter, stated_cpu_power
    from llenergymeasure.serving.job import EnergySlices

    stated = stated_cpu_power({"LLEM_CPU_TDP_W": "100"})
    with EnergySlices(CpuTdpEstimateMeter(stated), slice_s=0.05) as sliced:
        start = time.perf_counter()
        # keep this process busy, so every slice accrues CPU time, until four slices are read
        # (a meter read can take longer than slice_s on a loaded machine; bounded at 10 s)
        while len(sliced.slices) < 4 and time.perf_counter() - start < 10:
            for _ in range(200):
                sum(range(1000))
            time.sleep(0)  # hand the GIL to the slicer thread between bursts of work
        end = time.perf_counter()
    slices = sliced.slices
    assert len(slices) >= 3  # slices stretch when the busy loop holds the GIL
    assert all(later[0] == earlier[1] for earlier, later in itertools.pairwise(slices))  # no gaps
    inner = (slices[1][0], slices[-2][1])
    joules = steady.window_energy(slices, *inner)
    assert joules is not None and joules > 0
    assert joules <= sum(j for _, _, j in slices) and end > start
