"""The structure transformers actually builds, read from the model rather than from field names.

`build_meta_model` instantiates a config.json on PyTorch's meta device (shapes, no memory, no
weights) with eager attention and batched MoE experts; `read_structure` walks its modules:
every `nn.Linear` and GPT-2 style `Conv1D` projection with its shape, 3-D expert weight banks
and expert lists (each token runs top-k of them), attention modules (query heads, head sizes),
rotary frequency buffers, the LM head, and per-layer attention windows from the cache layers
transformers makes for the config. `count_structure` turns that into the FLOPs of generate()
under the same run model as the hand formulas (docs/flops.md); descriptive facts (gated MLP,
parallel residual, q/k norms, softcapping, partial rotary) are reported alongside.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .architecture import FlopsConfigError

_MODELS: dict[str, Any] = {}
_TOP_K_NAMES = ("num_experts_per_tok", "top_k", "moe_top_k", "num_selected_experts", "moe_k", "experts_per_token")


@dataclass
class LayerStructure:
    linear_macs: int = 0  # per token, every dense projection of the layer (experts included at top-k)
    expert_macs: int = 0  # per token, the routed experts' share of linear_macs
    expert_params_idle: int = 0  # parameters of the experts a token does not run
    attention_macs_per_key: int = 0  # QK^T + AV multiply-accumulates per query per key
    window: int | None = None  # the dynamic cache's sliding window for this layer


@dataclass
class Structure:
    model_type: str
    layers: list[LayerStructure]
    other_linear_macs: int  # per token, projections outside the decoder layers (e.g. OPT's project_in/out)
    lm_head_macs: int
    rotary_pairs: int  # summed inv_freq lengths of the rotary modules run once per forward
    params_total: int
    params_non_embedding: int
    params_active: int
    features: dict[str, Any] = field(default_factory=dict)


def config_from_dict(hf_config: dict):
    """The transformers config object of a config.json dictionary (FlopsConfigError if unknown)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = hf_config.get("model_type")
    if not model_type or model_type not in CONFIG_MAPPING:
        raise FlopsConfigError(f"model config 'model_type' is {model_type!r}, which transformers does not know")
    fields = {k: v for k, v in hf_config.items() if k not in ("model_type", "transformers_version")}
    return CONFIG_MAPPING[model_type].from_dict(fields)


def build_meta_model(hf_config: dict):
    """The causal LM transformers builds for the config, on the meta device (cached per config)."""
    key = json.dumps(hf_config, sort_keys=True, default=str)
    if key not in _MODELS:
        import torch
        from transformers import AutoModelForCausalLM

        config = config_from_dict(hf_config)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        if getattr(model.config, "_experts_implementation", None) not in (None, "eager", "batched_mm"):
            # grouped_mm is invisible to FlopCounterMode; batched_mm runs exactly top-k experts per
            # token without data-dependent shapes, so it traces on meta (eager's loop cannot)
            model.set_experts_implementation("batched_mm")
        _MODELS[key] = model.eval()
    return _MODELS[key]


def _layer_stack(model):
    """The decoder layers: the longest nn.ModuleList of the model (num_hidden_layers long)."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        raise FlopsConfigError("the model has no list of decoder layers the structure walk recognises")
    return max(lists, key=len)


def _top_k(module, config) -> int | None:
    for owner in (module, config, getattr(config, "text_config", None)):
        for name in _TOP_K_NAMES:
            value = getattr(owner, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _attention_macs_per_key(module, config) -> int:
    """QK^T and AV multiply-accumulates per query position per key, for one attention module."""
    heads = getattr(module, "num_heads", None) or getattr(config, "num_attention_heads", None)
    head_dim = getattr(module, "head_dim", None)
    qk_dim = getattr(module, "qk_head_dim", None) or head_dim
    v_dim = getattr(module, "v_head_dim", None) or head_dim
    if not heads or not qk_dim or not v_dim:
        return 0
    return int(heads) * (int(qk_dim) + int(v_dim))


def _is_attention(module) -> bool:
    name = type(module).__name__
    return name.endswith("Attention") and (hasattr(module, "head_dim") or hasattr(module, "qk_head_dim"))


def _walk_layer(layer, config, layer_walk: LayerStructure) -> None:
    import torch
    from transformers.pytorch_utils import Conv1D

    claimed: set[int] = set()
    for _, module in layer.named_modules():
        if id(module) in claimed:
            continue
        if _is_attention(module) and not layer_walk.attention_macs_per_key:
            layer_walk.attention_macs_per_key = _attention_macs_per_key(module, config)
        banks = [p for p in module.parameters(recurse=False) if p.dim() == 3]
        if banks:  # an expert bank: [experts, out, in] weights, each token runs top-k of them
            experts = banks[0].shape[0]
            top_k = _top_k(module, config) or experts
            per_expert = sum(int(p.shape[1]) * int(p.shape[2]) for p in banks)
            per_expert_params = sum(p[0].numel() for p in module.parameters(recurse=False))
            layer_walk.linear_macs += top_k * per_expert
            layer_walk.expert_macs += top_k * per_expert
            layer_walk.expert_params_idle += (experts - top_k) * per_expert_params
            claimed.update(id(m) for m in module.modules())
        elif isinstance(module, torch.nn.Linear):
            layer_walk.linear_macs += module.in_features * module.out_features
        elif isinstance(module, Conv1D):
            layer_walk.linear_macs += int(module.weight.shape[0]) * int(module.weight.shape[1])
        elif not isinstance(module, torch.nn.Embedding):
            # a router or projection kept as a bare 2-D weight (F.linear on every token)
            weight = module._parameters.get("weight")
            if weight is not None and weight.dim() == 2:
                layer_walk.linear_macs += weight.numel()
    # expert lists (nn.ModuleList of identical MLPs named "experts"): top-k of them per token
    for name, module in layer.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] == "experts" and len(module):
            top_k = _top_k(module, config) or _top_k(layer, config) or len(module)
            one = _linear_macs(module[0])
            one_params = sum(p.numel() for p in module[0].parameters())
            layer_walk.linear_macs -= len(module) * one - top_k * one
            layer_walk.expert_macs += top_k * one
            layer_walk.expert_params_idle += (len(module) - top_k) * one_params


def _linear_macs(module) -> int:
    import torch
    from transformers.pytorch_utils import Conv1D

    total = 0
    for sub in module.modules():
        if isinstance(sub, torch.nn.Linear):
            total += sub.in_features * sub.out_features
        elif isinstance(sub, Conv1D):
            total += int(sub.weight.shape[0]) * int(sub.weight.shape[1])
    return total


def _cache_windows(model, layers: int) -> list[int | None]:
    """Per-layer sliding window of the DynamicCache transformers builds for this config."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    windows = [getattr(layer, "sliding_window", None) for layer in cache.layers]
    return (windows + [None] * layers)[:layers]


def _features(model, config) -> dict[str, Any]:
    """Descriptive facts for the report; none of them changes a matmul count by itself."""
    names = [name for name, _ in model.named_modules()]
    text = getattr(config, "text_config", None) or config
    rope = getattr(text, "rope_parameters", None) or {}
    partial = rope.get("partial_rotary_factor") if isinstance(rope, dict) else None
    return {
        "gated_mlp": any(n.endswith(("gate_proj", "gate_up_proj", "w1", "w3")) for n in names)
        or any("gate_up_proj" in n for n, _ in model.named_parameters()),
        "qk_norm": any(n.endswith(("q_norm", "k_norm", "q_layernorm", "k_layernorm")) for n in names),
        "parallel_residual": bool(
            getattr(text, "use_parallel_residual", False) or getattr(text, "parallel_attn", False)
        ),
        "partial_rotary_factor": partial or getattr(text, "partial_rotary_factor", None),
        "attn_logit_softcapping": getattr(text, "attn_logit_softcapping", None),
        "final_logit_softcapping": getattr(text, "final_logit_softcapping", None),
        "experts": any(p.dim() == 3 for p in model.parameters()) or any(n.endswith(".experts") for n in names),
    }


def read_structure(hf_config: dict) -> Structure:
    """Walk the meta model's modules (see the module docstring)."""
    import torch

    model = build_meta_model(hf_config)
    config = model.config
    stack = _layer_stack(model)
    windows = _cache_windows(model, len(stack))
    layers: list[LayerStructure] = []
    for index, layer in enumerate(stack):
        walk = LayerStructure(window=windows[index])
        _walk_layer(layer, config, walk)
        layers.append(walk)
    head = model.get_output_embeddings()
    in_stack = {id(m) for m in stack.modules()}
    other = 0
    for module in model.modules():
        if id(module) in in_stack or module is head:
            continue
        if isinstance(module, torch.nn.Linear) and not any(id(m) in in_stack for m in module.modules()):
            other += module.in_features * module.out_features
    rotary = sum(
        b.numel() for name, b in model.named_buffers() if name.split(".")[-1] == "inv_freq" and name.count(".") <= 2
    )
    params = {id(p): p for p in model.parameters()}  # tied tensors once
    total = sum(p.numel() for p in params.values())
    embedding_ids = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    embedding = sum(p.numel() for i, p in params.items() if i in embedding_ids | head_ids)
    idle = sum(layer.expert_params_idle for layer in layers)
    return Structure(
        model_type=str(config.model_type),
        layers=layers,
        other_linear_macs=other,
        lm_head_macs=(head.in_features * head.out_features) if isinstance(head, torch.nn.Linear) else 0,
        rotary_pairs=int(rotary),
        params_total=int(total),
        params_non_embedding=int(total - embedding),
        params_active=int(total - embedding - idle),
        features=_features(model, config),
    )


def count_structure(
    structure: Structure, batch: int, prompt: int, new: int, static_cache_len: int | None = None
) -> dict[str, int]:
    """FLOPs of generate() from the walked structure (same run model as the hand formulas)."""
    from .analytical import _sum_min

    steps = new - 1
    per_token = sum(layer.linear_macs for layer in structure.layers) + structure.other_linear_macs
    attn_pre = attn_dec = 0
    for layer in structure.layers:
        per_key = 2 * batch * layer.attention_macs_per_key  # macs already hold QK^T and AV
        if static_cache_len is None:
            attn_pre += per_key * prompt * prompt
            attn_dec += per_key * _sum_min(prompt + 1, prompt + steps, layer.window)
        else:
            keys = static_cache_len if layer.window is None else min(layer.window, static_cache_len)
            attn_pre += per_key * prompt * (prompt if prompt > keys else keys)
            attn_dec += per_key * steps * keys
    linear_pre, linear_dec = 2 * batch * prompt * per_token, 2 * batch * steps * per_token
    head_pre, head_dec = 2 * batch * structure.lm_head_macs, 2 * batch * steps * structure.lm_head_macs
    rotary_pre, rotary_dec = 2 * batch * structure.rotary_pairs * prompt, 2 * batch * structure.rotary_pairs * steps
    prefill = linear_pre + attn_pre + head_pre + rotary_pre
    decode = linear_dec + attn_dec + head_dec + rotary_dec
    return {
        "flops_prefill": prefill,
        "flops_decode": decode,
        "flops_total": prefill + decode,
        "flops_attention": attn_pre + attn_dec,
        "flops_lm_head": head_pre + head_dec,
        "flops_linear": linear_pre + linear_dec,
        "flops_rotary": rotary_pre + rotary_dec,
    }
