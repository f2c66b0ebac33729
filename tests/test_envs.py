"""Every rule declares a conda env that exists, parses and pins every dependency.

Whether the pins are complete and agree with the venv's lock is tests/test_locks.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

ENVS = sorted((REPO_ROOT / "envs").glob("*.yaml"))
RULE_FILES = sorted((REPO_ROOT / "workflow" / "rules").glob("*.smk"))
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([A-Za-z0-9_.+\-]+)$")
CONDA_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)=([0-9][A-Za-z0-9_.*\-]*)$")
# pip options an env may carry besides pins: PyTorch's CPU index, where torch's +cpu builds live
PIP_OPTIONS = {"--extra-index-url https://download.pytorch.org/whl/cpu"}


def _dependencies(env: Path) -> tuple[list[str], list[str]]:
    data = yaml.safe_load(env.read_text())
    conda, pip = [], []
    for dep in data["dependencies"]:
        if isinstance(dep, dict):
            pip.extend(dep["pip"])
        else:
            conda.append(dep)
    return conda, pip


def test_there_are_envs():
    assert len(ENVS) >= 4


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.stem)
def test_env_parses_and_pins_everything(env):
    data = yaml.safe_load(env.read_text())
    assert data["name"].startswith("llem-")
    assert "defaults" not in data["channels"]
    conda, pip = _dependencies(env)
    assert pip, f"{env.name} has no pip dependencies"
    for dep in conda:
        assert CONDA_PIN.match(dep), f"{env.name}: conda dependency {dep!r} is not pinned (name=version)"
    for dep in pip:
        assert dep in PIP_OPTIONS or PIN.match(dep), f"{env.name}: pip dependency {dep!r} is not pinned (name==version)"


def _declared_envs(text: str) -> list[str]:
    return re.findall(r'^\s+conda:\s*\n\s+"([^"]+)"', text, flags=re.M)


def test_every_rule_declares_an_existing_env():
    for rule_file in RULE_FILES:
        text = rule_file.read_text()
        rules = re.findall(r"^rule (\w+):", text, flags=re.M)
        for rule in rules:
            body = text.split(f"rule {rule}:", 1)[1].split("\nrule ", 1)[0]
            if not re.search(r"^\s+(script|shell|run|notebook|wrapper):", body, flags=re.M):
                continue  # a target rule (e.g. figures, paper_figures): it runs nothing
            assert "conda:" in body, f"rule {rule} in {rule_file.name} declares no conda env"
            assert "log:" in body, f"rule {rule} in {rule_file.name} declares no log"
        for path in _declared_envs(text):
            assert (rule_file.parent / path).resolve().is_file(), f"{rule_file.name}: env {path} does not exist"


def test_env_functions_point_at_existing_envs():
    from llenergymeasure.variants import BACKEND_NAMES, VARIANTS

    for spec in VARIANTS.values():
        assert (REPO_ROOT / "envs" / f"{spec.env}.yaml").is_file(), f"variant {spec.name}: envs/{spec.env}.yaml missing"
    from llenergymeasure.backend_specs import SPECS

    common = (REPO_ROOT / "workflow" / "rules" / "common.smk").read_text()
    backend_envs = {name: spec.env for name, spec in SPECS.items() if spec.env is not None}
    # a backend without an env of its own runs in its own interpreter: rule measure_vllm, vllm_env
    assert (
        {name for name, spec in SPECS.items() if spec.env is None} == {"vllm"} == set(BACKEND_NAMES) - set(backend_envs)
    )
    assert all(spec.in_process == (spec.env is not None) for spec in SPECS.values())
    vllm_envs = re.findall(r'"\.\./\.\./envs/([a-z-]+)\.yaml"', common.split("def vllm_env", 1)[1].split("def ", 1)[0])
    assert sorted(vllm_envs) == ["vllm", "vllm-cpu"]
    for env in [*backend_envs.values(), *vllm_envs]:
        assert (REPO_ROOT / "envs" / f"{env}.yaml").is_file(), f"backend env envs/{env}.yaml missing"
