"""The code keeps the project's habits: ruff's lint and format are clean, library files stay short."""

from __future__ import annotations

import subprocess

from conftest import BIN, REPO_ROOT

RUFF = str(BIN / "ruff")
LIBRARY = REPO_ROOT / "workflow" / "scripts" / "llenergymeasure"
MAX_LIBRARY_LINES = 400


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RUFF, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_ruff_check_is_clean():
    result = _ruff("check", "--no-cache", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    result = _ruff("format", "--no-cache", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_library_file_runs_over_400_lines():
    long = {
        str(path.relative_to(LIBRARY)): n
        for path in sorted(LIBRARY.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_LIBRARY_LINES
    }
    assert not long, f"library files over {MAX_LIBRARY_LINES} lines (split them by responsibility): {long}"
