"""The whole workflow: lint, format, dry runs, a real end-to-end run of the default config,
and the fresh-clone guarantee that `paper_figures` plans no model, quantise or measure job."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO_ROOT, run_snakemake

from llenergymeasure.config import expand_jobs, load_config

EXPENSIVE_RULES = {"model", "quantise", "gguf", "measure", "measure_vllm"}


def _planned_jobs(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run: rule -> count."""
    jobs: dict[str, int] = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("Job stats"):
            in_table = True
            continue
        if in_table:
            match = re.match(r"^(\S+)\s+(\d+)\s*$", line.strip())
            if match and match.group(1) not in ("job", "total"):
                jobs[match.group(1)] = int(match.group(2))
            elif line.strip().startswith("total"):
                break
    return jobs


def test_snakemake_lint_passes():
    result = run_snakemake(REPO_ROOT, "--lint", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakefmt_check_passes():
    result = subprocess.run([str(BIN / "snakefmt"), "--check", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_plans_the_whole_dag(workflow_copy):
    result = run_snakemake(workflow_copy, "-n", "--cores", "2", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = _planned_jobs(result.stdout)
    # 2 models; tiny-llama: 4 pytorch + 2 gguf variants + vllm none-float32; tiny-gpt2: 4 pytorch variants
    assert jobs["model"] == 2
    assert jobs["measure"] == 10
    assert jobs["measure_vllm"] == 1
    assert jobs["flops"] == 2  # one per model, over all its variants, backends and replicates
    assert jobs["aggregate"] == 1
    assert jobs.get("quantise", 0) + jobs.get("gguf", 0) == 10
    # fidelity: each model's float32 parent once, every measured (model, variant) against it
    assert jobs["reference_logits"] == 2
    assert jobs["fidelity"] == 10
    assert jobs["fidelity_table"] == 1


def test_dry_run_builds_each_variant_once(workflow_copy):
    """Every variant is built once even when several backends measure it."""
    study = yaml.safe_load((workflow_copy / "config" / "config.yaml").read_text())
    study["models"] = {
        "tiny-llama": {
            "source": "config",
            "architecture": "config/models/tiny-llama.json",
            "backends": {"pytorch": ["none-float32", "bnb-nf4"], "pytorch-compiled": ["none-float32", "bnb-nf4"]},
        }
    }
    path = workflow_copy / "config" / "shared-variants.yaml"
    path.write_text(yaml.safe_dump(study))
    result = run_snakemake(workflow_copy, "-n", "--cores", "2", "--configfile", str(path), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = _planned_jobs(result.stdout)
    planned = list(expand_jobs(load_config(study, root=workflow_copy, has_cuda=False)))
    variants = [(j.model, j.quant) for j in planned]
    assert jobs["measure"] == len(planned) == 4
    assert jobs.get("quantise", 0) == len(set(variants)) == 2 < len(variants)


def test_paper_figures_in_a_fresh_clone_plans_no_expensive_job(workflow_copy):
    assert (workflow_copy / "paper" / "data" / "measurements.parquet").is_file(), "paper/data must ship results"
    # whatever the file times: make the shipped data look older and newer than everything else
    for stamp in (1_000_000_000, time.time() + 10_000):
        os.utime(workflow_copy / "paper" / "data" / "measurements.parquet", (stamp, stamp))
        result = run_snakemake(workflow_copy, "-n", "--cores", "1", "paper_figures", timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        jobs = _planned_jobs(result.stdout)
        assert jobs.get("paper_figures", 0) >= 1
        assert not EXPENSIVE_RULES & set(jobs), f"paper_figures planned {jobs}"


@pytest.mark.pipeline
def test_default_pipeline_end_to_end(workflow_copy):
    import pandas as pd

    start = time.perf_counter()
    result = run_snakemake(workflow_copy, "--cores", "2", timeout=1500)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    print(f"default pipeline wall time: {elapsed:.1f} s")

    rows = pd.read_parquet(workflow_copy / "results" / "aggregate" / "measurements.parquet")
    required = [
        "model",
        "quant",
        "backend",
        "dtype",
        "batch_size",
        "prompt_tokens",
        "output_tokens",
        "trial",
        "status",
        "latency_s",
        "ttft_s",
        "tpot_s",
        "tokens_per_s",
        "energy_j",
        "energy_j_per_output_token",
        "energy_source",
        "energy_is_estimate",
        "peak_memory_bytes",
        "flops_prefill",
        "flops_decode",
        "flops_total",
        "device_name",
    ]
    assert set(required) <= set(rows.columns)
    # 11 base jobs (one of them vllm) x 2 batch sizes x 1 prompt length x 5 trials, and the
    # LoRA adapter unmerged and merged at batch 1 x 5 trials
    base = rows[rows.adapter == "none"]
    assert len(base) == 11 * 2 * 5
    assert (base.backend == "vllm").sum() == 2 * 5
    assert len(rows) - len(base) == 2 * 5 and set(rows.adapter) == {"none", "lora-r8"}
    ok = rows[rows.status == "ok"]
    assert len(ok) == len(rows), rows.loc[rows.status != "ok", ["model", "quant", "backend", "error"]].to_string()
    assert (ok.output_tokens == 32).all() and (ok.prompt_tokens == 64).all()
    assert (ok.latency_s > ok.ttft_s).all()
    assert (ok.flops_total > ok.flops_prefill).all()
    # no GPU, no readable RAPL and no stated LLEM_CPU_TDP_W here: energy is unavailable and says
    # why, never an invented wattage and never 0 J (where RAPL is readable it is measured)
    if not os.environ.get("LLEM_CPU_TDP_W") and not Path("/sys/class/powercap/intel-rapl").is_dir():
        assert set(ok.energy_source) == {"unavailable"}
        assert (
            ok.energy_j.isna().all() and ok.energy_j_per_output_token.isna().all() and ok.energy_assumption.isna().all()
        )
        assert ok.energy_unavailable_reason.str.contains("no CPU energy sensor").all()
    assert not (ok.energy_j == 0).any()
    assert (ok.replicate == 1).all() and ok.warmup_converged.notna().all()

    summary = pd.read_parquet(workflow_copy / "results" / "aggregate" / "summary.parquet")
    assert len(summary) == 11 * 2 + 2  # the adapter's two states at batch 1
    figures = list((workflow_copy / "results" / "figures").glob("*.pdf"))
    assert len(figures) >= 2
    for pdf in figures:
        assert pdf.with_suffix(".png").is_file()

    # a browsable report with every registered figure
    report = run_snakemake(workflow_copy, "--report", "report.html", timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (workflow_copy / "report.html").read_text(errors="replace")
    for pdf in figures:
        assert pdf.stem in html, f"{pdf.stem} is not in the report"

    # cached and resumable: a second run has nothing to do
    again = run_snakemake(workflow_copy, "-n", "--cores", "2", timeout=300)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
