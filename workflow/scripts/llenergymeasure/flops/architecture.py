"""The hand-written FLOP model: a Hugging Face config dictionary normalised into shape facts.

Pure Python (no torch). The eight families in VERIFIED_FAMILIES have hand formulas (see
docs/flops.md); they are the analytical cross-check of the count read from the model itself
(`structure`) and traced (`tracing`). Other families are parsed with the Llama layout only
for the byte estimates behind MBU, never for a FLOP count that is reported as exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llenergymeasure.errors import ConfigError

from .families import FAMILY_DEFAULTS, GPT2_FIELD_NAMES, KNOWN_LAYER_TYPES, UNMODELLED_MARKERS, VERIFIED_FAMILIES


class FlopsConfigError(ConfigError):
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
    for key in (name, GPT2_FIELD_NAMES.get(name)):
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
                sliding = [use_sliding and bool((i + 1) % 2) and i < max_window_layers for i in range(layers)]
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
                raise FlopsConfigError(f"model config has sliding-attention layers but 'sliding_window' is {window!r}")
            windows.append(window)
        else:
            windows.append(None)
    return windows


def _gpt2_architecture(
    cfg: dict, defaults: dict, hidden: int, layers: int, heads: int, vocab: int, tied: bool
) -> Architecture:
    """GPT-2: learned positions, a non-gated MLP with biases, two norms with biases per layer."""
    mlp = MlpSpec(intermediate=cfg.get("n_inner") or 4 * hidden, gated=False, bias=True)
    return Architecture(
        model_type="gpt2",
        hidden=hidden,
        heads=heads,
        kv_heads=heads,
        head_dim=hidden // heads,
        vocab=vocab,
        tied=tied,
        rotary_pairs=0,
        position_embeddings=_positive_int(cfg, "max_position_embeddings", defaults),
        qkv_bias=True,
        o_bias=True,
        norm_params_per_layer=4 * hidden,
        final_norm_params=2 * hidden,
        layers=tuple(LayerSpec(None, mlp) for _ in range(layers)),
        method="analytical",
        confidence="exact",
        reason=None,
    )


def _layer_mlps(cfg: dict, family: str, layers: int, defaults: dict, verified: bool) -> list[MlpSpec]:
    """Each layer's MLP: routed experts (mixtral, qwen2_moe's sparse layers) or a dense gated one."""
    if family == "mixtral":
        moe = MlpSpec(
            experts=_positive_int(cfg, "num_local_experts", defaults),
            top_k=_positive_int(cfg, "num_experts_per_tok", defaults),
            expert_intermediate=_positive_int(cfg, "intermediate_size", defaults),
        )
        return [moe] * layers
    if family == "qwen2_moe":
        only_dense = set(_field(cfg, "mlp_only_layers", defaults) or [])
        step = _positive_int(cfg, "decoder_sparse_step", defaults)
        experts = _field(cfg, "num_experts", defaults)
        moe = MlpSpec(
            experts=experts,
            top_k=_positive_int(cfg, "num_experts_per_tok", defaults),
            expert_intermediate=_positive_int(cfg, "moe_intermediate_size", defaults),
            shared_intermediate=_positive_int(cfg, "shared_expert_intermediate_size", defaults),
            shared_gate=True,
        )
        return [
            moe
            if i not in only_dense and experts > 0 and (i + 1) % step == 0
            else MlpSpec(intermediate=_positive_int(cfg, "intermediate_size", defaults))
            for i in range(layers)
        ]
    intermediate = _positive_int(cfg, "intermediate_size", defaults)
    mlp_bias = bool(cfg.get("mlp_bias", False)) if family == "llama" or not verified else False
    return [MlpSpec(intermediate=intermediate, gated=True, bias=mlp_bias)] * layers


def _attention_biases(cfg: dict, family: str, defaults: dict) -> tuple[bool, bool]:
    """(q/k/v projections have biases, the output projection has one)."""
    if family == "qwen2":
        return True, False
    if family == "qwen2_moe":
        return bool(_field(cfg, "qkv_bias", defaults)), False
    if family in ("phi3", "mistral", "mixtral"):
        return False, False
    bias = bool(cfg.get("attention_bias", False))  # llama, gemma and the generic layout
    return bias, bias


def _windows(
    cfg: dict, family: str, layers: int, defaults: dict, verified: bool, unknown_types: list[str], reasons: list[str]
) -> list[int | None]:
    """Each layer's attention window; appends to `reasons` what makes a verified count inexact."""
    if family in ("mistral", "mixtral", "phi3", "qwen2", "qwen2_moe"):
        return _layer_windows(cfg, family, layers, defaults)
    if verified:
        if cfg.get("sliding_window"):
            reasons.append(
                f"'sliding_window' is set but model_type '{family}' is counted with full attention; "
                "transformers may still cap its cache at that window"
            )
        return [None] * layers
    return _layer_windows(cfg, family, layers, defaults) if not unknown_types else [None] * layers


def _provenance(
    family: str, verified: bool, reasons: list[str], unknown_types: list[str], markers: list[str]
) -> tuple[str, str, str | None]:
    """(flops_method, flops_confidence, flops_reason) of a parsed architecture."""
    if verified and not reasons and not unknown_types:
        return "analytical", "exact", None
    if markers:
        return (
            "2n-fallback",
            "estimate",
            (
                f"model_type '{family or '?'}' has structure the analytical count does not model "
                f"({'; '.join(markers)}); FLOPs are 2 x non-embedding parameters (Llama layout) x tokens"
            ),
        )
    if not verified:
        return (
            "analytical-generic",
            "estimate",
            (
                f"model_type '{family or '?'}' is not a family verified against FlopCounterMode "
                f"({', '.join(VERIFIED_FAMILIES)}); counted with the Llama layout (gated 3-matrix MLP, "
                "rotary embedding, eager attention over the KV cache)"
            ),
        )
    return "analytical", "estimate", "; ".join(reasons)


def parse_architecture(hf_config: dict) -> Architecture:
    """Normalise a Hugging Face config dictionary into the facts the count needs.

    Raises FlopsConfigError (naming the field) when a required size field is missing."""
    if not isinstance(hf_config, dict):
        raise FlopsConfigError("model config must be a JSON object (a Hugging Face config.json)")
    family = str(hf_config.get("model_type") or "")
    defaults = FAMILY_DEFAULTS.get(family, {})
    verified = family in VERIFIED_FAMILIES

    markers = (
        []
        if verified
        else [note for key, note in UNMODELLED_MARKERS.items() if hf_config.get(key) not in (None, False, 0, "")]
    )
    unknown_types = sorted(set(hf_config.get("layer_types") or []) - set(KNOWN_LAYER_TYPES))
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
        return _gpt2_architecture(hf_config, defaults, hidden, layers, heads, vocab, tied)

    mlps = _layer_mlps(hf_config, family, layers, defaults, verified)
    qkv_bias, o_bias = _attention_biases(hf_config, family, defaults)
    reasons: list[str] = []
    windows = _windows(hf_config, family, layers, defaults, verified, unknown_types, reasons)
    method, confidence, reason = _provenance(family, verified, reasons, unknown_types, markers)
    return Architecture(
        model_type=family,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=vocab,
        tied=tied,
        rotary_pairs=_rotary_pairs(hf_config, head_dim),
        position_embeddings=0,
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        norm_params_per_layer=2 * hidden,
        final_norm_params=hidden,
        layers=tuple(LayerSpec(w, m) for w, m in zip(windows, mlps, strict=True)),
        method=method,
        confidence=confidence,
        reason=reason,
    )
