"""Exact analytical FLOPs for autoregressive generation (`generate` with a KV cache).

Pure Python (no torch): reads a Hugging Face `config.json` dictionary and counts the
matrix-multiply FLOPs that `model.generate(max_new_tokens=T)` executes in transformers 5
with eager attention and eager MoE experts, in PyTorch's `FlopCounterMode` convention
(2 FLOPs per multiply-accumulate; element-wise work such as norms, activations, softmax,
bias adds and residuals is not counted). See docs/flops.md for the formulae and sources.

The run it models: one prefill forward over S prompt tokens (LM head on the last position
only, `logits_to_keep=1`), then T-1 decode forwards of one token each; decode step t attends
to S+t keys, or min(S+t, W) on a sliding-window layer (the dynamic cache keeps W-1 keys).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llenergymeasure import hardware
from llenergymeasure.variants import VARIANTS

# Families whose count was verified op-for-op against torch.utils.flop_counter.FlopCounterMode
# on tiny random-weight transformers models (tests/test_flops.py).
VERIFIED_FAMILIES: tuple[str, ...] = (
    "llama", "mistral", "qwen2", "gemma", "phi3", "gpt2", "mixtral", "qwen2_moe",
)

# Behavioural fields a family's transformers config class fills in when config.json omits
# them (transformers 5.17 defaults). Size fields are never defaulted: they are required.
_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"num_key_value_heads": None, "tie_word_embeddings": False},
    "mistral": {"num_key_value_heads": 8, "tie_word_embeddings": False, "sliding_window": 4096},
    "qwen2": {
        "num_key_value_heads": 32, "tie_word_embeddings": False, "use_sliding_window": False,
        "sliding_window": 4096, "max_window_layers": 28,
    },
    "gemma": {"num_key_value_heads": 16, "tie_word_embeddings": True, "head_dim": 256},
    "phi3": {"num_key_value_heads": None, "tie_word_embeddings": False, "sliding_window": None},
    "gpt2": {"tie_word_embeddings": True},
    "mixtral": {
        "num_key_value_heads": 8, "tie_word_embeddings": False, "sliding_window": None,
        "num_experts_per_tok": 2, "num_local_experts": 8,
    },
    "qwen2_moe": {
        "num_key_value_heads": 16, "tie_word_embeddings": False, "use_sliding_window": False,
        "sliding_window": 4096, "max_window_layers": 28, "decoder_sparse_step": 1,
        "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
        "num_experts_per_tok": 4, "num_experts": 60, "mlp_only_layers": [], "qkv_bias": True,
    },
}

# GPT-2 spells the standard fields differently (transformers' attribute_map).
_GPT2_FIELD_NAMES = {
    "hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
    "max_position_embeddings": "n_positions",
}

# Config fields that signal structure the generic (Llama-layout) count cannot express.
_UNMODELLED_MARKERS: dict[str, str] = {
    "is_encoder_decoder": "encoder-decoder model",
    "kv_lora_rank": "multi-head latent attention (low-rank KV projection)",
    "q_lora_rank": "low-rank query projection",
    "num_experts": "mixture of experts with an unverified routing layout",
    "num_local_experts": "mixture of experts with an unverified routing layout",
    "n_routed_experts": "mixture of experts with an unverified routing layout",
    "attention_chunk_size": "chunked attention",
    "linear_attn_config": "linear attention",
    "ssm_cfg": "state-space layers",
    "mamba_d_state": "state-space layers",
    "text_config": "multimodal wrapper (count its text_config instead)",
}

_KNOWN_LAYER_TYPES = ("full_attention", "sliding_attention")


class FlopsConfigError(ValueError):
    """A config or argument the counter cannot use; the message names the field."""


@dataclass(frozen=True)
class MlpSpec:
    """One decoder layer's feed-forward block."""

    intermediate: int = 0  # dense MLP width (0 for a pure MoE block)
    gated: bool = True  # SwiGLU/GeGLU: gate, up, down (3 matrices); else fc, proj (2)
    bias: bool = False
    experts: int = 0  # routed experts (0: dense)
    top_k: int = 0
    expert_intermediate: int = 0
    shared_intermediate: int = 0  # Qwen2-MoE shared expert (gated MLP), 0 if none
    shared_gate: bool = False  # Qwen2-MoE sigmoid gate on the shared expert (hidden -> 1)

    def macs_per_token(self, hidden: int) -> dict[str, int]:
        """Multiply-accumulates per token, split into quantisable linear work and routing."""
        dense = (3 if self.gated else 2) * hidden * self.intermediate
        routed = self.top_k * 3 * hidden * self.expert_intermediate
        shared = 3 * hidden * self.shared_intermediate
        router = hidden * self.experts if self.experts else 0
        gate = hidden if self.shared_gate else 0
        return {"linear": dense + routed + shared, "router": router + gate}

    def params(self, hidden: int, active_only: bool = False) -> int:
        """Weights and biases of the block (active_only: top-k routed experts instead of all)."""
        dense = (3 if self.gated else 2) * hidden * self.intermediate
        if self.bias and self.intermediate:
            dense += (2 * self.intermediate if self.gated else self.intermediate) + hidden
        experts = self.top_k if active_only else self.experts
        routed = experts * 3 * hidden * self.expert_intermediate
        shared = 3 * hidden * self.shared_intermediate
        router = hidden * self.experts + (hidden if self.shared_gate else 0)
        return dense + routed + shared + router


@dataclass(frozen=True)
class LayerSpec:
    window: int | None  # sliding-window length W, None for full attention
    mlp: MlpSpec


@dataclass(frozen=True)
class Architecture:
    """The shape facts that determine FLOPs and parameters, normalised across families."""

    model_type: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    rotary_pairs: int  # length of RoPE's inv_freq (0: no rotary embedding)
    position_embeddings: int  # learned absolute positions (GPT-2), else 0
    qkv_bias: bool
    o_bias: bool
    norm_params_per_layer: int
    final_norm_params: int
    layers: tuple[LayerSpec, ...]
    method: str  # "analytical" | "analytical-generic" | "2n-fallback"
    confidence: str  # "exact" | "estimate"
    reason: str | None

    def attention_macs_per_token(self) -> int:
        q_out = self.heads * self.head_dim
        kv_out = self.kv_heads * self.head_dim
        return self.hidden * (q_out + 2 * kv_out) + q_out * self.hidden

    def attention_params(self) -> int:
        q_out = self.heads * self.head_dim
        kv_out = self.kv_heads * self.head_dim
        bias = (q_out + 2 * kv_out if self.qkv_bias else 0) + (self.hidden if self.o_bias else 0)
        return self.attention_macs_per_token() + bias


# ----------------------------------------------------------------------------- parsing


def _field(cfg: dict, name: str, defaults: dict, required: bool = True) -> Any:
    """A config value, the family default, or a FlopsConfigError naming the field."""
    for key in (name, _GPT2_FIELD_NAMES.get(name)):
        if key and key in cfg:
            return cfg[key]
    if name in defaults:
        return defaults[name]
    if required:
        raise FlopsConfigError(f"model config lacks '{name}', which the FLOP count needs")
    return None


def _positive_int(cfg: dict, name: str, defaults: dict) -> int:
    value = _field(cfg, name, defaults)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise FlopsConfigError(f"model config field '{name}' must be a positive integer, got {value!r}")
    return value


def _rotary_pairs(cfg: dict, head_dim: int) -> int:
    """Length of RoPE's inverse-frequency vector: ceil(int(head_dim * partial_factor) / 2)."""
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    factor = rope.get("partial_rotary_factor") if isinstance(rope, dict) else None
    if factor is None:
        factor = cfg.get("partial_rotary_factor", 1.0)
    rotary_dim = int(head_dim * float(factor))
    return (rotary_dim + 1) // 2


def _layer_windows(cfg: dict, family: str, layers: int, defaults: dict) -> list[int | None]:
    """Per-layer sliding window as the dynamic cache applies it (None: full attention)."""
    layer_types = cfg.get("layer_types")
    if family in ("qwen2", "qwen2_moe"):
        use_sliding = bool(_field(cfg, "use_sliding_window", defaults))
        window = _field(cfg, "sliding_window", defaults) if use_sliding else None
        if layer_types is None:
            max_window_layers = _field(cfg, "max_window_layers", defaults)
            if family == "qwen2":
                sliding = [window is not None and i >= max_window_layers for i in range(layers)]
            else:
                sliding = [
                    use_sliding and bool((i + 1) % 2) and i < max_window_layers for i in range(layers)
                ]
            layer_types = ["sliding_attention" if s else "full_attention" for s in sliding]
        elif any(t == "sliding_attention" for t in layer_types) and not window:
            window = cfg.get("sliding_window")
    elif family in ("mistral", "mixtral", "phi3"):
        window = _field(cfg, "sliding_window", defaults)
        layer_types = ["sliding_attention" if window is not None else "full_attention"] * layers
    else:  # the generic layout: transformers' DynamicCache infers sliding layers the same way
        window = cfg.get("sliding_window")
        if layer_types is None:
            layer_types = ["sliding_attention" if window is not None else "full_attention"] * layers
    if len(layer_types) < layers:
        raise FlopsConfigError(
            f"model config 'layer_types' lists {len(layer_types)} layers, 'num_hidden_layers' is {layers}"
        )
    windows: list[int | None] = []
    for kind in layer_types[:layers]:
        if kind == "sliding_attention":
            if not isinstance(window, int) or window <= 0:
                raise FlopsConfigError(
                    f"model config has sliding-attention layers but 'sliding_window' is {window!r}"
                )
            windows.append(window)
        else:
            windows.append(None)
    return windows


def parse_architecture(hf_config: dict) -> Architecture:
    """Normalise a Hugging Face config dictionary into the facts the count needs.

    Raises FlopsConfigError (naming the field) when a required size field is missing."""
    if not isinstance(hf_config, dict):
        raise FlopsConfigError("model config must be a JSON object (a Hugging Face config.json)")
    family = str(hf_config.get("model_type") or "")
    defaults = _FAMILY_DEFAULTS.get(family, {})
    verified = family in VERIFIED_FAMILIES
    reasons: list[str] = []

    markers = [] if verified else [
        note for key, note in _UNMODELLED_MARKERS.items() if hf_config.get(key) not in (None, False, 0, "")
    ]
    unknown_types = sorted(set(hf_config.get("layer_types") or []) - set(_KNOWN_LAYER_TYPES))
    if unknown_types:
        markers.append(f"layer types {unknown_types}")

    hidden = _positive_int(hf_config, "hidden_size", defaults)
    layers = _positive_int(hf_config, "num_hidden_layers", defaults)
    heads = _positive_int(hf_config, "num_attention_heads", defaults)
    vocab = _positive_int(hf_config, "vocab_size", defaults)
    kv_heads = _field(hf_config, "num_key_value_heads", defaults, required=False) or heads
    if family == "gpt2":
        head_dim = hidden // heads
    else:
        head_dim = _field(hf_config, "head_dim", defaults, required=False) or hidden // heads
    if not isinstance(kv_heads, int) or kv_heads <= 0 or heads % kv_heads:
        raise FlopsConfigError(
            f"model config 'num_key_value_heads' ({kv_heads!r}) must divide 'num_attention_heads' ({heads})"
        )
    tied = bool(_field(hf_config, "tie_word_embeddings", defaults, required=False))

    if family == "gpt2":
        inner = hf_config.get("n_inner") or 4 * hidden
        mlp = MlpSpec(intermediate=inner, gated=False, bias=True)
        windows: list[int | None] = [None] * layers
        layer_specs = tuple(LayerSpec(None, mlp) for _ in range(layers))
        return Architecture(
            model_type=family, hidden=hidden, heads=heads, kv_heads=heads, head_dim=head_dim,
            vocab=vocab, tied=tied, rotary_pairs=0,
            position_embeddings=_positive_int(hf_config, "max_position_embeddings", defaults),
            qkv_bias=True, o_bias=True, norm_params_per_layer=4 * hidden, final_norm_params=2 * hidden,
            layers=layer_specs, method="analytical", confidence="exact", reason=None,
        )

    if family == "mixtral":
        experts = _positive_int(hf_config, "num_local_experts", defaults)
        moe = MlpSpec(
            experts=experts, top_k=_positive_int(hf_config, "num_experts_per_tok", defaults),
            expert_intermediate=_positive_int(hf_config, "intermediate_size", defaults),
        )
        mlps = [moe] * layers
    elif family == "qwen2_moe":
        only_dense = set(_field(hf_config, "mlp_only_layers", defaults) or [])
        step = _positive_int(hf_config, "decoder_sparse_step", defaults)
        experts = _field(hf_config, "num_experts", defaults)
        moe = MlpSpec(
            experts=experts, top_k=_positive_int(hf_config, "num_experts_per_tok", defaults),
            expert_intermediate=_positive_int(hf_config, "moe_intermediate_size", defaults),
            shared_intermediate=_positive_int(hf_config, "shared_expert_intermediate_size", defaults),
            shared_gate=True,
        )
        mlps = []
        for i in range(layers):
            if i not in only_dense and experts > 0 and (i + 1) % step == 0:
                mlps.append(moe)
            else:
                mlps.append(MlpSpec(intermediate=_positive_int(hf_config, "intermediate_size", defaults)))
    else:
        intermediate = _positive_int(hf_config, "intermediate_size", defaults)
        mlp_bias = bool(hf_config.get("mlp_bias", False)) if family == "llama" or not verified else False
        mlps = [MlpSpec(intermediate=intermediate, gated=True, bias=mlp_bias)] * layers

    if family == "qwen2":
        qkv_bias, o_bias = True, False
    elif family == "qwen2_moe":
        qkv_bias, o_bias = bool(_field(hf_config, "qkv_bias", defaults)), False
    elif family in ("phi3", "mistral", "mixtral"):
        qkv_bias = o_bias = False
    else:  # llama, gemma and the generic layout
        qkv_bias = o_bias = bool(hf_config.get("attention_bias", False))

    if family in ("mistral", "mixtral", "phi3", "qwen2", "qwen2_moe"):
        windows = _layer_windows(hf_config, family, layers, defaults)
    elif verified:
        windows = [None] * layers
        if hf_config.get("sliding_window"):
            reasons.append(
                f"'sliding_window' is set but model_type '{family}' is counted with full attention; "
                "transformers may still cap its cache at that window"
            )
    else:
        windows = _layer_windows(hf_config, family, layers, defaults) if not unknown_types else [None] * layers

    if verified and not reasons and not unknown_types:
        method, confidence, reason = "analytical", "exact", None
    elif markers:
        method, confidence = "2n-fallback", "estimate"
        reason = (
            f"model_type '{family or '?'}' has structure the analytical count does not model "
            f"({'; '.join(markers)}); FLOPs are 2 x non-embedding parameters (Llama layout) x tokens"
        )
    elif not verified:
        method, confidence = "analytical-generic", "estimate"
        reason = (
            f"model_type '{family or '?'}' is not a family verified against FlopCounterMode "
            f"({', '.join(VERIFIED_FAMILIES)}); counted with the Llama layout (gated 3-matrix MLP, "
            "rotary embedding, eager attention over the KV cache)"
        )
    else:
        method, confidence, reason = "analytical", "estimate", "; ".join(reasons)

    return Architecture(
        model_type=family, hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        vocab=vocab, tied=tied, rotary_pairs=_rotary_pairs(hf_config, head_dim), position_embeddings=0,
        qkv_bias=qkv_bias, o_bias=o_bias, norm_params_per_layer=2 * hidden, final_norm_params=hidden,
        layers=tuple(LayerSpec(w, m) for w, m in zip(windows, mlps)),
        method=method, confidence=confidence, reason=reason,
    )


# ----------------------------------------------------------------------------- counting


def _sum_min(lo: int, hi: int, cap: int | None) -> int:
    """Sum of min(n, cap) for n = lo..hi (0 if hi < lo; cap None means no cap)."""
    if hi < lo:
        return 0
    if cap is None or hi <= cap:
        return (lo + hi) * (hi - lo + 1) // 2
    if lo > cap:
        return cap * (hi - lo + 1)
    return (lo + cap) * (cap - lo + 1) // 2 + cap * (hi - cap)


def parameter_counts(arch: Architecture) -> dict[str, int]:
    """Total, non-embedding (Kaplan: no token/position embeddings, no LM head) and active."""
    embedding = arch.vocab * arch.hidden
    head = 0 if arch.tied else arch.vocab * arch.hidden
    positions = arch.position_embeddings * arch.hidden
    body = sum(
        arch.attention_params() + layer.mlp.params(arch.hidden) + arch.norm_params_per_layer
        for layer in arch.layers
    ) + arch.final_norm_params
    active = sum(
        arch.attention_params() + layer.mlp.params(arch.hidden, active_only=True)
        + arch.norm_params_per_layer
        for layer in arch.layers
    ) + arch.final_norm_params
    return {
        "params_total": embedding + head + positions + body,
        "params_non_embedding": body,
        "params_active": active,
        "params_embedding": embedding + positions,
        "params_lm_head": arch.vocab * arch.hidden,
    }


def _validate_shape(batch: int, prompt: int, new: int) -> None:
    for name, value in (("batch", batch), ("prompt", prompt), ("new", new)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise FlopsConfigError(f"{name} must be a positive integer, got {value!r}")


def _quant_spec(quant: str | None):
    if quant is None:
        return None
    if quant not in VARIANTS:
        raise FlopsConfigError(f"quant '{quant}' is not a known variant; allowed: {', '.join(VARIANTS)}")
    return VARIANTS[quant]


def count_generate(
    hf_config: dict, batch: int, prompt: int, new: int, quant: str | None = None
) -> dict[str, Any]:
    """FLOPs of `generate(max_new_tokens=new)` on `batch` sequences of `prompt` tokens.

    Weight-only quantisation never changes the count; W8A8 reports its linear-layer work
    again as `int_ops_total`. Raises FlopsConfigError on bad input (message names the field)."""
    _validate_shape(batch, prompt, new)
    spec = _quant_spec(quant)
    arch = parse_architecture(hf_config)
    params = parameter_counts(arch)
    processed = prompt + new - 1  # positions forwarded: the last new token is never fed back
    flops_2n = 2 * params["params_non_embedding"] * batch * processed

    if arch.method == "2n-fallback":
        prefill = 2 * params["params_non_embedding"] * batch * prompt
        result = {
            "flops_prefill": prefill, "flops_decode": flops_2n - prefill, "flops_total": flops_2n,
            "flops_attention": None, "flops_attention_causal": None, "flops_lm_head": None,
            "flops_linear": None, "flops_router": None, "flops_rotary": None,
        }
    else:
        result = _count_analytical(arch, batch, prompt, new)

    # W8A8: the quantised decoder linears run as int8 ops; LM head, router and attention stay float.
    # Weight-only methods run no integer matmuls: empty, like the schema's column.
    weight_only = spec.weight_only if spec else True
    int_ops = None if weight_only else result["flops_linear"]

    result.update(
        flops_per_output_token=result["flops_total"] / (batch * new),
        flops_2n_reference=flops_2n,
        params_total=params["params_total"],
        params_non_embedding=params["params_non_embedding"],
        params_active=params["params_active"],
        method=arch.method,
        confidence=arch.confidence,
        reason=arch.reason,
        int_ops_total=int_ops,
        compute_dtype=spec.compute_dtype if spec else None,
        quant=quant,
        model_type=arch.model_type,
        batch=batch, prompt=prompt, new=new,
    )
    return result


def _count_analytical(arch: Architecture, batch: int, prompt: int, new: int) -> dict[str, int]:
    hidden = arch.hidden
    attn_macs = arch.attention_macs_per_token()
    per_head = 4 * arch.heads * arch.head_dim  # QK^T and AV: 2 matmuls x 2 FLOPs per MAC
    linear_pre = linear_dec = router_pre = router_dec = 0
    attn_pre = attn_dec = causal_pre = 0
    decode_steps = new - 1
    for layer in arch.layers:
        mlp = layer.mlp.macs_per_token(hidden)
        linear_pre += 2 * batch * prompt * (attn_macs + mlp["linear"])
        linear_dec += 2 * batch * decode_steps * (attn_macs + mlp["linear"])
        router_pre += 2 * batch * prompt * mlp["router"]
        router_dec += 2 * batch * decode_steps * mlp["router"]
        # prefill: the kernel multiplies the full S x S score matrix (mask applied afterwards)
        attn_pre += batch * per_head * prompt * prompt
        causal_pre += batch * per_head * _sum_min(1, prompt, layer.window)
        # decode step t (1..T-1) attends to min(S + t, W) cached keys
        attn_dec += batch * per_head * _sum_min(prompt + 1, prompt + decode_steps, layer.window)
    rotary_pre = 2 * batch * arch.rotary_pairs * prompt
    rotary_dec = 2 * batch * arch.rotary_pairs * decode_steps
    head_pre = 2 * batch * hidden * arch.vocab  # logits_to_keep=1: last prompt position only
    head_dec = 2 * batch * decode_steps * hidden * arch.vocab
    prefill = linear_pre + router_pre + attn_pre + rotary_pre + head_pre
    decode = linear_dec + router_dec + attn_dec + rotary_dec + head_dec
    return {
        "flops_prefill": prefill,
        "flops_decode": decode,
        "flops_total": prefill + decode,
        "flops_attention": attn_pre + attn_dec,
        "flops_attention_prefill": attn_pre,
        "flops_attention_causal": causal_pre + attn_dec,
        "flops_lm_head": head_pre + head_dec,
        "flops_linear": linear_pre + linear_dec,
        "flops_router": router_pre + router_dec,
        "flops_rotary": rotary_pre + rotary_dec,
    }


# ----------------------------------------------------------------------------- bytes (MBU)


def kv_cache_bytes(hf_config: dict, batch: int, context_tokens: int, bytes_per_element: float) -> int:
    """Bytes of keys and values for `context_tokens` positions (sliding layers capped at W)."""
    arch = parse_architecture(hf_config)
    per_token = 2 * arch.kv_heads * arch.head_dim * bytes_per_element
    total = sum(
        per_token * (context_tokens if layer.window is None else min(context_tokens, layer.window))
        for layer in arch.layers
    )
    return int(math.ceil(batch * total))


def weight_bytes(hf_config: dict, bits_per_weight: float) -> int:
    """Bytes of all parameters stored at `bits_per_weight` (no quantisation scales counted)."""
    params = parameter_counts(parse_architecture(hf_config))["params_total"]
    return int(math.ceil(params * bits_per_weight / 8))


def decode_bytes_per_step(
    hf_config: dict, batch: int, prompt: int, new: int,
    resident_weight_bytes: float, kv_bytes_per_element: float,
) -> float | None:
    """Mean bytes read from memory per decode step: weights plus the KV cache attended to.

    Weights: the resident bytes minus the parts a decode step does not read, assuming the same
    bytes per parameter throughout: an untied input-embedding table (only `batch` rows are
    gathered) and, for MoE, the experts no token is routed to (uniform routing: a layer touches
    E * (1 - (1 - k/E)^batch) experts on average). None without a decode step."""
    if new < 2:
        return None
    arch = parse_architecture(hf_config)
    params = parameter_counts(arch)
    unread = 0.0 if arch.tied else float(params["params_embedding"])
    for layer in arch.layers:
        mlp = layer.mlp
        if mlp.experts:
            touched = mlp.experts * (1.0 - (1.0 - mlp.top_k / mlp.experts) ** batch)
            unread += (mlp.experts - touched) * 3 * arch.hidden * mlp.expert_intermediate
    weights_read = resident_weight_bytes * (1.0 - unread / params["params_total"])
    steps = new - 1
    kv_per_token = 2 * arch.kv_heads * arch.head_dim * kv_bytes_per_element * batch
    kv_read = sum(
        kv_per_token * _sum_min(prompt + 1, prompt + steps, layer.window) for layer in arch.layers
    ) / steps
    return weights_read + kv_read


# ----------------------------------------------------------------------------- annotate rows

_DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "half": 2, "bfloat16": 2, "bf16": 2}

ANNOTATION_COLUMNS: tuple[str, ...] = (
    "flops_prefill", "flops_decode", "flops_total", "flops_per_output_token", "flops_attention",
    "flops_attention_causal", "flops_lm_head", "flops_2n_reference", "flops_method",
    "flops_confidence", "int_ops_total", "params_total", "params_non_embedding", "params_active",
    "mfu_prefill", "mbu_decode",
)
_INT_COLUMNS = (
    "flops_prefill", "flops_decode", "flops_total", "flops_attention", "flops_attention_causal",
    "flops_lm_head", "flops_2n_reference", "int_ops_total", "params_total",
    "params_non_embedding", "params_active",
)


def _as_int(value: Any) -> int | None:
    try:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _is_true(value: Any) -> bool:
    """True for Python or NumPy True only (missing values and NA are not true)."""
    return value is True or (type(value).__name__ == "bool_" and bool(value))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def annotate(rows, hf_config: dict):
    """Add the FLOP columns, prefill MFU and decode MBU to measured rows (a pandas DataFrame).

    Failed rows keep their analytical FLOPs (when their shape is known) but get empty MFU/MBU;
    so do rows on hardware that config/hardware.yaml does not list."""
    import pandas as pd

    out = rows.copy()
    cache: dict[tuple, dict] = {}
    records: list[dict[str, Any]] = []
    for row in out.to_dict("records"):
        batch = _as_int(row.get("batch_size"))
        prompt = _as_int(row.get("prompt_tokens"))
        new = _as_int(row.get("output_tokens"))
        quant = _text(row.get("quant"))
        record: dict[str, Any] = {name: None for name in ANNOTATION_COLUMNS}
        if batch and prompt and new and batch > 0 and prompt > 0 and new > 0:
            key = (batch, prompt, new, quant)
            if key not in cache:
                cache[key] = count_generate(hf_config, batch, prompt, new, quant)
            counted = cache[key]
            for name in ANNOTATION_COLUMNS:
                if name in counted:
                    record[name] = counted[name]
            record["flops_method"] = counted["method"]
            record["flops_confidence"] = counted["confidence"]
            if _is_true(row.get("decompressed_at_load")):
                record["int_ops_total"] = None  # the backend expanded the weights: float matmuls ran
            if row.get("status") == "ok":
                record["mfu_prefill"] = _row_mfu(row, counted)
                record["mbu_decode"] = _row_mbu(row, hf_config, batch, prompt, new)
        records.append(record)
    added = pd.DataFrame.from_records(records, index=out.index, columns=list(ANNOTATION_COLUMNS))
    for name in ANNOTATION_COLUMNS:
        if name in _INT_COLUMNS:
            out[name] = pd.array(added[name].tolist(), dtype="Int64")
        elif name in ("flops_method", "flops_confidence"):
            out[name] = added[name].astype("string")
        else:
            out[name] = pd.to_numeric(added[name], errors="coerce").astype("float64")
    # the architecture family, for per-family analyses (llama, gpt2, mixtral, ...)
    out["model_family"] = pd.Series(str(hf_config.get("model_type") or "unknown"), index=out.index, dtype="string")
    return out


def _row_mfu(row: dict, counted: dict) -> float | None:
    seconds = _as_positive_float(row.get("ttft_s"))
    device = _text(row.get("device_name"))
    dtype = _text(row.get("compute_dtype")) or _text(row.get("dtype"))
    if seconds is None or device is None or dtype is None or counted["flops_prefill"] is None:
        return None
    return hardware.mfu(counted["flops_prefill"], seconds, device, dtype)


def _row_mbu(row: dict, hf_config: dict, batch: int, prompt: int, new: int) -> float | None:
    seconds = _as_positive_float(row.get("tpot_s"))
    device = _text(row.get("device_name"))
    kv_dtype = _text(row.get("dtype"))
    if kv_dtype not in _DTYPE_BYTES:
        kv_dtype = _text(row.get("compute_dtype"))
    resident = _as_positive_float(row.get("weight_bytes_memory"))
    if seconds is None or device is None or kv_dtype not in _DTYPE_BYTES or resident is None:
        return None
    moved = decode_bytes_per_step(hf_config, batch, prompt, new, resident, _DTYPE_BYTES[kv_dtype])
    if moved is None:
        return None
    return hardware.mbu(moved, seconds, device)


# ----------------------------------------------------------------------------- command line


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `llenergymeasure flops`."""
    parser = subparsers.add_parser(
        "flops",
        help="exact analytical FLOPs of generate() for a Hugging Face config.json",
        description="Count the FLOPs of generate(max_new_tokens=NEW) on BATCH prompts of PROMPT tokens.",
    )
    parser.add_argument("--model-config", required=True, metavar="PATH", help="a Hugging Face config.json")
    parser.add_argument("--batch", required=True, metavar="B", help="sequences per generate call")
    parser.add_argument("--prompt", required=True, metavar="S", help="prompt tokens per sequence")
    parser.add_argument("--new", required=True, metavar="T", help="new tokens per sequence")
    parser.add_argument("--quant", default=None, metavar="METHOD", help=f"variant name ({', '.join(VARIANTS)})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run_cli)


def _cli_error(message: str) -> int:
    print(f"llenergymeasure flops: error: {message}", file=sys.stderr)
    return 2


def run_cli(args: argparse.Namespace) -> int:
    """Validate the arguments (each error names its argument, exit code 2), count, print."""
    sizes: dict[str, int] = {}
    for name in ("batch", "prompt", "new"):
        raw = getattr(args, name)
        try:
            value = int(str(raw).strip())
        except ValueError:
            value = 0
        if value <= 0:
            return _cli_error(f"--{name}: must be a positive integer, got '{raw}'")
        sizes[name] = value
    if args.quant is not None and args.quant not in VARIANTS:
        return _cli_error(f"--quant: '{args.quant}' is not a known variant; allowed: {', '.join(VARIANTS)}")
    path = Path(args.model_config)
    if not path.is_file():
        return _cli_error(f"--model-config: no such file '{path}'")
    try:
        hf_config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _cli_error(f"--model-config: '{path}' is not readable JSON ({exc})")
    try:
        result = count_generate(hf_config, sizes["batch"], sizes["prompt"], sizes["new"], args.quant)
    except FlopsConfigError as exc:
        return _cli_error(f"--model-config: {exc}")
    if args.json:
        print(json.dumps({"model_config": str(path), **result}, sort_keys=True))
    else:
        print(format_table(result, str(path)))
    return 0


def format_table(result: dict[str, Any], source: str = "") -> str:
    """A human-readable summary of a count_generate result."""
    quant = result.get("quant") or "none"
    lines = [
        f"{source}  model_type={result['model_type'] or '?'}  batch={result['batch']}  "
        f"prompt={result['prompt']}  new={result['new']}  quant={quant}",
        f"method={result['method']}  confidence={result['confidence']}"
        + (f"  compute_dtype={result['compute_dtype']}" if result.get("compute_dtype") else ""),
    ]
    if result.get("reason"):
        lines.append(f"reason: {result['reason']}")
    rows = [
        "flops_prefill", "flops_decode", "flops_total", "flops_per_output_token", "flops_attention",
        "flops_attention_causal", "flops_lm_head", "flops_2n_reference", "int_ops_total",
        "params_total", "params_non_embedding", "params_active",
    ]
    width = max(len(name) for name in rows)
    for name in rows:
        value = result.get(name)
        if value is None:
            shown = "-"
        elif isinstance(value, float) and not value.is_integer():
            shown = f"{value:.6g}"
        else:
            shown = f"{int(value):,}"
            if abs(value) >= 1e6:
                shown += f"  ({value:.4g})"
        lines.append(f"  {name:<{width}}  {shown}")
    exact = result["flops_total"]
    if exact:
        lines.append(f"  2N formula error vs this count: {100 * (result['flops_2n_reference'] / exact - 1):+.2f}%")
    return "\n".join(lines)
