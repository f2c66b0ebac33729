"""The analytical FLOP count against PyTorch's FlopCounterMode on real transformers generate().

Tiny random-weight models (2 layers, hidden 64, vocab 128) of each verified family run
`generate(max_new_tokens=T, min_new_tokens=T, do_sample=False)` with eager attention (the
counter misses CPU fused attention) and eager MoE experts (it does not count grouped_mm).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "workflow" / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "workflow" / "scripts"))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache  # noqa: E402

from llenergymeasure import flops  # noqa: E402
from llenergymeasure.variants import VARIANTS  # noqa: E402

TOLERANCE = 1e-4  # |analytical - counted| / counted
TOKENS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
BASE = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
    max_position_embeddings=512,
    **TOKENS,
)
FAMILIES: dict[str, dict] = {
    "llama": BASE,
    "mistral": {**BASE, "sliding_window": 12},  # shorter than both test contexts
    "qwen2": BASE,
    "gemma": {**BASE, "head_dim": 24},  # Gemma's head_dim is independent of hidden/heads
    "phi3": {**BASE, "partial_rotary_factor": 0.75},
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=512, **TOKENS),
    "mixtral": {**BASE, "num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 48},
    "qwen2_moe": {  # layer 0 dense, layer 1 sparse with a shared expert
        **BASE,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 48,
        "decoder_sparse_step": 2,
    },
}
SHAPES = {"short": (2, 8, 6), "long": (1, 72, 12)}  # (batch, prompt, new)

_MODELS: dict[str, tuple] = {}


def build(model_type: str, **fields):
    """A random-weight eager model and its config as the dict config.json would hold."""
    key = json.dumps([model_type, fields], sort_keys=True)
    if key not in _MODELS:
        torch.manual_seed(0)
        config = AutoConfig.for_model(model_type, **fields)
        kwargs = {"attn_implementation": "eager"}
        if model_type in ("mixtral", "qwen2_moe"):
            kwargs["experts_implementation"] = "eager"
        model = AutoModelForCausalLM.from_config(config, **kwargs).eval()
        _MODELS[key] = (model, model.config.to_dict())
    return _MODELS[key]


def counted_generate(model, batch: int, prompt: int, new: int) -> int:
    """FLOPs FlopCounterMode records for one generate() call."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (batch, prompt), generator=generator)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )
    assert out.shape == (batch, prompt + new)
    return counter.get_total_flops()


def assert_close(analytical: int, counted: int, what: str) -> None:
    assert counted > 0
    error = abs(analytical - counted) / counted
    assert error <= TOLERANCE, f"{what}: analytical {analytical} vs counted {counted} ({error:.2e})"


def model_params(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())  # tied tensors once
    embedding = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight
    untied_head = 0 if head is model.get_input_embeddings().weight else head.numel()
    positions = model.transformer.wpe.weight.numel() if hasattr(model, "transformer") else 0
    return {"total": total, "non_embedding": total - embedding - untied_head - positions}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_generate_matches_flop_counter(family: str, shape: str) -> None:
    model, config = build(family, **FAMILIES[family])
    batch, prompt, new = SHAPES[shape]
    prefill = flops.count_generate(config, batch, prompt, 1)
    whole = flops.count_generate(config, batch, prompt, new)
    assert_close(prefill["flops_total"], counted_generate(model, batch, prompt, 1), f"{family} prefill")
    assert_close(whole["flops_total"], counted_generate(model, batch, prompt, new), f"{family} generate")
    assert (whole["method"], whole["confidence"]) == ("analytical", "exact")
    assert "equals the FlopCounterMode trace" in whole["reason"]
    assert prefill["flops_decode"] == 0 and whole["flops_prefill"] == prefill["flops_total"]
    assert whole["flops_total"] == whole["flops_prefill"] + whole["flops_decode"]
    parts = ("flops_linear", "flops_router", "flops_attention", "flops_lm_head", "flops_rotary")
    assert whole["flops_total"] == sum(whole[p] for p in parts)
    assert whole["flops_per_output_token"] == whole["flops_total"] / (batch * new)
    params = model_params(model)
    assert whole["params_total"] == params["total"]
    assert whole["params_non_embedding"] == params["non_embedding"]


def test_sliding_window_changes_the_count_only_beyond_the_window() -> None:
    config = FAMILIES["mistral"]
    wide = {**config, "model_type": "mistral", "sliding_window": 4096}
    narrow = {**config, "model_type": "mistral"}
    short_prompt = flops.count_generate(narrow, 1, 6, 4)  # context 9 < window 12
    assert short_prompt["flops_total"] == flops.count_generate(wide, 1, 6, 4)["flops_total"]
    long_prompt = flops.count_generate(narrow, 1, 72, 12)
    assert long_prompt["flops_attention"] < flops.count_generate(wide, 1, 72, 12)["flops_attention"]
    # prefill runs the full S x S product; the useful (causal, windowed) part is smaller
    assert long_prompt["flops_attention_causal"] < long_prompt["flops_attention"]


VARIATIONS = {
    "llama-tied": ("llama", {**BASE, "tie_word_embeddings": True}),
    "llama-mqa": ("llama", {**BASE, "num_key_value_heads": 1}),
    "llama-mha-biases": ("llama", {**BASE, "num_key_value_heads": 4, "attention_bias": True, "mlp_bias": True}),
    "llama-head-dim": ("llama", {**BASE, "head_dim": 24}),
    "llama-odd-sizes": (
        "llama",
        dict(
            hidden_size=48,
            intermediate_size=80,
            num_hidden_layers=3,
            num_attention_heads=3,
            num_key_value_heads=1,
            vocab_size=101,
            **TOKENS,
        ),
    ),
    "qwen2-sliding-layers": (
        "qwen2",
        {**BASE, "use_sliding_window": True, "sliding_window": 10, "max_window_layers": 1},
    ),
    "gemma-untied": ("gemma", {**BASE, "head_dim": 16, "tie_word_embeddings": False}),
    "gpt2-n-inner": (
        "gpt2",
        dict(n_embd=48, n_layer=3, n_head=6, n_inner=72, vocab_size=100, n_positions=256, **TOKENS),
    ),
}


@pytest.mark.parametrize("name", list(VARIATIONS))
def test_unseen_sizes_and_layouts_stay_exact(name: str) -> None:
    family, fields = VARIATIONS[name]
    model, config = build(family, **fields)
    result = flops.count_generate(config, 2, 24, 5)
    assert_close(result["flops_total"], counted_generate(model, 2, 24, 5), name)
    assert result["confidence"] == "exact"
    params = model_params(model)
    assert (result["params_total"], result["params_non_embedding"]) == (params["total"], params["non_embedding"])


def test_tied_and_untied_heads_change_parameters_not_flops() -> None:
    untied = flops.count_generate({**BASE, "model_type": "llama", "tie_word_embeddings": False}, 2, 16, 4)
    tied = flops.count_generate({**BASE, "model_type": "llama", "tie_word_embeddings": True}, 2, 16, 4)
    assert tied["flops_total"] == untied["flops_total"] and tied["flops_lm_head"] == untied["flops_lm_head"]
    assert untied["params_total"] - tied["params_total"] == BASE["vocab_size"] * BASE["hidden_size"]
    assert tied["params_non_embedding"] == untied["params_non_embedding"]


def test_lm_head_runs_on_last_prompt_position_then_every_step() -> None:
    config = {**BASE, "model_type": "llama"}
    one_head = 2 * BASE["hidden_size"] * BASE["vocab_size"]
    assert flops.count_generate(config, 3, 50, 1)["flops_lm_head"] == 3 * one_head
    assert flops.count_generate(config, 3, 50, 7)["flops_lm_head"] == 3 * 7 * one_head


def test_moe_active_parameters_are_top_k_experts() -> None:
    model, config = build("mixtral", **FAMILIES["mixtral"])
    result = flops.count_generate(config, 1, 8, 2)
    expert = 3 * 64 * 48  # gate, up, down of one expert
    assert result["params_non_embedding"] - result["params_active"] == 2 * (4 - 2) * expert
    assert result["params_total"] == model_params(model)["total"]


def test_unnamed_family_is_read_from_its_modules_and_verified() -> None:
    model, config = build("qwen3", **{**BASE, "head_dim": 16})
    result = flops.count_generate(config, 2, 24, 5)
    # qwen3 has no hand formula: the module walk counts it and the trace confirms it
    assert (result["method"], result["confidence"]) == ("structure", "exact")
    assert result["structure"]["qk_norm"] and result["structure"]["gated_mlp"]
    assert_close(result["flops_total"], counted_generate(model, 2, 24, 5), "qwen3 structure")


def test_non_gated_parallel_block_is_counted_from_the_model() -> None:
    # phi: parallel attention/MLP block, non-gated MLP, partial rotary (the old engine's +25 %)
    model, config = build("phi", **{**BASE, "partial_rotary_factor": 0.5})
    result = flops.count_generate(config, 2, 24, 5)
    assert result["confidence"] in ("exact", "traced")
    assert not result["structure"]["gated_mlp"]
    assert_close(result["flops_total"], counted_generate(model, 2, 24, 5), "phi")


def test_unknown_family_is_refused_with_a_reason() -> None:
    config = {**BASE, "model_type": "not_a_transformers_family"}
    result = flops.count_generate(config, 2, 10, 3)
    assert (result["method"], result["confidence"]) == ("none", "unsupported")
    assert "not_a_transformers_family" in result["reason"]
    assert result["flops_total"] is None and result["flops_per_output_token"] is None


def test_without_torch_hand_formulas_are_unverified_and_others_refused(monkeypatch) -> None:
    from llenergymeasure.flops import counting

    monkeypatch.setattr(counting, "_torch_available", lambda: False)
    named = flops.count_generate({**BASE, "model_type": "llama"}, 1, 8, 2)
    assert named["confidence"] == "unverified" and named["flops_total"] > 0 and "not traced" in named["reason"]
    other = flops.count_generate({**BASE, "model_type": "qwen3"}, 1, 8, 2)
    assert other["confidence"] == "unsupported" and other["flops_total"] is None


def test_moe_2n_reference_uses_active_parameters() -> None:
    _, config = build("mixtral", **FAMILIES["mixtral"])
    result = flops.count_generate(config, 2, 8, 3)
    assert result["flops_2n_parameters"] == "params_active"
    assert result["flops_2n_reference"] == 2 * result["params_active"] * 2 * (8 + 3 - 1)
    assert result["params_active"] < result["params_non_embedding"]


@pytest.mark.parametrize("family", ["llama", "mistral", "gpt2", "qwen3"])
def test_static_cache_attends_over_the_whole_cache(family: str) -> None:
    from llenergymeasure.backends.pytorch_compiled import kv_room_tokens

    fields = FAMILIES.get(family, {**BASE, "head_dim": 16})
    model, config = build(family, **fields)
    batch, prompt, new = 2, 10, 5
    cache_len = prompt + kv_room_tokens({"max_new_tokens": 8})  # what pytorch-compiled allocates
    ids = torch.randint(3, 128, (batch, prompt), generator=torch.Generator().manual_seed(1))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
            cache_implementation="static",
            max_cache_len=cache_len,
        )
    static = flops.count_generate(config, batch, prompt, new, static_cache_len=cache_len)
    dynamic = flops.count_generate(config, batch, prompt, new)
    assert_close(static["flops_total"], counter.get_total_flops(), f"{family} static cache")
    assert static["confidence"] == "exact" and static["flops_total"] > dynamic["flops_total"]


def test_extra_projection_flops_are_added_per_processed_token() -> None:
    config = {**BASE, "model_type": "llama"}
    plain = flops.count_generate(config, 2, 16, 4)
    adapted = flops.count_generate(config, 2, 16, 4, extra_flops_per_token=1000)
    assert adapted["flops_prefill"] - plain["flops_prefill"] == 2 * 16 * 1000
    assert adapted["flops_total"] - plain["flops_total"] == 2 * (16 + 3) * 1000
    assert adapted["flops_linear"] - plain["flops_linear"] == 2 * (16 + 3) * 1000


@pytest.mark.parametrize("missing", ["hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size"])
def test_missing_size_field_is_named(missing: str) -> None:
    config = {key: value for key, value in {**BASE, "model_type": "llama"}.items() if key != missing}
    with pytest.raises(flops.FlopsConfigError, match=missing):
        flops.count_generate(config, 1, 8, 2)


@pytest.mark.parametrize("bad", [(0, 8, 2), (1, -1, 2), (1, 8, 0), (1.5, 8, 2)])
def test_non_positive_shape_is_rejected(bad) -> None:
    with pytest.raises(flops.FlopsConfigError, match="positive integer"):
        flops.count_generate({**BASE, "model_type": "llama"}, *bad)


def test_weight_only_quantisation_never_changes_flops() -> None:
    config = {**BASE, "model_type": "llama"}
    plain = flops.count_generate(config, 2, 32, 8)
    weight_only = [name for name, spec in VARIANTS.items() if spec.weight_only]
    assert {"bnb-int8", "bnb-nf4", "gptq-w4a16", "awq-w4a16"} <= set(weight_only)
    for name in weight_only:
        quantised = flops.count_generate(config, 2, 32, 8, quant=name)
        for key in ("flops_prefill", "flops_decode", "flops_total", "flops_attention", "params_total"):
            assert quantised[key] == plain[key], (name, key)
        assert quantised["int_ops_total"] is None
        assert quantised["compute_dtype"] == VARIANTS[name].compute_dtype


def test_w8a8_reports_linear_work_as_integer_ops() -> None:
    config = {**BASE, "model_type": "llama"}
    plain = flops.count_generate(config, 2, 32, 8)
    w8a8 = flops.count_generate(config, 2, 32, 8, quant="w8a8-int8")
    assert w8a8["flops_total"] == plain["flops_total"]
    assert w8a8["int_ops_total"] == plain["flops_linear"] > 0
    assert w8a8["compute_dtype"] == "int8"
    with pytest.raises(flops.FlopsConfigError, match="not-a-method"):
        flops.count_generate(config, 2, 32, 8, quant="not-a-method")


def test_kv_cache_bytes_equal_the_dynamic_cache_after_generate() -> None:
    model, config = build("llama", **BASE)
    ids = torch.randint(3, 128, (2, 20))
    with torch.no_grad():
        out = model(input_ids=ids, past_key_values=DynamicCache(config=model.config), use_cache=True)
    cache = out.past_key_values
    stored = sum((layer.keys.numel() + layer.values.numel()) * layer.keys.element_size() for layer in cache.layers)
    assert flops.kv_cache_bytes(config, 2, 20, 4) == stored
    # sliding layers never hold more than the window
    mistral = {**FAMILIES["mistral"], "model_type": "mistral"}
    assert flops.kv_cache_bytes(mistral, 1, 500, 2) == flops.kv_cache_bytes(mistral, 1, 12, 2)


def test_weight_bytes_at_32_bits_equal_float32_model_bytes() -> None:
    model, config = build("gpt2", **FAMILIES["gpt2"])
    stored = sum(p.numel() * p.element_size() for p in model.parameters())
    assert flops.weight_bytes(config, 32) == stored
    assert flops.weight_bytes(config, 4) == math.ceil(stored / 8)


def test_decode_bytes_count_weights_read_and_mean_kv_cache() -> None:
    config = {**BASE, "model_type": "llama", "tie_word_embeddings": True}
    per_step = flops.decode_bytes_per_step(config, 1, 100, 3, resident_weight_bytes=1e6, kv_bytes_per_element=2)
    kv_mean = (flops.kv_cache_bytes(config, 1, 101, 2) + flops.kv_cache_bytes(config, 1, 102, 2)) / 2
    assert per_step == pytest.approx(1e6 + kv_mean)
    assert flops.decode_bytes_per_step(config, 1, 100, 1, 1e6, 2) is None
    moe = {**FAMILIES["mixtral"], "model_type": "mixtral", "tie_word_embeddings": True}
    few = flops.decode_bytes_per_step(moe, 1, 8, 2, 1e6, 2)
    many = flops.decode_bytes_per_step(moe, 64, 8, 2, 1e6, 2)
    assert few < 1e6 and many > few  # batch 1 touches 2 of 4 experts; batch 64 nearly all


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_pipeline_model_configs_at_the_default_workload(name: str) -> None:
    config = json.loads((REPO_ROOT / "config" / "models" / f"{name}.json").read_text())
    fields = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    model, _ = build(config["model_type"], **fields)
    result = flops.count_generate(config, 4, 64, 8)
    assert_close(result["flops_total"], counted_generate(model, 4, 64, 8), name)
    assert result["confidence"] == "exact"


# ----------------------------------------------------------------------------- annotate


def test_annotate_adds_flops_and_utilisation_columns() -> None:
    pd = pytest.importorskip("pandas")
    config = {**BASE, "model_type": "llama"}
    rows = pd.DataFrame(
        [
            dict(
                batch_size=1,
                prompt_tokens=64,
                output_tokens=8,
                quant="none-bfloat16",
                compute_dtype="bfloat16",
                dtype="bfloat16",
                weight_bytes_memory=2e5,
                ttft_s=1e-3,
                tpot_s=2e-4,
                device_name="NVIDIA H100 80GB HBM3",
                status="ok",
            ),
            dict(
                batch_size=1,
                prompt_tokens=64,
                output_tokens=8,
                quant="none-bfloat16",
                compute_dtype="bfloat16",
                dtype="bfloat16",
                weight_bytes_memory=2e5,
                ttft_s=1e-3,
                tpot_s=2e-4,
                device_name="NVIDIA H100 80GB HBM3",
                status="failed",
            ),
            dict(
                batch_size=4,
                prompt_tokens=64,
                output_tokens=8,
                quant="bnb-nf4",
                compute_dtype="float32",
                dtype="float32",
                weight_bytes_memory=5e4,
                ttft_s=0.01,
                tpot_s=0.002,
                device_name="Intel(R) Xeon(R) CPU",
                status="ok",
            ),
        ]
    )
    out = flops.annotate(rows, config)
    assert set(flops.ANNOTATION_COLUMNS) <= set(out.columns) and len(out) == 3
    expected = flops.count_generate(config, 1, 64, 8)
    assert out.loc[0, "flops_total"] == expected["flops_total"] == out.loc[1, "flops_total"]
    assert out.loc[0, "mfu_prefill"] == pytest.approx(expected["flops_prefill"] / 1e-3 / 989.5e12)
    moved = flops.decode_bytes_per_step(config, 1, 64, 8, 2e5, 2)
    assert out.loc[0, "mbu_decode"] == pytest.approx(moved / 2e-4 / 3350e9)
    assert pd.isna(out.loc[1, "mfu_prefill"]) and pd.isna(
        out.loc[1, "mbu_decode"]
    )  # failed (empty: Float64 NA, the schema type)
    assert pd.isna(out.loc[2, "mfu_prefill"]) and pd.isna(out.loc[2, "mbu_decode"])  # unknown hw
    assert out.loc[2, "flops_total"] == flops.count_generate(config, 4, 64, 8)["flops_total"]
    assert out.loc[0, "flops_method"] == "analytical" and out.loc[0, "flops_confidence"] == "exact"
    assert "FlopCounterMode" in out.loc[0, "flops_reason"] and out.loc[0, "flops_2n_parameters"] == "params_active"
    assert list(rows.columns) == list(out.columns[: len(rows.columns)])  # input columns kept


def test_annotate_reports_integer_ops_only_where_int8_kernels_ran() -> None:
    pd = pytest.importorskip("pandas")
    config = {**BASE, "model_type": "llama"}
    shape = dict(
        batch_size=2,
        prompt_tokens=32,
        output_tokens=4,
        compute_dtype="int8",
        dtype="float16",
        status="ok",
        device_name="cpu",
        ttft_s=0.1,
        tpot_s=0.01,
        weight_bytes_memory=1e5,
    )
    rows = pd.DataFrame(
        [
            {**shape, "quant": "w8a8-int8", "decompressed_at_load": False},
            {**shape, "quant": "w8a8-int8", "decompressed_at_load": True},
            {**shape, "quant": "gptq-w4a16", "decompressed_at_load": False},
        ]
    )
    out = flops.annotate(rows, config)
    linear = flops.count_generate(config, 2, 32, 4)["flops_linear"]
    assert out.loc[0, "int_ops_total"] == linear
    assert out["int_ops_total"].isna().tolist() == [False, True, True]
    with pytest.raises(flops.FlopsConfigError, match="quant 'int3'"):
        flops.annotate(rows.assign(quant="int3"), config)


def test_annotate_counts_compiled_rows_over_their_static_cache_and_keeps_refusals() -> None:
    pd = pytest.importorskip("pandas")
    shape = dict(batch_size=1, prompt_tokens=16, output_tokens=4, quant="none-float32", status="ok")
    rows = pd.DataFrame(
        [
            {**shape, "backend": "pytorch", "backend_settings_json": "{}"},
            {**shape, "backend": "pytorch-compiled", "backend_settings_json": json.dumps({"max_new_tokens": 32})},
        ]
    )
    config = {**BASE, "model_type": "llama"}
    out = flops.annotate(rows, config)
    assert pd.isna(out.loc[0, "flops_static_cache_len"]) and out.loc[1, "flops_static_cache_len"] == 16 + 32
    assert out.loc[1, "flops_total"] == flops.count_generate(config, 1, 16, 4, static_cache_len=48)["flops_total"]
    assert out.loc[1, "flops_total"] > out.loc[0, "flops_total"]
    with pytest.raises(flops.FlopsConfigError, match="max_new_tokens"):
        flops.annotate(rows.assign(backend_settings_json="{}"), config)
    refused = flops.annotate(rows, {**BASE, "model_type": "not_a_transformers_family"})
    assert (refused["flops_confidence"] == "unsupported").all() and refused["flops_total"].isna().all()
    assert refused["flops_reason"].str.contains("not_a_transformers_family").all()


# ----------------------------------------------------------------------------- command line


def run_flops_command(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="llenergymeasure")
    flops.register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["flops", *argv])
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_json_matches_the_library(capsys) -> None:
    path = REPO_ROOT / "config" / "models" / "llama-3-8b.json"
    code, out, _ = run_flops_command(
        ["--model-config", str(path), "--batch", "2", "--prompt", "512", "--new", "64", "--quant", "bnb-nf4", "--json"],
        capsys,
    )
    assert code == 0
    printed = json.loads(out)
    expected = flops.count_generate(json.loads(path.read_text()), 2, 512, 64, quant="bnb-nf4")
    required = (
        "flops_prefill",
        "flops_decode",
        "flops_total",
        "flops_per_output_token",
        "flops_attention",
        "flops_lm_head",
        "flops_2n_reference",
        "params_total",
        "params_non_embedding",
        "params_active",
        "method",
        "confidence",
    )
    for key in required:
        assert printed[key] == expected[key], key


def test_cli_table_is_human_readable(capsys) -> None:
    path = REPO_ROOT / "config" / "models" / "mixtral-8x7b.json"
    code, out, _ = run_flops_command(
        ["--model-config", str(path), "--batch", "1", "--prompt", "128", "--new", "16"], capsys
    )
    assert code == 0
    assert "flops_total" in out and "params_active" in out and "2N formula (params_active) error" in out


@pytest.mark.parametrize(
    "argv, argument",
    [
        (
            ["--model-config", "/nonexistent/config.json", "--batch", "1", "--prompt", "8", "--new", "2"],
            "--model-config",
        ),
        (["--batch", "0", "--prompt", "8", "--new", "2"], "--batch"),
        (["--batch", "1", "--prompt", "-3", "--new", "2"], "--prompt"),
        (["--batch", "1", "--prompt", "8", "--new", "two"], "--new"),
        (["--batch", "1", "--prompt", "8", "--new", "2", "--quant", "int3"], "--quant"),
    ],
)
def test_cli_bad_input_is_one_line_naming_the_argument(argv, argument, capsys) -> None:
    if "--model-config" not in argv:
        argv = ["--model-config", str(REPO_ROOT / "config" / "models" / "tiny-llama.json"), *argv]
    code, out, err = run_flops_command(argv, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and argument in err


def test_cli_config_without_required_field(tmp_path, capsys) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    code, _, err = run_flops_command(
        ["--model-config", str(path), "--batch", "1", "--prompt", "8", "--new", "2"], capsys
    )
    assert code == 2 and "--model-config" in err and "num_hidden_layers" in err


def test_llenergymeasure_command_runs_the_flops_subcommand() -> None:
    import os
    import subprocess

    path = REPO_ROOT / "config" / "models" / "qwen2-0.5b.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "workflow" / "scripts")}
    command = [
        sys.executable,
        "-m",
        "llenergymeasure.cli",
        "flops",
        "--model-config",
        str(path),
        "--batch",
        "1",
        "--prompt",
        "4096",
        "--new",
        "1",
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["flops_total"] == flops.count_generate(json.loads(path.read_text()), 1, 4096, 1)["flops_total"]
    bad = subprocess.run([*command[:-1], "--quant", "int3"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "--quant" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_cli_unsupported_config_exits_non_zero_with_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**BASE, "model_type": "not_a_transformers_family"}))
    code, out, err = run_flops_command(
        ["--model-config", str(path), "--batch", "1", "--prompt", "8", "--new", "2"], capsys
    )
    assert code == flops.cli.UNSUPPORTED_EXIT and out == ""
    assert len(err.strip().splitlines()) == 1 and "unsupported" in err and "not_a_transformers_family" in err
    code, out, err = run_flops_command(
        ["--model-config", str(path), "--batch", "1", "--prompt", "8", "--new", "2", "--json"], capsys
    )
    assert code == flops.cli.UNSUPPORTED_EXIT and json.loads(out)["confidence"] == "unsupported"
