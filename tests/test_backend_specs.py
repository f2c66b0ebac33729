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
