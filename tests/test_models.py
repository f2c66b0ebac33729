"""Model materialisation: deterministic random weights with a tokenizer; the hub path fails clearly."""

from __future__ import annotations

import json

import pytest
from conftest import REPO_ROOT

from llenergymeasure.models import ModelSourceError, materialise

TEXT = REPO_ROOT / "data" / "text" / "tokenizer.txt"
ENTRY = {"source": "config", "architecture": "config/models/tiny-llama.json"}


def test_random_weights_are_byte_identical_across_runs(tmp_path):
    first = materialise("tiny-llama", ENTRY, tmp_path / "a" / "tiny-llama", seed=0, tokenizer_text=TEXT)
    second = materialise("tiny-llama", ENTRY, tmp_path / "b" / "tiny-llama", seed=0, tokenizer_text=TEXT)
    assert first["weights_sha256"] == second["weights_sha256"]
    for name in ("model.safetensors", "config.json", "tokenizer.model", "tokenizer.json"):
        assert (tmp_path / "a" / "tiny-llama" / name).read_bytes() == (
            tmp_path / "b" / "tiny-llama" / name
        ).read_bytes()
    other_seed = materialise("tiny-llama", ENTRY, tmp_path / "c" / "tiny-llama", seed=1, tokenizer_text=TEXT)
    assert other_seed["weights_sha256"] != first["weights_sha256"]


def test_materialised_directory_loads_in_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "tiny-llama"
    manifest = materialise("tiny-llama", ENTRY, out, seed=0, tokenizer_text=TEXT)
    assert manifest["weights"] == "random"
    assert json.loads((out / "model_manifest.json").read_text())["weights_sha256"] == manifest["weights_sha256"]
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    assert sum(p.numel() for p in model.parameters()) == manifest["params_total"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("Energy per output token.").input_ids
    assert 3 < len(ids) and max(ids) < model.config.vocab_size
    # no partial directories are left beside the output
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-llama"]


def test_hub_source_without_network_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "5")
    entry = {
        "source": "hub",
        "repo_id": "meta-llama/Llama-3.2-1B",
        "revision": "4e20de362430cd3b72f300e6b0f18e50e7166e08",
    }
    with pytest.raises(ModelSourceError) as error:
        materialise("llama-1b", entry, tmp_path / "llama-1b", seed=0, tokenizer_text=TEXT)
    assert "cannot download meta-llama/Llama-3.2-1B@4e20de3" in str(error.value)
    assert "source: config" in str(error.value)
    assert not (tmp_path / "llama-1b").exists()


def test_pickle_checkpoints_become_safetensors_without_running_code(tmp_path):
    import pickle

    import torch
    from safetensors.torch import load_file

    from llenergymeasure.models import convert_pickle_checkpoints

    state = {"lm_head.weight": torch.arange(6.0).reshape(2, 3), "embed.weight": torch.ones(2, 3)}
    state["tied.weight"] = state["embed.weight"]  # shared storage, as tied embeddings have
    torch.save(state, tmp_path / "pytorch_model.bin")
    written = convert_pickle_checkpoints(tmp_path)
    assert [p.name for p in written] == ["model.safetensors"]
    assert not (tmp_path / "pytorch_model.bin").exists()
    loaded = load_file(tmp_path / "model.safetensors")
    assert torch.equal(loaded["lm_head.weight"], state["lm_head.weight"])
    assert torch.equal(loaded["tied.weight"], state["embed.weight"])

    # a pickle that would run code when unpickled is refused by weights_only
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"x": Exploit()}, handle)
    with pytest.raises(pickle.UnpicklingError):
        convert_pickle_checkpoints(tmp_path)
    assert not marker.exists()
