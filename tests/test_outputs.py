"""The output registry (llenergymeasure/outputs.py): light enough that planning the DAG never
imports pandas, scipy or matplotlib for our sake, and in agreement with the modules that
compute and draw what it names."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import BIN, REPO_ROOT, SCRIPTS, copy_workflow

from llenergymeasure import outputs

HEAVY = ("pandas", "numpy", "scipy", "matplotlib")


def _rule_file_imports() -> list[str]:
    """Every llenergymeasure module the Snakefile and the rule files import."""
    found = set()
    for path in [REPO_ROOT / "Snakefile", *sorted((REPO_ROOT / "workflow" / "rules").glob("*.smk"))]:
        pattern = r"^\s*(?:from\s+(llenergymeasure[\w.]*)\s+import|import\s+(llenergymeasure[\w.]*))"
        for match in re.finditer(pattern, path.read_text(), flags=re.MULTILINE):
            found.add(match.group(1) or match.group(2))
    return sorted(found)


def _heavy_after_importing(modules: list[str]) -> list[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    code += f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return [m for m in result.stdout.strip().split(",") if m]


def test_the_rule_files_import_only_modules_without_pandas_scipy_or_matplotlib():
    modules = _rule_file_imports()
    assert "llenergymeasure.outputs" in modules  # the registry is what they import
    assert _heavy_after_importing(modules) == []
    # the check sees a heavy import where there is one
    assert set(_heavy_after_importing(["llenergymeasure.figures"])) >= {"pandas", "matplotlib"}


def _importers(importtime_log: str, module: str) -> list[str]:
    """The chain of modules that imported `module` first (innermost first), from -X importtime."""
    rows = []
    for line in importtime_log.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+\d+ \|( *)(\S+)", line)
        if match:
            rows.append((len(match.group(1)), match.group(2)))
    for index, (indent, name) in enumerate(rows):
        if name == module:
            chain, level = [], indent
            for parent_indent, parent in rows[index + 1 :]:  # importtime prints children first
                if parent_indent < level:
                    chain.append(parent)
                    level = parent_indent
            return chain
    return []


def test_planning_the_dag_imports_no_heavy_module_through_ours(tmp_path):
    """`snakemake -n` in a fresh copy: whatever imports pandas, scipy or matplotlib (Snakemake's
    own SLURM plugin imports pandas), it is never an llenergymeasure module."""
    workflow = copy_workflow(tmp_path / "repo")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--cores", "1", "paper_figures"],
        cwd=workflow,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    # the log is read: the registry was imported, at the top level (the Snakefile's own import)
    assert re.search(r"\| +llenergymeasure\.outputs$", result.stderr, flags=re.MULTILINE)
    for module in HEAVY:
        ours = [m for m in _importers(result.stderr, module) if m.startswith("llenergymeasure")]
        assert not ours, f"{module} imported through {ours}"


def test_the_importer_chain_reader_finds_a_parent():
    log = "\n".join(
        [
            "import time:       1 |       1 |     matplotlib",
            "import time:       1 |       2 |   llenergymeasure.figures.style",
            "import time:       1 |       3 | llenergymeasure.figures",
        ]
    )
    assert _importers(log, "matplotlib") == ["llenergymeasure.figures.style", "llenergymeasure.figures"]


def test_the_registry_agrees_with_the_analyses_figures_and_tables():
    from llenergymeasure import analysis, figures, tables
    from llenergymeasure.serving import figures as serving_figures

    assert tuple(analysis.COLUMNS) == analysis.ANALYSES == outputs.ANALYSES
    assert list(figures.FIGURES) == list(outputs.FIGURES)
    assert list(tables.TABLES) == list(outputs.TABLES)
    assert tuple(serving_figures.FIGURES) == outputs.SERVING_FIGURES
    for name, spec in outputs.FIGURES.items():
        assert set(spec.reads) <= set(outputs.ANALYSES), name
        assert outputs.caption(name) == figures.FIGURES[name][1]
    for reads in outputs.TABLES.values():
        assert set(reads) <= set(outputs.TABLE_READS) <= set(outputs.ANALYSES)
    families = {spec.family for spec in outputs.FIGURES.values()}
    assert len(families) >= 4  # one report category per family, not one for all


def test_the_root_and_figure_wildcards_match_exactly_the_registered_names():
    root, figure = outputs.root_pattern(), outputs.FIGURE_PATTERN
    for name in ("results", "results/paper_figures"):
        assert re.fullmatch(root, name)
    for name in ("results/other", "paper", "results/paper_figures/x"):
        assert not re.fullmatch(root, name), name
    assert all(re.fullmatch(figure, name) for name in outputs.FIGURES)
    assert not any(re.fullmatch(figure, name) for name in outputs.SERVING_FIGURES)  # rule serving_figures'
    paths = outputs.figure_paths("results")
    assert paths["pareto_png"] == "results/figures/pareto.png"
    assert paths["table_summary"] == "results/tables/summary.tex"
    assert outputs.all_analysis_outputs(outputs.PAPER_ROOT)[0] == "results/paper_figures/analysis/flops_ranks.parquet"


def test_a_shipped_study_is_analysed_at_its_own_new_tokens(tmp_path):
    manifest = tmp_path / "manifest.json"
    assert outputs.shipped_new_tokens(manifest, 32) == 32  # nothing shipped: the config's
    manifest.write_text('{"analysis": {}}')
    assert outputs.shipped_new_tokens(manifest, 32) == 32  # a manifest from before workloads were shipped
    manifest.write_text('{"workload": {"batch_sizes": [1], "prompt_tokens": [64], "new_tokens": 8}}')
    assert outputs.shipped_new_tokens(manifest, 32) == 8
    assert outputs.study_new_tokens("results", 32) == 32  # this run's own results: the config's
