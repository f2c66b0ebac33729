"""One spec per backend: the registry, the config's names and the settings check derive from it."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from llenergymeasure import backend_specs, variants
from llenergymeasure.backend_specs import SPECS, parse_settings
from llenergymeasure.backends import BACKENDS
from llenergymeasure.errors import ConfigError


def test_every_name_the_pipeline_knows_is_a_spec():
    assert tuple(BACKENDS) == variants.BACKEND_NAMES == tuple(SPECS)
    assert variants.CPU_QUANTS == {"vllm": SPECS["vllm"].cpu_quants}
    for spec in SPECS.values():
        module, _ = spec.backend_class.split(":")
        assert importlib.util.find_spec(module) is not None, spec.backend_class
        for quant in spec.cpu_quants or ():
            assert spec.name in variants.VARIANTS[quant].backends, (spec.name, quant)


def test_the_settings_dataclass_is_what_the_backend_accepts():
    settings = parse_settings("llamacpp", {"threads": 2, "extra_buffer_types": False, "n_gpu_layers": 0})
    assert dataclasses.asdict(settings) == {
        "threads": 2,
        "max_new_tokens": None,
        "flash_attn": None,
        "verbose": None,
        "extra_buffer_types": False,
        "n_gpu_layers": 0,
        "n_ubatch": None,
    }
    assert backend_specs.setting_types("vllm")["gpu_memory_utilization"] == (int, float)


@pytest.mark.parametrize(
    ("backend", "values", "message"),
    [
        ("pytorch", {"thread": 2}, r"backend_settings\.pytorch: unknown setting 'thread'; pytorch accepts: threads"),
        ("pytorch", {"threads": True}, r"backend_settings\.pytorch\.threads: expected int, got True"),
        ("pytorch", {"threads": 0}, r"backend_settings\.pytorch\.threads: 0 is too small; must be at least 1"),
        ("vllm", {"gpu_memory_utilization": True}, r"gpu_memory_utilization: expected int or float, got True"),
        ("vllm", {"max_num_seqs": "8"}, r"vllm\.max_num_seqs: expected int, got '8'"),
        ("onnx", {}, r"backend_settings\.onnx: unknown backend; allowed: pytorch, pytorch-compiled, llamacpp, vllm"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_field(backend, values, message):
    with pytest.raises(ConfigError, match=message):
        parse_settings(backend, values)


def test_a_none_where_the_setting_allows_it():
    assert parse_settings("pytorch-compiled", {"dynamic": None}).dynamic is None
    with pytest.raises(ConfigError, match=r"fullgraph: expected bool, got None"):
        parse_settings("pytorch-compiled", {"fullgraph": None})


@pytest.mark.parametrize(
    ("backend", "settings", "message"),
    [
        ("llamacpp", {"flash_attn": "yes"}, "backend_settings.llamacpp.flash_attn is 'yes'; use auto, on or off"),
        ("llamacpp", {"extra_buffer_types": "sometimes"}, "extra_buffer_types is 'sometimes'; use auto, true or false"),
        ("vllm", {"server_executor": "ray"}, "backend_settings.vllm.server_executor is 'ray'; use mp or uni"),
        ("pytorch-compiled", {"compile_mode": "fast"}, "compile_mode is 'fast'; use default, reduce-overhead"),
        ("vllm", {"max_lora_rank": 8}, "backend_settings.vllm.max_lora_rank: set by the pipeline"),
    ],
)
def test_a_bad_word_or_an_internal_setting_is_refused_when_the_config_loads(backend, settings, message):
    """load_config is the one check: the words a backend accepts are refused there, before any
    job, not when a backend starts."""
    from llenergymeasure.config import load_config

    study = {
        "models": {"m": {"architecture": "config/models/tiny-llama.json", "backends": {"pytorch": ["none-float32"]}}},
        "workload": {"batch_sizes": [1], "prompt_tokens": [8], "new_tokens": 4},
        "measurement": {"trials": 2},
        "backend_settings": {backend: settings},
    }
    with pytest.raises(ConfigError) as error:
        load_config(study, has_cuda=False)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_backend_keeps_the_settings_instance_it_is_given_and_reads_its_fields():
    from llenergymeasure.backends.pytorch_compiled import CompiledPyTorchBackend

    settings = backend_specs.CompiledPyTorchSettings(threads=1, max_new_tokens=7, compile_mode="default")
    backend = CompiledPyTorchBackend(settings, "cpu")
    assert backend.settings is settings  # not parsed again
    assert backend.max_new_tokens == 7 and backend.compile_mode == "default"
    assert backend.set_settings() == {"threads": 1, "max_new_tokens": 7, "compile_mode": "default"}
    parsed = CompiledPyTorchBackend({"threads": 1}, "cpu").settings  # a mapping: parsed the same way
    assert isinstance(parsed, backend_specs.CompiledPyTorchSettings) and parsed.threads == 1


def test_the_workload_sizes_fill_only_what_the_config_leaves_unset():
    sizes = {"max_new_tokens": 32, "max_prompt_tokens": 512}
    vllm = backend_specs.sized_for(parse_settings("vllm", {"max_new_tokens": 64}), sizes)
    assert (vllm.max_new_tokens, vllm.max_prompt_tokens) == (64, 512)  # the config's 64 stays
    llamacpp = backend_specs.sized_for(parse_settings("llamacpp", {}), sizes)
    assert llamacpp.max_new_tokens == 32 and not hasattr(llamacpp, "max_prompt_tokens")
    assert backend_specs.sized_for(parse_settings("pytorch", {}), sizes) == backend_specs.PyTorchSettings()


def test_backends_read_typed_fields_and_check_nothing_again():
    """No backend reads its settings as a mapping (`self.settings.get(...)`): the checks live in
    the settings dataclasses, run once where the config loads; the module functions that take
    settings (vLLM's engine arguments, an adapter job's, a job's GPUs) go through typed_settings."""
    import re

    from conftest import REPO_ROOT

    package = REPO_ROOT / "workflow" / "scripts" / "llenergymeasure"
    for path in (package / "backends").glob("*.py"):
        assert not re.search(r"self\.settings\.get\(|self\.settings\[", path.read_text()), path.name
    for path in (package / "backends" / "vllm.py", package / "lora_vllm.py", package / "job_gpus.py"):
        text = path.read_text()
        assert "typed_settings(" in text and not re.search(r"(?<!variant)\.?\bsettings\.get\(", text), path.name
    assert set(__import__("llenergymeasure.backends.llamacpp", fromlist=["FLASH_ATTN_TYPES"]).FLASH_ATTN_TYPES) == set(
        backend_specs.FLASH_ATTN_CHOICES
    )
