"""Shared test helpers: the repository root, the venv's tools, and copies of the workflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "workflow" / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
# vLLM runs in its own venv (install.sh builds .venv-vllm); tests that need it fail loudly without it.
VLLM_PYTHON = Path(os.environ.get("LLEM_VLLM_PYTHON") or REPO_ROOT / ".venv-vllm" / "bin" / "python")


def vllm_python() -> Path:
    """The vLLM venv's interpreter; a clear failure (never a skip) where it is missing."""
    if not VLLM_PYTHON.is_file():
        pytest.fail(f"the vLLM venv is missing ({VLLM_PYTHON}): run install.sh, or set LLEM_VLLM_PYTHON")
    return VLLM_PYTHON


# What a fresh clone holds: never results/, logs/, .snakemake/ or the venv.
_COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".venv-vllm",
    "results",
    "logs",
    ".snakemake",
    "__pycache__",
    ".pytest_cache",
    "*.egg-info",
    "report.html",
)


def copy_workflow(dest: Path) -> Path:
    """Copy the workflow as a fresh clone would have it into `dest` and return it."""
    shutil.copytree(REPO_ROOT, dest, ignore=_COPY_IGNORE, dirs_exist_ok=True)
    return dest


def run_snakemake(
    workdir: Path, *args: str, timeout: float = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the venv's snakemake in `workdir`, capturing output."""
    full_env = {**os.environ, **(env or {})}
    full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
    full_env.setdefault("LLEM_VLLM_PYTHON", str(VLLM_PYTHON))  # a copy has no .venv-vllm of its own
    return subprocess.run(
        [SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True, timeout=timeout, env=full_env
    )


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path / "repo")
