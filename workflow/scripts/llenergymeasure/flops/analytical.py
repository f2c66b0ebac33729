"""The hand formulas: FLOPs of `generate` and parameter counts from an `Architecture`.

Pure Python. The run modelled: one prefill forward over S prompt tokens (LM head on the last
position only, `logits_to_keep=1`), then T-1 decode forwards of one token each. With the
dynamic cache, decode step t attends to S+t keys, or min(S+t, W) on a sliding-window layer
(the cache keeps W-1 keys). With a static cache of L positions (the `pytorch-compiled`
backend) eager attention multiplies against the whole cache: L keys per query on a full
layer, min(W, L) on a sliding one (its prefill sees the S prompt keys when S exceeds that).
Also the byte counts behind MBU (`kv_cache_bytes`, `weight_bytes`, `decode_bytes_per_step`).
"""

from __future__ import annotations

import math

from .architecture import Architecture, parse_architecture


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
    body = (
        sum(
            arch.attention_params() + layer.mlp.params(arch.hidden) + arch.norm_params_per_layer
            for layer in arch.layers
        )
        + arch.final_norm_params
    )
    active = (
        sum(
            arch.attention_params() + layer.mlp.params(arch.hidden, active_only=True) + arch.norm_params_per_layer
            for layer in arch.layers
        )
        + arch.final_norm_params
    )
    return {
        "params_total": embedding + head + positions + body,
        "params_non_embedding": body,
        "params_active": active,
        "params_embedding": embedding + positions,
        "params_lm_head": arch.vocab * arch.hidden,
    }


def count_hand_formula(
    arch: Architecture, batch: int, prompt: int, new: int, static_cache_len: int | None = None
) -> dict[str, int]:
    """FLOPs of generate() by the hand formula, split into parts (see the module docstring)."""
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
        causal_pre += batch * per_head * _sum_min(1, prompt, layer.window)
        if static_cache_len is None:
            # prefill: the kernel multiplies the full S x S score matrix (mask applied afterwards)
            attn_pre += batch * per_head * prompt * prompt
            # decode step t (1..T-1) attends to min(S + t, W) cached keys
            attn_dec += batch * per_head * _sum_min(prompt + 1, prompt + decode_steps, layer.window)
        else:  # every query multiplies against the whole static cache (masked afterwards)
            keys = static_cache_len if layer.window is None else min(layer.window, static_cache_len)
            attn_pre += batch * per_head * prompt * (prompt if prompt > keys else keys)
            attn_dec += batch * per_head * decode_steps * keys
    rotary_pre = 2 * batch * arch.rotary_pairs * prompt
    rotary_dec = 2 * batch * arch.rotary_pairs * decode_steps
    head_pre = 2 * batch * hidden * arch.vocab  # logits_to_keep=1: last prompt position only
    head_dec = 2 * batch * decode_steps * hidden * arch.vocab
    prefill = linear_pre + router_pre + attn_pre + rotary_pre + head_pre
    decode = linear_dec + router_dec + attn_dec + rotary_dec + head_dec
    useful_decode = (
        batch * per_head * sum(_sum_min(prompt + 1, prompt + decode_steps, layer.window) for layer in arch.layers)
    )
    return {
        "flops_prefill": prefill,
        "flops_decode": decode,
        "flops_total": prefill + decode,
        "flops_attention": attn_pre + attn_dec,
        "flops_attention_prefill": attn_pre,
        "flops_attention_causal": causal_pre + useful_decode,
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
    return math.ceil(batch * total)


def weight_bytes(hf_config: dict, bits_per_weight: float) -> int:
    """Bytes of all parameters stored at `bits_per_weight` (no quantisation scales counted)."""
    params = parameter_counts(parse_architecture(hf_config))["params_total"]
    return math.ceil(params * bits_per_weight / 8)


def decode_bytes_per_step(
    hf_config: dict,
    batch: int,
    prompt: int,
    new: int,
    resident_weight_bytes: float,
    kv_bytes_per_element: float,
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
    kv_read = sum(kv_per_token * _sum_min(prompt + 1, prompt + steps, layer.window) for layer in arch.layers) / steps
    return weights_read + kv_read
