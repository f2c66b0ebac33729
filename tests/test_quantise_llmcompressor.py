"""llm-compressor checkpoints (gptq-w4a16, awq-w4a16, w8a8-int8) end to end on a tiny model:
calibrated with the shipped text (4 samples x 32 tokens), saved as compressed-tensors,
loaded back through transformers, and described honestly; and FLOPs are the same for every
weight-only variant of one model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open
from test_quantise_models import build_model, settings

from llenergymeasure.backends.loading import load_model
from llenergymeasure.quantise import build_variant
from llenergymeasure.variants import QuantiseError

CHECKPOINT_QUANTS = ("gptq-w4a16", "awq-w4a16", "w8a8-int8")
DECODER_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("llmc") / "tiny")


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("llmc-variants")
    variants = {}
    for quant in CHECKPOINT_QUANTS:
        variant = build_variant(str(tiny), quant, settings(), str(out / quant))
        model, info = load_model(variant, "cpu")
        variants[quant] = (variant, model, info)
    return variants


def _tensor_bytes_by_layer(path) -> dict[str, int]:
    """Bytes of the tensors stored for each decoder linear layer of a safetensors file."""
    sizes: dict[str, int] = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
            layer = next((name for name in DECODER_LINEARS if f".{name}." in key), None)
            if layer:
                tensor = handle.get_tensor(key)
                sizes[layer] = sizes.get(layer, 0) + tensor.numel() * tensor.element_size()
    return sizes


def test_checkpoints_are_compressed_tensors(built):
    for quant, (variant, _, _) in built.items():
        checkpoint = variant["checkpoint_dir"]
        config = json.loads(Path(checkpoint, "config.json").read_text())
        assert config["quantization_config"]["quant_method"] == "compressed-tensors", quant
        assert variant["checkpoint_file"] == "model.safetensors"
        assert "lm_head" in config["quantization_config"]["ignore"]
        assert variant["settings"]["library"] == "llm-compressor"
        assert variant["settings"]["calibration"]["samples"] == 4
        assert variant["settings"]["recipe"]  # the recipe llm-compressor applied, as it saved it
        assert variant["weights"] == "random" and variant["perplexity"] > 1


def test_weight_bytes_on_disk_shrink_as_expected(built, tiny):
    original = _tensor_bytes_by_layer(tiny / "model.safetensors")
    for quant, (variant, _, _) in built.items():
        stored = _tensor_bytes_by_layer(f"{variant['checkpoint_dir']}/{variant['checkpoint_file']}")
        ratio = sum(stored.values()) / sum(original.values())
        if quant == "w8a8-int8":
            assert 0.25 <= ratio <= 0.27, (quant, ratio)  # int8 weights + one float32 scale per row
        else:
            assert 0.125 <= ratio <= 0.15, (quant, ratio)  # 4-bit packed + scales (and zero points) per 128
    assert built["gptq-w4a16"][0]["weight_bytes_disk"] < built["w8a8-int8"][0]["weight_bytes_disk"]
    assert built["w8a8-int8"][0]["weight_bytes_disk"] < (tiny / "model.safetensors").stat().st_size


def test_transformers_decompresses_them_and_says_so(built):
    for quant, (_, model, info) in built.items():
        assert info.decompressed_at_load, quant
        assert info.kernel_path.startswith("compressed-tensors:decompressed-to-float32"), quant
        assert info.compute_dtype == "float32"
        assert info.extra["quantised_modules"] == len(DECODER_LINEARS)
        # after decompression the resident weights are full precision again
        layer = model.model.layers[0].self_attn.q_proj
        assert layer.weight.dtype.is_floating_point and layer.weight.dtype.itemsize == 4
        assert info.weight_bytes_memory >= 0.95 * 4 * sum(
            p.numel() for p in model.parameters() if p.is_floating_point()
        )
    assert built["w8a8-int8"][2].kernel_path.endswith("+dynamic-int8-activation-qdq")
    assert not built["gptq-w4a16"][2].kernel_path.endswith("qdq")


def test_decompressed_weights_are_on_the_quantisation_grid(built):
    """GPTQ W4A16 weights take at most 16 distinct values per 128-wide group after decompression."""
    weight = built["gptq-w4a16"][1].model.layers[0].mlp.up_proj.weight
    for group in weight[0].split(128):
        assert group.unique().numel() <= 16


def test_conv1d_models_are_refused_before_calibration(tmp_path):
    gpt2 = build_model(tmp_path / "gpt2", model_type="gpt2")
    with pytest.raises(QuantiseError, match="Conv1D"):
        build_variant(str(gpt2), "gptq-w4a16", settings(), str(tmp_path / "v"))
    assert not (tmp_path / "v" / "checkpoint").exists()


def test_flops_are_identical_across_weight_only_variants(built, tiny, tmp_path):
    from llenergymeasure.flops import count_generate

    variants = dict(built)
    for quant in ("none-float32", "none-bfloat16", "bnb-int8", "bnb-nf4"):
        variant = build_variant(str(tiny), quant, settings(), str(tmp_path / quant))
        variants[quant] = (variant, *load_model(variant, "cpu"))
    counts = {
        quant: count_generate(model.config.to_dict(), batch=2, prompt=16, new=8, quant=quant)
        for quant, (_, model, _) in variants.items()
    }
    reference = counts["none-float32"]["flops_total"]
    assert reference > 0
    for quant in ("none-bfloat16", "bnb-int8", "bnb-nf4", "gptq-w4a16", "awq-w4a16"):
        assert counts[quant]["flops_total"] == reference, quant
        assert counts[quant]["flops_per_output_token"] == counts["none-float32"]["flops_per_output_token"]
