"""A config file that is not UTF-8 or not YAML is one line with its path, line and column.

Checked through the real entry points: `llenergymeasure validate FILE` (a subprocess), and
`snakemake -n` in a fresh copy of the workflow whose embedded default (config/config.yaml) is
broken. A `--configfile` is parsed by Snakemake before the Snakefile runs, so its errors are
Snakemake's own (tests/test_bad_config.py: yaml_syntax_error).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, REPO_ROOT, copy_workflow, run_snakemake

from llenergymeasure.config_file import read_config_file
from llenergymeasure.errors import ConfigError

DEFAULT_TEXT = (REPO_ROOT / "config" / "config.yaml").read_bytes()
APPENDED_LINE = DEFAULT_TEXT.count(b"\n") + 1  # the default ends with a newline
JOB_MARKERS = ("Job stats:", "rule model:", "localrule all:", "Building DAG of jobs")

# (file bytes, the expected 1-based line:column, what the line says)
BROKEN = {
    "latin-1": (DEFAULT_TEXT + b"# caf\xe9 au lait\n", f"{APPENDED_LINE}:6", "not valid UTF-8 (byte 0xe9)"),
    "unclosed-flow": (
        b"models: {tiny-llama: [\nworkload: 3\n",
        "3:1",
        "not valid YAML (while parsing a flow sequence opened at line 1, column 22",
    ),
    "tab-indent": (b"models:\n\ttiny-llama: {}\n", "2:1", "not valid YAML"),
}


def _validate(path: Path) -> subprocess.CompletedProcess:
    command = (
        [str(BIN / "llenergymeasure")]
        if (BIN / "llenergymeasure").exists()
        else [sys.executable, "-m", "llenergymeasure.cli"]
    )
    return subprocess.run([*command, "validate", str(path)], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validate_gives_one_line_with_path_line_and_column(tmp_path, case):
    data, where, says = BROKEN[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(data)
    result = _validate(path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout + result.stderr
    assert lines[0].startswith(f"config error: configfile: {path}:{where}: {says}"), lines[0]


def test_the_reported_position_is_where_the_bad_byte_is(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"seed: 0\nstudy: ok\nmodels:\n  na\xefve: {}\n")
    with pytest.raises(ConfigError, match=r":4:5: not valid UTF-8 \(byte 0xef\)"):
        read_config_file(path)


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("broken-default") / "repo")


@pytest.mark.parametrize("case", ["latin-1", "unclosed-flow"])
def test_snakemake_stops_on_a_broken_default_config_with_one_line(workflow, case):
    data, where, says = BROKEN[case]
    default = workflow / "config" / "config.yaml"
    default.write_bytes(data)
    try:
        result = run_snakemake(workflow, "-n", "--cores", "1", timeout=300)
    finally:
        default.write_bytes(DEFAULT_TEXT)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    for marker in JOB_MARKERS:
        assert marker not in output, f"{case}: snakemake got as far as '{marker}'"
    expected = f"config error: configfile: config/config.yaml:{where}: {says}"
    assert any(line.startswith(expected) for line in output.splitlines()), output[-2000:]
