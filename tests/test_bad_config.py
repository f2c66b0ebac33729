"""Malformed study configs stop `snakemake -n` before any job, with one line naming the field.

Each file in tests/bad_configs/ is a complete config with exactly one defect. Its header
says why it is wrong and, in `# expect:` lines, what the error line must contain (the
field and what is allowed). The suite runs the real workflow entry point on each of them
(`snakemake -n --configfile BAD` in a fresh copy of the repository) and requires a non-zero
exit, no DAG (no job listed), no traceback, and every expected text on one single line.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, REPO_ROOT, copy_workflow, run_snakemake

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
    "bad",
    [p for p in BAD_CONFIGS if p.stem not in SNAKEMAKE_PARSED],
    ids=[p.stem for p in BAD_CONFIGS if p.stem not in SNAKEMAKE_PARSED],
)
def test_llenergymeasure_validate_gives_the_same_one_line(bad):
    """`llenergymeasure validate BAD` exits 2 with exactly one line: 'config error: ...'."""
    command = (
        [str(BIN / "llenergymeasure")]
        if (BIN / "llenergymeasure").exists()
        else [sys.executable, "-m", "llenergymeasure.cli"]
    )
    result = subprocess.run([*command, "validate", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: "), result.stdout + result.stderr
    for text in expectations(bad):
        assert text in lines[0]


# ------------------------------------------------------------------ safety: hostile input

WORKFLOW_FILES = [REPO_ROOT / "Snakefile", *sorted((REPO_ROOT / "workflow" / "rules").glob("*.smk"))]
LIBRARY_FILES = sorted((REPO_ROOT / "workflow" / "scripts").rglob("*.py"))


def test_no_rule_runs_a_shell_command():
    """Rules call Python (script:), so no config string is ever interpolated into a shell line."""
    for path in WORKFLOW_FILES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not re.match(r"^\s+(shell|run):", line), f"{path.name}:{number}: {line.strip()}"


def test_library_never_invokes_a_shell():
    """Subprocesses (llama.cpp's converter, nvidia-smi) get argument lists, never a shell."""
    import ast

    for path in LIBRARY_FILES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                assert name not in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"), (
                    f"{path.relative_to(REPO_ROOT)}:{node.lineno} calls {name}"
                )
                for keyword in node.keywords:
                    if keyword.arg == "shell":
                        assert isinstance(keyword.value, ast.Constant) and keyword.value.value is False, (
                            f"{path.relative_to(REPO_ROOT)}:{node.lineno}: shell=True"
                        )


@pytest.mark.parametrize(
    "target",
    [
        "results/models/not-in-the-config",  # model outside the config
        "results/models/../../../../tmp/escape",  # path escape
        "results/variants/tiny-llama/none-float32;touch pwned/variant.json",  # shell metacharacters
        "results/measure/tiny-llama/none-float32/bash -c id/replicate-1.parquet",  # backend that is not registered
        "results/measure/TINY-LLAMA/none-float32/pytorch/replicate-1.parquet",  # model name not in the config
        "results/flops/not-in-the-config/measured.arrow",  # FLOPs of a model outside the config
        "results/measure/tiny-llama/none-float32/pytorch/replicate-0.parquet",  # replicates count from 1
        "results/measure/tiny-llama/none-float32/pytorch/replicate-1;id.parquet",  # replicate that is not a number
    ],
)
def test_wildcards_only_match_configured_values(workflow, target):
    """Every wildcard is constrained: a requested path with any other value has no rule."""
    result = run_snakemake(workflow, "-n", "--cores", "1", target, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "MissingRuleException" in output or "No rule to produce" in output, output[-2000:]
    assert not list(workflow.rglob("pwned")) and not (workflow.parent / "tmp").exists()


def _tiny_config() -> dict:
    """A one-layer GPT-2 config.json (a few thousand parameters)."""
    config = json.loads((REPO_ROOT / "config" / "models" / "tiny-gpt2.json").read_text())
    config.update(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32)
    return config


def test_pickle_only_checkpoint_is_refused_without_unpickling(tmp_path):
    """A model directory holding only a pickle checkpoint is refused, and the pickle never runs."""
    torch = pytest.importorskip("torch")
    from llenergymeasure.backends.loading import load_model

    model_dir = tmp_path / "pickled"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(_tiny_config()))
    marker = tmp_path / "unpickled-code-ran"

    class Payload:  # unpickling this runs Path.touch(marker): proof of code execution
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"transformer.wte.weight": Payload()}, model_dir / "pytorch_model.bin")
    variant = {"model": "pickled", "quant": "none-float32", "model_dir": str(model_dir), "settings": {}}
    with pytest.raises(Exception) as error:
        load_model(variant, "cpu")
    assert not marker.exists(), "the pickle checkpoint was unpickled"
    assert "safetensors" in str(error.value).lower() or "model.safetensors" in str(error.value), str(error.value)


def test_remote_code_is_not_run_unless_opted_in(tmp_path):
    """A model whose config asks for its own Python code is refused while trust_remote_code is off."""
    pytest.importorskip("torch")
    from llenergymeasure.backends.loading import load_model

    model_dir = tmp_path / "remote-code"
    model_dir.mkdir()
    marker = tmp_path / "remote-code-ran"
    config = _tiny_config()
    config.update(
        model_type="evil-custom",
        auto_map={
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModelForCausalLM": "modeling_evil.EvilModel",
        },
    )
    (model_dir / "config.json").write_text(json.dumps(config))
    code = f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
    (model_dir / "configuration_evil.py").write_text(code + "from transformers import GPT2Config as EvilConfig\n")
    (model_dir / "modeling_evil.py").write_text(code + "from transformers import GPT2LMHeadModel as EvilModel\n")
    variant = {"model": "remote-code", "quant": "none-float32", "model_dir": str(model_dir), "settings": {}}
    with pytest.raises(Exception):  # noqa: B017 (any refusal will do: what matters is that the code never ran)
        load_model(variant, "cpu")
    assert not marker.exists(), "the model's own Python code ran without trust_remote_code"
