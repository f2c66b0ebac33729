"""Quantised variants: support checks, manifest-only variants (none-*, bnb-*) end to end on a
tiny model, what load_model detects (kernel path, bytes, dtype), and up-front input errors."""

from __future__ import annotations

import json

import pytest
from test_quantise_models import build_model, settings

from llenergymeasure.backends.loading import load_model
from llenergymeasure.manifest import VariantManifest
from llenergymeasure.quantise import build_variant
from llenergymeasure.variants import VARIANTS, QuantiseError, check_supported

MANIFEST_FIELDS = {
    "model",
    "quant",
    "quant_method",
    "weight_bits",
    "compute_dtype",
    "load_dtype",
    "model_dir",
    "checkpoint_dir",
    "checkpoint_file",
    "weight_bytes_disk",
    "weights",
    "perplexity",
    "perplexity_tokens",
    "settings",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("quantise") / "tiny")


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    """Every manifest-only variant of the tiny model, built and loaded once."""
    out = tmp_path_factory.mktemp("variants")
    variants = {}
    for quant in ("none-float32", "none-bfloat16", "bnb-int8", "bnb-nf4", "bnb-fp4"):
        variant = build_variant(str(tiny), quant, settings(), str(out / quant))
        model, info = load_model(variant, "cpu")
        variants[quant] = (variant, model, info)
    return variants


# -- support checks (pure, used by config validation) ---------------------------------------


@pytest.mark.parametrize("quant", ["gptq-autogptq", "awq-autoawq"])
def test_legacy_methods_are_rejected_without_cuda(quant):
    message = check_supported(quant, device_has_cuda=False)
    assert message is not None and "needs CUDA" in message and "no GPU is visible" in message
    assert "kept only to reproduce older artefacts" in message
    assert ("gptq-w4a16" if quant.startswith("gptq") else "awq-w4a16") in message
    assert check_supported(quant, device_has_cuda=True) is None


def test_cpu_methods_are_supported_without_cuda():
    for quant, spec in VARIANTS.items():
        if not spec.needs_cuda:
            assert check_supported(quant, device_has_cuda=False) is None, quant


def test_unknown_variant_lists_the_allowed_ones():
    message = check_supported("int3-magic", device_has_cuda=True)
    assert "unknown variant 'int3-magic'" in message and "bnb-nf4" in message


def test_llmcompressor_on_conv1d_models_is_rejected():
    message = check_supported("gptq-w4a16", device_has_cuda=False, model_type="gpt2")
    assert "Conv1D" in message and "bnb-*" in message
    assert check_supported("bnb-nf4", device_has_cuda=False, model_type="gpt2") is None


def test_legacy_build_fails_before_any_work_on_cpu(tiny, tmp_path):
    with pytest.raises(QuantiseError, match="needs CUDA"):
        build_variant(str(tiny), "gptq-autogptq", settings(), str(tmp_path / "v"))
    assert not (tmp_path / "v").exists()


# -- manifest-only variants end to end --------------------------------------------------------


def test_manifests_are_complete_and_on_disk(built, tiny):
    for quant, (variant, _, _) in built.items():
        assert MANIFEST_FIELDS <= set(variant), quant
        assert variant["quant"] == quant and variant["quant_method"] == VARIANTS[quant].method
        assert variant["weight_bits"] == VARIANTS[quant].weight_bits
        assert variant["weights"] == "random"
        assert variant["checkpoint_dir"] is None  # quantised at load time
        assert variant["weight_bytes_disk"] == (tiny / "model.safetensors").stat().st_size
        assert variant["perplexity_tokens"] == 2 * 63
        assert variant["perplexity"] > 1


def test_variant_json_is_written(tiny, tmp_path):
    variant = build_variant(str(tiny), "bnb-nf4", settings(), str(tmp_path / "v"))
    assert json.loads((tmp_path / "v" / "variant.json").read_text()) == json.loads(json.dumps(variant))
    assert variant["settings"]["bnb"]["bnb_4bit_quant_type"] == "nf4"
    assert variant["compute_dtype"] == "float32"  # quantisation.bnb_compute_dtype


def test_weights_field_comes_from_the_model_manifest(tiny, tmp_path):
    import shutil

    copy = tmp_path / "pretrained"
    shutil.copytree(tiny, copy)
    manifest = json.loads((copy / "model_manifest.json").read_text())
    (copy / "model_manifest.json").write_text(json.dumps({**manifest, "weights": "pretrained"}))
    assert build_variant(str(copy), "none-float32", settings(), str(tmp_path / "a"))["weights"] == "pretrained"
    (copy / "model_manifest.json").unlink()
    assert build_variant(str(copy), "none-float32", settings(), str(tmp_path / "b"))["weights"] == "random"


def test_kernel_paths_are_detected(built):
    kernels = {quant: info.kernel_path for quant, (_, _, info) in built.items()}
    assert kernels["none-float32"] == "torch.nn.Linear(float32)"
    assert kernels["none-bfloat16"] == "torch.nn.Linear(bfloat16)"
    assert kernels["bnb-int8"].startswith("bitsandbytes.Linear8bitLt:int8_")
    assert kernels["bnb-nf4"].startswith("bitsandbytes.Linear4bit(nf4):")
    assert kernels["bnb-fp4"].startswith("bitsandbytes.Linear4bit(fp4):")
    for quant in ("bnb-int8", "bnb-nf4", "bnb-fp4"):
        info = built[quant][2]
        assert info.extra["quantised_modules"] == 7  # q, k, v, o, gate, up, down; not the LM head
        assert any(op.startswith("bitsandbytes::") for op in info.extra["decode_ops"]), quant
        assert not info.decompressed_at_load


def test_detected_kernel_agrees_with_the_ops_that_ran(built):
    """The 4-bit kernel named in kernel_path is one the profiler saw in the decode step."""
    info = built["bnb-nf4"][2]
    kernel = info.kernel_path.split(":", 1)[1].split("[")[0]
    assert f"bitsandbytes::{kernel}" in info.extra["decode_ops"]
    if "[cpu-packed-bf16]" in info.kernel_path:  # bitsandbytes' fused AVX512-BF16 CPU kernel
        assert info.compute_dtype == "bfloat16"
    int8 = built["bnb-int8"][2]
    assert int8.compute_dtype == "int8"
    assert ("aten::_int_mm" in int8.extra["decode_ops"]) == ("aten::_int_mm" in int8.kernel_path)


def test_weight_bytes_shrink_as_expected(built):
    full = built["none-float32"][2]
    linear_params = sum(
        m.weight.numel()
        for name, m in built["none-float32"][1].named_modules()
        if type(m).__name__ == "Linear" and not name.endswith("lm_head")
    )
    float32_linear_bytes = 4 * linear_params
    model = built["none-float32"][1]
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())  # rotary frequencies
    assert full.weight_bytes_memory == 4 * sum(p.numel() for p in model.parameters()) + buffer_bytes
    bf16 = built["none-bfloat16"][2].weight_bytes_memory
    assert bf16 - buffer_bytes == (full.weight_bytes_memory - buffer_bytes) // 2

    int8 = built["bnb-int8"][2].extra["quantised_weight_bytes_memory"]
    assert linear_params <= int8 <= 1.05 * linear_params  # 1 byte per weight + per-row scales
    for quant in ("bnb-nf4", "bnb-fp4"):
        four_bit = built[quant][2].extra["quantised_weight_bytes_memory"]
        assert linear_params / 2 <= four_bit <= 0.6 * linear_params  # half a byte + block scales
    others = full.weight_bytes_memory - float32_linear_bytes  # embeddings, LM head, norms stay float32
    for quant in ("bnb-int8", "bnb-nf4", "bnb-fp4"):
        info = built[quant][2]
        assert info.weight_bytes_memory == pytest.approx(others + info.extra["quantised_weight_bytes_memory"], rel=0.01)


def test_quantised_models_generate(built):
    import torch

    for quant, (_, model, _) in built.items():
        with torch.inference_mode():
            out = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, min_new_tokens=3, do_sample=False)
        assert out.shape == (1, 6), quant


def test_perplexity_of_weight_only_variants_is_close_to_float32(built):
    reference = built["none-float32"][0]["perplexity"]
    for quant in ("none-bfloat16", "bnb-int8", "bnb-nf4"):
        assert built[quant][0]["perplexity"] == pytest.approx(reference, rel=0.1), quant
    assert built["none-bfloat16"][0]["perplexity"] != reference  # it really ran at another precision


# -- bad input: one line, before any expensive work -----------------------------------------------


def test_bad_compute_dtype_names_the_field(tiny, tmp_path):
    bad = settings()
    bad["quantisation"]["bnb_compute_dtype"] = "float8"
    with pytest.raises(QuantiseError, match=r"quantisation\.bnb_compute_dtype: 'float8' is not allowed"):
        build_variant(str(tiny), "bnb-nf4", bad, str(tmp_path / "v"))


def test_missing_evaluation_text_names_the_field(tiny, tmp_path):
    bad = settings()
    bad["evaluation"]["text"] = "data/text/nothing-here.txt"
    with pytest.raises(QuantiseError, match=r"evaluation\.text: file 'data/text/nothing-here\.txt' does not exist"):
        build_variant(str(tiny), "none-float32", bad, str(tmp_path / "v"))


def test_calibration_longer_than_the_text_is_refused(tiny, tmp_path):
    with pytest.raises(QuantiseError, match=r"quantisation\.calibration: 1000 samples x 512 tokens"):
        build_variant(str(tiny), "gptq-w4a16", settings(samples=1000, sequence_length=512), str(tmp_path / "v"))


def test_gguf_is_left_to_the_gguf_rule(tiny, tmp_path):
    with pytest.raises(QuantiseError, match="gguf rule"):
        build_variant(str(tiny), "gguf-q8_0", settings(), str(tmp_path / "v"))


def test_missing_checkpoint_is_a_clear_error(tiny):
    variant = {"quant": "gptq-w4a16", "model_dir": str(tiny), "checkpoint_dir": "/nonexistent/checkpoint"}
    with pytest.raises(QuantiseError, match=r"variant\.checkpoint_dir: '/nonexistent/checkpoint' is not a directory"):
        load_model(variant, "cpu")


def test_write_manifest_requires_the_contract_fields(tmp_path):
    with pytest.raises(QuantiseError, match="missing field"):
        VariantManifest.from_json({"model": "m", "quant": "gguf-f16"}).write(tmp_path)


# -- legacy libraries: only where they can run (their own env and an NVIDIA GPU) ------------------


def _legacy_available(module: str) -> bool:
    import importlib.util

    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available() and importlib.util.find_spec(module) is not None


@pytest.mark.parametrize(
    ("quant", "module", "kernel_prefix"),
    [("gptq-autogptq", "auto_gptq", "auto_gptq."), ("awq-autoawq", "awq", "autoawq.WQLinear")],
)
def test_legacy_variant_end_to_end_on_cuda(quant, module, kernel_prefix, tiny, tmp_path):
    if not _legacy_available(module):
        pytest.skip(f"{quant} needs CUDA and envs/{VARIANTS[quant].env}.yaml")
    variant = build_variant(str(tiny), quant, settings(device="cuda"), str(tmp_path / quant))
    assert variant["checkpoint_file"].endswith(".safetensors") and variant["settings"]["legacy"] is True
    _, info = load_model(variant, "cuda")
    assert info.kernel_path.startswith(kernel_prefix)
    assert info.extra["quantised_modules"] == 7 and not info.decompressed_at_load


def test_evaluation_too_short_is_refused_before_building(tiny, tmp_path):
    bad = settings()
    bad["evaluation"]["sequence_length"] = 10**6
    with pytest.raises(QuantiseError, match=r"evaluation\.sequence_length: the text has only \d+ tokens"):
        build_variant(str(tiny), "gptq-w4a16", bad, str(tmp_path / "v"))
    assert not (tmp_path / "v" / "checkpoint").exists()


def test_w4_group_size_is_checked_before_calibration(tmp_path):
    import torch
    from test_quantise_models import build_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    narrow = tmp_path / "narrow"
    config = AutoConfig.for_model(
        "llama",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=320,
    )
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(narrow)
    build_tokenizer(narrow)
    with pytest.raises(QuantiseError, match="groups of 128 input features"):
        build_variant(str(narrow), "awq-w4a16", settings(), str(tmp_path / "v"))
    assert not (tmp_path / "v" / "checkpoint").exists()
