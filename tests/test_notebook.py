"""The study notebook executes from top to bottom on a study table."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import study_tables
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "study.ipynb"
KERNEL = "llenergymeasure-test"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec for this interpreter in a temporary Jupyter path, and the library on the
    kernel's import path (the kernel inherits the test process's environment)."""
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("jupyter")
    install(kernel_name=KERNEL, prefix=str(prefix))
    patch = pytest.MonkeyPatch()
    patch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    patch.setenv("PYTHONPATH", str(REPO / "workflow" / "scripts"))
    yield
    patch.undo()


def _execute(study_dir: Path | None) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    patch = pytest.MonkeyPatch()
    if study_dir is not None:
        patch.setenv("LLEM_STUDY_DATA", str(study_dir))
    try:
        NotebookClient(
            notebook,
            kernel_name=KERNEL,
            timeout=120,
            resources={"metadata": {"path": str(NOTEBOOK.parent)}},
        ).execute()
    finally:
        patch.undo()
    return notebook


def _text(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def _images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def test_notebook_walks_through_a_two_platform_study(kernel_env, tmp_path):
    trials, summary = study_tables.tables(("cpu-test", "gpu-test"))
    trials.to_parquet(tmp_path / "measurements.parquet")
    summary.to_parquet(tmp_path / "summary.parquet")
    notebook = _execute(tmp_path)
    text = _text(notebook)
    assert f"{len(trials)} trials, {len(summary)} configurations" in text
    assert "cpu-test: energy an ESTIMATE" in text and "gpu-test: energy measured by a sensor" in text
    assert "ranks differ from the FLOPs rank by two or more positions" in text
    shows = sum(cell.source.count('show("') for cell in notebook.cells if cell.cell_type == "code")
    assert shows >= 9 and _images(notebook) == shows  # every figure drawn


@pytest.mark.skipif(
    not (REPO / "paper" / "data" / "measurements.parquet").exists(),
    reason="paper/data/ has not been shipped yet (paper/refresh.py makes it)",
)
def test_notebook_runs_on_the_shipped_study(kernel_env):
    notebook = _execute(None)
    assert "paper/data" in _text(notebook)
