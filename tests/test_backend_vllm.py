"""The vllm backend: what can be checked without vLLM here, and an end-to-end run where it is importable."""

from __future__ import annotations

import importlib.util
import json

import pytest

from llenergymeasure.backends import BACKENDS, get_backend
from llenergymeasure.backends.vllm import VllmBackend, VllmUnavailable
from llenergymeasure.variants import quants_for_backend

BACKENDS.setdefault("vllm", "llenergymeasure.backends.vllm:VllmBackend")
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _variant(tmp_path) -> dict:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 512}))
    return {"quant": "none-bfloat16", "quant_method": "none", "compute_dtype": "bfloat16",
            "model_dir": str(tmp_path), "weights": "random"}


def test_is_registered_and_loads_what_the_catalogue_says():
    assert get_backend("vllm") is VllmBackend
    assert VllmBackend.supported_quants == tuple(quants_for_backend("vllm"))
    assert not any(q.startswith(("gguf-", "bnb-")) for q in VllmBackend.supported_quants)


def test_refuses_a_variant_it_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="vllm runs none-float32"):
        VllmBackend({}, "cuda").load({**_variant(tmp_path), "quant": "gguf-q8_0"})


def test_refuses_cpu_with_a_clear_message(tmp_path):
    with pytest.raises(VllmUnavailable, match="CUDA only"):
        VllmBackend({}, "cpu").load(_variant(tmp_path))


@pytest.mark.skipif(HAS_VLLM, reason="vllm is importable here; the missing-vLLM message cannot be provoked")
def test_missing_vllm_names_the_env_to_use(tmp_path):
    with pytest.raises(VllmUnavailable, match="envs/vllm.yaml"):
        VllmBackend({}, "cuda").load(_variant(tmp_path))


@pytest.mark.skipif(not (HAS_VLLM and _has_cuda()),
                    reason="vLLM cannot be installed on the development machines (no CUDA); runs where vllm and a GPU are")
def test_generates_exactly_the_requested_tokens_with_dummy_weights(tmp_path):
    from llenergymeasure.models import materialise_random
    from llenergymeasure.config import REPO_ROOT

    model_dir = tmp_path / "model"
    materialise_random(REPO_ROOT / "config/models/tiny-llama.json", model_dir, seed=0,
                       tokenizer_text=REPO_ROOT / "data/text/tokenizer.txt")
    backend = VllmBackend({"max_prompt_tokens": 64, "max_new_tokens": 16, "gpu_memory_utilization": 0.3}, "cuda")
    try:
        info = backend.load({**_variant(tmp_path), "model_dir": str(model_dir)})
        assert info.kernel_path.startswith("vllm:")
        inputs = backend.prepare_inputs(4, 32, seed=0)
        assert backend.generate(inputs, 16) == 16
        assert backend.generate(inputs, 1) == 1
        description = backend.describe()
        assert description["version"].startswith("vllm ")
        assert description["settings"]["load_format"] == "dummy"
        assert description["settings"]["enable_prefix_caching"] is False
    finally:
        backend.close()
