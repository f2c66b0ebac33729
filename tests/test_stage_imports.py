"""The import graph keeps the stages apart: measure and the backends load variants without the
quantise build stage, and config validation needs neither (no config <-> quantise circle);
the pipeline's stages (measure, flops, aggregate, analysis) import only earlier ones, and the
column contract (schema.py) none.

Read from the source with `ast` (every import, at module level or inside a function), so a
lazy import counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "workflow" / "scripts" / "llenergymeasure"
BUILD_STAGE = "llenergymeasure.quantise"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every llenergymeasure module `path` imports (absolute names)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from . import quantise`
    return {m for m in found if m.split(".")[0] == "llenergymeasure"}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules} for name, path in modules.items()}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        # importing a.b.c runs a/__init__ and a/b/__init__ too
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        todo.extend(graph.get(module, set()) | {p for p in parents if p in graph})
    return seen


def _in_build_stage(module: str) -> bool:
    return module == BUILD_STAGE or module.startswith(BUILD_STAGE + ".")


def test_the_graph_parser_sees_real_edges():
    graph = _graph()
    assert "llenergymeasure.backends.loading" in graph["llenergymeasure.backends.pytorch"]
    assert "llenergymeasure.quantise.build" in graph["llenergymeasure.quantise"]
    assert _in_build_stage("llenergymeasure.quantise.inputs") and not _in_build_stage("llenergymeasure.quantisers")
    # the build stage does load (to score perplexity): the arrow build -> load exists
    assert "llenergymeasure.backends.loading" in _reachable(graph, "llenergymeasure.quantise")


def test_measure_and_the_backends_never_import_the_quantise_build_stage():
    graph = _graph()
    starts = [
        "llenergymeasure.measure",
        "llenergymeasure.manifest",
        *sorted(name for name in graph if name.startswith("llenergymeasure.backends")),
    ]
    assert len(starts) >= 8
    for start in starts:
        reached = sorted(m for m in _reachable(graph, start) if _in_build_stage(m))
        assert not reached, f"{start} imports the build stage via {reached}"


def test_config_validation_does_not_import_the_build_stage():
    graph = _graph()
    for start in ("llenergymeasure.config", "llenergymeasure.variants"):
        reached = _reachable(graph, start)
        assert not any(_in_build_stage(m) for m in reached), start
        assert "llenergymeasure.config" not in _reachable(graph, "llenergymeasure.variants")


def test_repo_root_is_defined_once():
    definitions = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            if any(isinstance(t, ast.Name) and t.id == "REPO_ROOT" for t in targets):
                definitions.append(_module_name(path))
    assert definitions == ["llenergymeasure.paths"]


# The pipeline's stages in order, by the modules that implement each (a package counts with
# everything under it). Data flows forward: no stage may import a later one.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    (
        "measure",
        (
            "llenergymeasure.measure",
            "llenergymeasure.trial",
            "llenergymeasure.measured_columns",
            "llenergymeasure.serving.job",
            "llenergymeasure.serving.load",
            "llenergymeasure.serving.server",
            "llenergymeasure.serving.steady",
        ),
    ),
    ("flops", ("llenergymeasure.flops", "llenergymeasure.adapter_flops")),
    ("aggregate", ("llenergymeasure.aggregate",)),
    (
        "analysis",
        (
            "llenergymeasure.analysis",
            "llenergymeasure.figures",
            "llenergymeasure.tables",
            "llenergymeasure.serving.figures",
        ),
    ),
]
CONTRACT = "llenergymeasure.schema"


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_every_stage_is_found_in_the_source():
    graph = _graph()
    for stage, prefixes in STAGES:
        assert any(_in(name, prefixes) for name in graph), f"no module of stage {stage} found: update STAGES"
    assert CONTRACT in graph


def _backward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """'module (stage) -> later-stage modules' for every module that reaches a later stage."""
    found = []
    for index, (stage, prefixes) in enumerate(STAGES):
        later = tuple(p for _, ps in STAGES[index + 1 :] for p in ps)
        for start in sorted(name for name in graph if _in(name, prefixes)):
            reached = sorted(m for m in _reachable(graph, start) if _in(m, later))
            if reached:
                found.append(f"{start} ({stage}) -> {reached}")
    return found


def test_no_stage_imports_a_later_stage():
    assert _backward_arrows(_graph()) == []


def test_the_column_contract_imports_no_stage():
    graph = _graph()
    every_stage = tuple(p for _, ps in STAGES for p in ps)
    reached = sorted(m for m in _reachable(graph, CONTRACT) if _in(m, every_stage))
    assert not reached, f"{CONTRACT} imports {reached}"
    for stage, prefixes in STAGES[:3]:  # measure, flops and aggregate take their columns from it
        assert any(CONTRACT in _reachable(graph, name) for name in graph if _in(name, prefixes)), stage


def test_the_direction_check_sees_a_backward_arrow():
    """The check can fail: measure importing aggregate, as it once did (for a cast), is found."""
    graph = _graph()
    graph["llenergymeasure.measured_columns"] = graph["llenergymeasure.measured_columns"] | {
        "llenergymeasure.aggregate"
    }
    arrows = _backward_arrows(graph)
    assert any(a.startswith("llenergymeasure.measure (measure)") and "llenergymeasure.aggregate" in a for a in arrows)
