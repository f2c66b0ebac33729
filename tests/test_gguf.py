"""GGUF variants: llama.cpp's converter and quantiser on a tiny random Llama, for real.

`tiny_gguf` builds a model directory and its three GGUF variants once per test session
(test_backend_llamacpp.py imports it); every test reads what the real code wrote.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (bash install-llamacpp.sh)")

from llenergymeasure import gguf

# Row lengths are multiples of 256, so q4_K / q6_K apply without fallback types.
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": 320,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
EVALUATION = {"sequence_length": 32, "max_sequences": 2}
QUANTS = ("gguf-f16", "gguf-q8_0", "gguf-q4_k_m")

needs_converter = pytest.mark.skipif(
    not (gguf.converter_dir() / "convert_hf_to_gguf.py").is_file(),
    reason="llama.cpp's converter is not extracted (bash install-llamacpp.sh --converter-only)",
)


def _text(words: int, seed: int) -> str:
    """Deterministic pseudo-English text for training a tokenizer and measuring perplexity."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "tu", "ra", "so", "vel", "dan", "qui", "por", "est", "an", "the", "of"]
    lines, line = [], []
    for _ in range(words):
        line.append("".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))))
        if len(line) == 12:
            lines.append(" ".join(line).capitalize() + ".")
            line = []
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> dict:
    """{'model_dir', 'evaluation', 'variants': {quant: variant.json dict}} built with the real code."""
    from llenergymeasure.models import materialise_random

    if not (gguf.converter_dir() / "convert_hf_to_gguf.py").is_file():
        pytest.skip("llama.cpp's converter is not extracted (bash install-llamacpp.sh --converter-only)")
    # one build per session, also when another test module imports this fixture
    root = tmp_path_factory.getbasetemp() / "tiny-gguf"
    built = root / "built.json"
    if built.is_file():
        return {**json.loads(built.read_text()), "model_dir": root / "models" / "tiny", "root": root}
    root.mkdir()
    (root / "arch.json").write_text(json.dumps(TINY_LLAMA))
    (root / "train.txt").write_text(_text(1500, seed=1))
    (root / "eval.txt").write_text(_text(400, seed=2))
    model_dir = root / "models" / "tiny"
    materialise_random(root / "arch.json", model_dir, seed=0, tokenizer_text=root / "train.txt")
    (model_dir / "model_manifest.json").write_text(json.dumps({"weights": "random"}))
    evaluation = {"text": str(root / "eval.txt"), **EVALUATION}
    variants = {}
    f16 = root / "variants" / "gguf-f16"
    variants["gguf-f16"] = gguf.build_variant(
        "tiny", "gguf-f16", model_dir, f16, evaluation=evaluation, threads=1, log_file=root / "convert.log"
    )
    for quant in QUANTS[1:]:
        variants[quant] = gguf.build_variant(
            "tiny",
            quant,
            model_dir,
            root / "variants" / quant,
            f16_gguf=f16 / "model.gguf",
            evaluation=evaluation,
            threads=1,
        )
    built.write_text(json.dumps({"evaluation": evaluation, "variants": variants}))
    return {"model_dir": model_dir, "evaluation": evaluation, "variants": variants, "root": root}


@needs_converter
def test_f16_variant_manifest_describes_the_file(tiny_gguf):
    variant = tiny_gguf["variants"]["gguf-f16"]
    path = Path(variant["checkpoint_file"])
    assert path.name == "model.gguf" and path.is_file()
    on_disk = json.loads((path.parent / "variant.json").read_text())
    assert on_disk == json.loads(json.dumps(variant))
    assert variant["weight_bytes_disk"] == path.stat().st_size
    assert (variant["quant"], variant["quant_method"], variant["weight_bits"]) == ("gguf-f16", "gguf-f16", 16)
    assert variant["weights"] == "random"
    settings = variant["settings"]
    assert settings["matrix_tensor_types"] == {"F16": settings["matrix_tensor_types"]["F16"]}
    assert settings["file_type"] == 1  # LLAMA_FTYPE_MOSTLY_F16
    assert settings["matrix_bits_per_weight"] == 16.0
    assert settings["llama_cpp_python"] == gguf.llama_cpp_version()
    # every matrix weight of the HF model is in the file: 2 layers x 7 matrices + embedding + head
    per_layer = 256 * 256 * 2 + 256 * 128 * 2 + 3 * 256 * 512
    assert sum(settings["matrix_tensor_types"].values()) == 2 * per_layer + 2 * 320 * 256
    assert "Model successfully exported" in (tiny_gguf["root"] / "convert.log").read_text()


@needs_converter
def test_quantised_variants_hold_the_requested_types(tiny_gguf):
    variants = tiny_gguf["variants"]
    q8, q4 = variants["gguf-q8_0"]["settings"], variants["gguf-q4_k_m"]["settings"]
    assert set(q8["matrix_tensor_types"]) == {"Q8_0"}
    assert q8["matrix_bits_per_weight"] == pytest.approx(8.5)  # 32 int8 + one f16 scale per block
    assert {"Q4_K", "Q6_K"} <= set(q4["matrix_tensor_types"])  # Q4_K_M keeps some matrices at q6_K
    assert 4.5 <= q4["matrix_bits_per_weight"] < 6.6
    sizes = [variants[q]["weight_bytes_disk"] for q in QUANTS]
    assert sizes[0] > sizes[1] > sizes[2]
    assert variants["gguf-q8_0"]["settings"]["quantised_from"].endswith("gguf-f16/model.gguf")


@needs_converter
def test_perplexity_is_measured_and_quantisation_moves_it_little(tiny_gguf):
    variants = tiny_gguf["variants"]
    expected_tokens = EVALUATION["max_sequences"] * (EVALUATION["sequence_length"] - 1)
    values = {}
    for quant in QUANTS:
        assert variants[quant]["perplexity_tokens"] == expected_tokens
        values[quant] = variants[quant]["perplexity"]
        assert math.isfinite(values[quant]) and values[quant] > 1.0
    # random weights: close to uniform over the vocabulary, and q8_0 stays within 1% of f16
    assert values["gguf-f16"] == pytest.approx(TINY_LLAMA["vocab_size"], rel=0.5)
    assert values["gguf-q8_0"] == pytest.approx(values["gguf-f16"], rel=0.01)


@needs_converter
def test_f16_perplexity_agrees_with_the_transformers_protocol(tiny_gguf):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llenergymeasure.quality import perplexity

    evaluation = tiny_gguf["evaluation"]
    model = AutoModelForCausalLM.from_pretrained(tiny_gguf["model_dir"], dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_gguf["model_dir"])
    reference, tokens = perplexity(
        model,
        tokenizer,
        Path(evaluation["text"]).read_text(),
        evaluation["sequence_length"],
        evaluation["max_sequences"],
    )
    variant = tiny_gguf["variants"]["gguf-f16"]
    assert variant["perplexity_tokens"] == tokens
    assert variant["perplexity"] == pytest.approx(reference, rel=1e-3)


@needs_converter
def test_missing_converter_fails_before_any_work(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv(gguf.CONVERTER_ENV, str(tmp_path / "nowhere"))
    out_dir = tmp_path / "out"
    with pytest.raises(gguf.GgufError, match=r"install-llamacpp\.sh"):
        gguf.build_variant("tiny", "gguf-f16", tiny_gguf["model_dir"], out_dir)
    assert not out_dir.exists()


def test_a_non_gguf_variant_is_refused(tmp_path):
    with pytest.raises(gguf.GgufError, match="allowed: gguf-f16, gguf-q8_0, gguf-q4_k_m"):
        gguf.build_variant("tiny", "bnb-int8", tmp_path, tmp_path / "out")


@needs_converter
def test_a_directory_without_a_model_is_refused(tmp_path):
    with pytest.raises(gguf.GgufError, match=r"no config\.json"):
        gguf.build_variant("tiny", "gguf-f16", tmp_path, tmp_path / "out")


def test_missing_evaluation_field_is_named(tmp_path):
    with pytest.raises(gguf.GgufError, match=r"evaluation\.sequence_length"):
        gguf.build_variant("tiny", "gguf-f16", tmp_path, tmp_path / "out", evaluation={"text": "x", "max_sequences": 1})
