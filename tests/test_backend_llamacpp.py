"""The llamacpp backend on real GGUF files of a tiny random Llama (built by test_gguf's fixture)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (bash install-llamacpp.sh)")

from test_gguf import tiny_gguf  # noqa: F401  (session fixture)

from llenergymeasure.backends import BACKENDS, get_backend
from llenergymeasure.backends.llamacpp import LlamaCppBackend, LlamaCppInputs

BACKENDS.setdefault("llamacpp", "llenergymeasure.backends.llamacpp:LlamaCppBackend")


@pytest.fixture
def make_backend():
    """Backends on one thread (the test machine is shared), closed after the test."""
    made = []

    def make(variant: dict, **settings) -> LlamaCppBackend:
        backend = get_backend("llamacpp")({"threads": 1, "max_new_tokens": 16, **settings}, "cpu")
        backend.load(variant)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def _transformers_logits(model_dir, ids: np.ndarray) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        return model(torch.as_tensor(ids, dtype=torch.long)).logits.numpy()


def test_is_registered_under_its_name():
    assert get_backend("llamacpp") is LlamaCppBackend


@pytest.mark.parametrize(
    "quant, kernel",
    [
        ("gguf-f16", "ggml-cpu:f16"),
        ("gguf-q8_0", "ggml-cpu:q8_0"),
        ("gguf-q4_k_m", "ggml-cpu:q4_k+q6_k"),
    ],
)
def test_load_reports_what_runs(tiny_gguf, make_backend, quant, kernel):
    variant = tiny_gguf["variants"][quant]
    backend = make_backend(variant)
    info = backend.load(variant)  # loading again replaces the loaded model
    assert info.kernel_path.startswith(kernel.split("+")[0])
    assert set(info.kernel_path.split(":")[1].split("+")) == set(kernel.split(":")[1].split("+"))
    assert info.decompressed_at_load is False
    assert 0 < info.weight_bytes_memory <= variant["weight_bytes_disk"]
    assert info.extra["matrix_tensor_types"] == variant["settings"]["matrix_tensor_types"]
    assert info.load_s is not None and info.load_s >= 0


def test_f16_logits_match_transformers(tiny_gguf, make_backend):
    backend = make_backend(tiny_gguf["variants"]["gguf-f16"])
    ids = backend.prepare_inputs(1, 24, seed=3).token_ids
    ours = backend.sequence_logits(ids[0])
    reference = _transformers_logits(tiny_gguf["model_dir"], ids)[0]
    assert ours.shape == reference.shape == (24, 320)
    scale = np.abs(reference).max()
    assert np.abs(ours - reference).max() < 0.01 * scale
    q8 = make_backend(tiny_gguf["variants"]["gguf-q8_0"]).sequence_logits(ids[0])
    assert np.abs(q8 - reference).max() < 0.05 * scale


def test_generates_exactly_the_requested_tokens_greedily(tiny_gguf, make_backend):
    backend = make_backend(tiny_gguf["variants"]["gguf-f16"])
    inputs = backend.prepare_inputs(2, 12, seed=0)
    ticks = []
    assert backend.generate(inputs, 9, on_token=lambda: ticks.append(1)) == 9
    assert len(ticks) == 9 and backend.last_generated.shape == (2, 9)
    # greedy: under teacher forcing, transformers ranks every chosen token at (or within
    # the f16 rounding of) the top of its logits
    sequence = np.concatenate([inputs.token_ids, backend.last_generated], axis=1)
    reference = _transformers_logits(tiny_gguf["model_dir"], sequence)[:, 11:-1]
    chosen = np.take_along_axis(reference, backend.last_generated[..., None].astype(np.int64), axis=2)[..., 0]
    tolerance = 0.01 * np.abs(reference).max()
    assert np.all(chosen >= reference.max(axis=2) - tolerance)
    # prefill-only is generate(inputs, 1), and repeated runs are deterministic
    assert backend.generate(inputs, 1) == 1
    first = backend.last_generated.copy()
    backend.generate(inputs, 9)
    assert np.array_equal(backend.last_generated[:, :1], first)


@pytest.mark.parametrize("quant", ["gguf-f16", "gguf-q8_0"])
def test_a_batch_gives_each_sequence_what_it_gets_alone(tiny_gguf, make_backend, quant):
    backend = make_backend(tiny_gguf["variants"][quant])
    batch = backend.prepare_inputs(3, 10, seed=5)
    backend.generate(batch, 6)
    together = backend.last_generated.copy()
    for row in range(3):
        alone = backend.prepare_inputs(1, 10, seed=0)
        backend.generate(LlamaCppInputs(token_ids=batch.token_ids[row : row + 1], seed=alone.seed), 6)
        assert np.array_equal(backend.last_generated[0], together[row]), f"sequence {row}"
    assert backend.context_builds >= 2  # batch 3, then batch 1: one KV stream per sequence


def test_prepare_inputs_is_deterministic_and_avoids_special_tokens(tiny_gguf, make_backend):
    backend = make_backend(tiny_gguf["variants"]["gguf-q8_0"])
    a, b, c = (backend.prepare_inputs(4, 16, seed=s) for s in (7, 7, 8))
    assert np.array_equal(a.token_ids, b.token_ids) and not np.array_equal(a.token_ids, c.token_ids)
    assert a.token_ids.shape == (4, 16) and a.token_ids.min() >= 3 and a.token_ids.max() < 320


def test_describe_records_version_batching_and_settings(tiny_gguf, make_backend):
    import llama_cpp

    backend = make_backend(tiny_gguf["variants"]["gguf-q4_k_m"], flash_attn="off")
    backend.prepare_inputs(2, 8, seed=0)
    description = backend.describe()
    assert description["name"] == "llamacpp"
    assert description["version"] == f"llama-cpp-python {llama_cpp.__version__}"
    settings = description["settings"]
    assert settings["threads"] == 1 and settings["flash_attn"] == "off"
    assert "one llama_decode per step over all sequences" in settings["batching"]
    assert settings["max_new_tokens"] == 16
    assert backend.context_shape == (2, 8 + 16)  # one KV stream per sequence, prompt + max_new_tokens each
    assert isinstance(settings["extra_buffer_types"], bool) and settings["extra_buffer_types_reason"]


def test_peak_memory_is_the_process_peak_on_cpu(tiny_gguf, make_backend):
    backend = make_backend(tiny_gguf["variants"]["gguf-f16"])
    backend.peak_memory_reset()
    backend.generate(backend.prepare_inputs(1, 8, seed=0), 4)
    assert backend.peak_memory_bytes() > 10 * 2**20  # at least the interpreter itself


def test_more_tokens_than_the_kv_room_is_a_clear_error(tiny_gguf, make_backend):
    backend = make_backend(tiny_gguf["variants"]["gguf-f16"], max_new_tokens=4)
    inputs = backend.prepare_inputs(1, 8, seed=0)
    with pytest.raises(ValueError, match=r"backend_settings\.llamacpp\.max_new_tokens"):
        backend.generate(inputs, 5)
    with pytest.raises(ValueError, match="new_tokens must be at least 1"):
        backend.generate(inputs, 0)


def test_bad_variants_and_settings_are_refused(tiny_gguf, tmp_path):
    backend = LlamaCppBackend({"threads": 1}, "cpu")
    with pytest.raises(ValueError, match="llamacpp runs gguf-f16, gguf-q8_0, gguf-q4_k_m only"):
        backend.load({**tiny_gguf["variants"]["gguf-f16"], "quant": "bnb-int8"})
    with pytest.raises(FileNotFoundError, match="rebuild it with the gguf rule"):
        backend.load({**tiny_gguf["variants"]["gguf-f16"], "checkpoint_file": str(tmp_path / "missing.gguf")})
    with pytest.raises(ValueError, match="extra_buffer_types"):
        LlamaCppBackend({"extra_buffer_types": "sometimes"}, "cpu")
    with pytest.raises(ValueError, match="flash_attn is 'yes'; use auto, on or off"):
        LlamaCppBackend({"flash_attn": "yes"}, "cpu")
    with pytest.raises(ValueError, match="max_new_tokens"):
        LlamaCppBackend({"max_new_tokens": -5}, "cpu")


def test_amx_builds_keep_weights_off_the_crashing_amx_path():
    backend = LlamaCppBackend({"threads": 1}, "cpu")
    if "AMX_INT8 = 1" in backend.system_info:
        assert backend.use_extra_buffer_types is False
        assert "llama.cpp#20824" in backend.extra_buffer_types_reason
    else:
        assert backend.use_extra_buffer_types is True
    assert LlamaCppBackend({"extra_buffer_types": True}, "cpu").use_extra_buffer_types is True
