"""Malformed study configs stop `snakemake -n` before any job, with one line naming the field.

Each file in tests/bad_configs/ is a complete config with exactly one defect. Its header
says why it is wrong and, in `# expect:` lines, what the error line must contain (the
field and what is allowed). The suite runs the real workflow entry point on each of them
(`snakemake -n --configfile BAD` in a fresh copy of the repository) and requires a non-zero
exit, no DAG (no job listed), no traceback, and every expected text on one single line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BIN, copy_workflow, run_snakemake

BAD_CONFIGS = sorted((Path(__file__).parent / "bad_configs").glob("*.yaml"))
EXPECT_RE = re.compile(r"^# expect: (.+)$", re.MULTILINE)

# Text snakemake prints once it has built a DAG or planned/started a job.
JOB_MARKERS = ("Job stats:", "rule model:", "rule measure:", "localrule all:", "Building DAG of jobs")

VALID_BASE = """models:
  tiny-llama:
    architecture: config/models/tiny-llama.json
    backends:
      pytorch: [none-float32]
workload:
  batch_sizes: [1]
  prompt_tokens: [8]
  new_tokens: 4
measurement:
  trials: 1
"""


def expectations(path: Path) -> list[str]:
    expected = EXPECT_RE.findall(path.read_text())
    assert expected, f"{path.name} has no '# expect:' line"
    return expected


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("bad-config") / "repo")


def test_the_suite_covers_at_least_twenty_distinct_defects():
    assert len(BAD_CONFIGS) >= 20
    assert len({tuple(expectations(p)) for p in BAD_CONFIGS}) == len(BAD_CONFIGS)


def test_the_valid_base_of_the_suite_plans_jobs(workflow, tmp_path):
    """Control: the config the bad ones are derived from is accepted, so each failure is its defect."""
    good = tmp_path / "good.yaml"
    good.write_text(VALID_BASE)
    result = run_snakemake(workflow, "-n", "--cores", "1", "--configfile", str(good), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Job stats:" in result.stdout + result.stderr


@pytest.mark.parametrize("bad", BAD_CONFIGS, ids=[p.stem for p in BAD_CONFIGS])
def test_snakemake_dry_run_stops_before_any_job_with_one_line(workflow, bad):
    config = workflow / "bad_configs" / bad.name
    config.parent.mkdir(exist_ok=True)
    shutil.copy(bad, config)
    result = run_snakemake(workflow, "-n", "--cores", "1", "--configfile", str(config), timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{bad.name} was accepted:\n{output[-2000:]}"
    for marker in JOB_MARKERS:
        assert marker not in output, f"{bad.name}: snakemake got as far as '{marker}'"
    assert "Traceback" not in output, output[-3000:]
    expected = expectations(bad)
    lines = [line for line in output.splitlines() if all(text in line for text in expected)]
    assert lines, f"{bad.name}: no single line contains {expected}; output was:\n{output[-2000:]}"
    assert not (workflow / "results").exists(), "a bad config must not create results/"


# Configs snakemake itself rejects before our validation sees them (not YAML, not a mapping).
SNAKEMAKE_PARSED = {"yaml_syntax_error", "top_level_list"}


@pytest.mark.parametrize(
    "bad", [p for p in BAD_CONFIGS if p.stem not in SNAKEMAKE_PARSED],
    ids=[p.stem for p in BAD_CONFIGS if p.stem not in SNAKEMAKE_PARSED],
)
def test_llenergymeasure_validate_gives_the_same_one_line(bad):
    """`llenergymeasure validate BAD` exits 2 with exactly one line: 'config error: ...'."""
    command = [str(BIN / "llenergymeasure")] if (BIN / "llenergymeasure").exists() else [
        sys.executable, "-m", "llenergymeasure.cli"
    ]
    result = subprocess.run([*command, "validate", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: "), result.stdout + result.stderr
    for text in expectations(bad):
        assert text in lines[0]
