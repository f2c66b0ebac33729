"""Config loading: the default validates, defaults fill in, bad fields get one-line messages."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO_ROOT

from llenergymeasure.config import ConfigError, expand_jobs, load_config

DEFAULT = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())


def _load(mutate) -> dict:
    config = copy.deepcopy(DEFAULT)
    mutate(config)
    return load_config(config, has_cuda=False)


def test_default_config_is_valid_and_expands_the_documented_sweep():
    config = load_config(REPO_ROOT / "config" / "config.yaml", has_cuda=False)
    jobs = list(expand_jobs(config))
    assert {j.model for j in jobs} == {"tiny-llama", "tiny-gpt2"}
    assert {j.backend for j in jobs} == {"pytorch", "llamacpp", "vllm"}
    assert [j.quant for j in jobs if j.backend == "vllm"] == ["none-float32"]  # the cheap vllm job only
    assert {"none-float32", "none-bfloat16", "bnb-int8", "bnb-nf4"} <= {j.quant for j in jobs}
    assert config["workload"] == {
        "batch_sizes": [1, 4],
        "prompt_tokens": [64],
        "new_tokens": 32,
        "max_batch_tokens": None,
    }
    assert config["measurement"]["trials"] == 5  # [min, max] of 5 covers the median 93.75 %
    assert config["analysis"]["flops_tolerance"] == 0.005 and config["analysis"]["use_estimated_energy"] is False
    # that every variant is built once even when several backends measure it is checked on the
    # planned DAG itself: test_pipeline.test_dry_run_builds_each_variant_once


def test_missing_optional_sections_get_defaults():
    minimal = {
        "models": {"m": {"architecture": "config/models/tiny-llama.json", "backends": {"pytorch": ["none-float32"]}}},
        "workload": {"batch_sizes": [1], "prompt_tokens": [8], "new_tokens": 4},
        "measurement": {"trials": 2},
    }
    config = load_config(minimal, has_cuda=False)
    assert config["measurement"]["warmup_runs"] == 3 and config["measurement"]["replicates"] == 3
    assert config["measurement"]["min_window_s"]["cuda"] == 5.0
    assert config["evaluation"]["text"] == "data/text/evaluation.txt"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["workload"].update(batch_sizes=[0]), "workload.batch_sizes[0]"),
        (lambda c: c["workload"].update(new_tokens="many"), "workload.new_tokens: expected integer"),
        (lambda c: c.update(colour="blue"), "unknown key(s) 'colour'"),
        (
            lambda c: c["models"]["tiny-llama"]["backends"].update(tensorrt=["none-float32"]),
            "unknown backend 'tensorrt'",
        ),
        (
            lambda c: c["models"]["tiny-llama"]["backends"].update(llamacpp=["bnb-int8"]),
            "llamacpp cannot run 'bnb-int8'; allowed for llamacpp: gguf-f16",
        ),
        (lambda c: c["models"]["tiny-llama"]["backends"]["pytorch"].append("gptq-autogptq"), "needs CUDA"),
        (lambda c: c["models"]["tiny-llama"].update(architecture="../../etc/passwd"), "points outside the repository"),
        (lambda c: c["models"]["tiny-llama"].update(architecture="config/models/missing.json"), "does not exist"),
        (lambda c: c["workload"].update(prompt_tokens=[600]), "exceeds models.tiny-llama's 512 positions"),
    ],
)
def test_bad_fields_are_named_in_one_line(mutate, expected):
    with pytest.raises(ConfigError) as error:
        _load(mutate)
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


def test_every_stage_setting_error_is_one_config_error_type():
    """The CLI and the Snakefile catch ConfigError: each stage's settings error is one of them,
    and still the built-in type its callers caught before (ValueError; RuntimeError for energy)."""
    from llenergymeasure.energy import EnergySourceError
    from llenergymeasure.flops import FlopsConfigError
    from llenergymeasure.hardware import HardwareTableError
    from llenergymeasure.protocol import MeasureConfigError
    from llenergymeasure.variants import QuantiseError

    for kind in (MeasureConfigError, QuantiseError, EnergySourceError, HardwareTableError, FlopsConfigError):
        assert issubclass(kind, ConfigError) and issubclass(kind, ValueError), kind
    assert issubclass(EnergySourceError, RuntimeError)
    from llenergymeasure import errors

    assert ConfigError is errors.ConfigError  # one class, re-exported by config
