"""The pytorch-compiled backend on CPU: static cache + torch.compile (inductor), for real.

One backend is compiled for the whole module (a cold inductor compile takes tens of
seconds on two cores); the tests then check what it records and how it generates.
"""

from __future__ import annotations

import json
import random

import pytest

torch = pytest.importorskip("torch")

from llenergymeasure.backends import BACKENDS, get_backend  # noqa: E402
from llenergymeasure.backends.pytorch import PyTorchBackend  # noqa: E402
from llenergymeasure.backends.pytorch_compiled import (  # noqa: E402
    PROBE_SHAPE,
    CompiledPyTorchBackend,
    compiled_graphs,
    kv_room_tokens,
)

BACKENDS.setdefault("pytorch-compiled", "llenergymeasure.backends.pytorch_compiled:CompiledPyTorchBackend")
ARCH = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 300,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def variant(tmp_path_factory) -> dict:
    from llenergymeasure.models import materialise_random

    root = tmp_path_factory.mktemp("compiled")
    (root / "arch.json").write_text(json.dumps(ARCH))
    rng = random.Random(0)  # a few KB of varied words for the tokenizer
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8))) for _ in range(1500)]
    (root / "text.txt").write_text("\n".join(" ".join(words[i : i + 12]) for i in range(0, len(words), 12)))
    materialise_random(root / "arch.json", root / "model", seed=0, tokenizer_text=root / "text.txt")
    return {"model": "tiny", "quant": "none-float32", "model_dir": str(root / "model")}


@pytest.fixture(scope="module")
def compiled(variant):
    backend = get_backend("pytorch-compiled")({"threads": 1, "max_new_tokens": NEW_TOKENS}, "cpu")
    info = backend.load(variant)
    yield backend, info
    backend.close()


def test_is_registered_and_extends_the_eager_backend():
    assert get_backend("pytorch-compiled") is CompiledPyTorchBackend
    assert issubclass(CompiledPyTorchBackend, PyTorchBackend)


def test_load_compiles_the_decode_step_and_records_the_time(compiled):
    backend, info = compiled
    assert backend.model._compiled_call is not None  # transformers' compiled forward, used for decode
    probe = info.extra["compile_probe"]
    assert (probe["batch_size"], probe["prompt_tokens"]) == PROBE_SHAPE
    assert probe["first_call_s"] > probe["second_call_s"] > 0  # the first call compiled
    assert info.extra["compile_s"] == pytest.approx(probe["first_call_s"] - probe["second_call_s"])
    assert info.extra["compile_config"]["backend"] == "inductor"
    assert info.extra["cache_implementation"] == "static"
    assert info.kernel_path.endswith("+torch.compile(inductor,default)")
    settings = backend.describe()["settings"]
    assert settings["compile_s"] == info.extra["compile_s"]
    assert settings["compile_all_devices"] is True and settings["cache_implementation"] == "static"


def test_generates_exactly_the_requested_tokens_without_recompiling(compiled):
    backend, _ = compiled
    events = len(backend.compile_events)
    inputs = backend.prepare_inputs(*PROBE_SHAPE, seed=4)  # the probe's shape: nothing new to compile
    assert len(backend.compile_events) == events
    graphs = compiled_graphs()
    ticks = []
    assert backend.generate(inputs, NEW_TOKENS, on_token=lambda: ticks.append(1)) == NEW_TOKENS
    assert len(ticks) == NEW_TOKENS
    assert backend.generate(inputs, 1) == 1  # prefill-only
    assert backend.generate(inputs, 2) == 2
    assert compiled_graphs() == graphs, "a measured generate recompiled"


def test_compiled_greedy_tokens_equal_eager(compiled, variant):
    backend, _ = compiled
    inputs = backend.prepare_inputs(*PROBE_SHAPE, seed=9)
    with torch.inference_mode():
        ours = backend.model.generate(**inputs, **backend.generation_kwargs(NEW_TOKENS))
    eager = PyTorchBackend({"threads": 1}, "cpu")
    eager.load(variant)
    try:
        with torch.inference_mode():
            reference = eager.model.generate(**inputs, **eager.generation_kwargs(NEW_TOKENS))
    finally:
        eager.close()
    assert ours.shape == (PROBE_SHAPE[0], PROBE_SHAPE[1] + NEW_TOKENS)
    assert torch.equal(ours, reference)


def test_more_tokens_than_the_static_cache_is_a_clear_error(compiled):
    backend, _ = compiled
    inputs = backend.prepare_inputs(*PROBE_SHAPE, seed=0)
    with pytest.raises(ValueError, match=r"backend_settings\.pytorch-compiled\.max_new_tokens"):
        backend.generate(inputs, NEW_TOKENS + 1)


@pytest.mark.parametrize("bad", [-1, "32", 2.5, True])
def test_bad_max_new_tokens_is_refused_before_loading(bad):
    with pytest.raises(ValueError, match="max_new_tokens"):
        CompiledPyTorchBackend({"max_new_tokens": bad}, "cpu")
    assert kv_room_tokens({}) > 0
