"""What the FLOPs engine knows per model family: which are verified, each family's config
defaults (transformers' own, for fields a config may omit), and the config markers of
structure the analytical count does not model. Data only; `architecture` reads it.
"""

from __future__ import annotations

from typing import Any

# Families whose count was verified op-for-op against torch.utils.flop_counter.FlopCounterMode
# on tiny random-weight transformers models (tests/test_flops.py).
VERIFIED_FAMILIES: tuple[str, ...] = (
    "llama",
    "mistral",
    "qwen2",
    "gemma",
    "phi3",
    "gpt2",
    "mixtral",
    "qwen2_moe",
)

# Behavioural fields a family's transformers config class fills in when config.json omits
# them (transformers 5.17 defaults). Size fields are never defaulted: they are required.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"num_key_value_heads": None, "tie_word_embeddings": False},
    "mistral": {"num_key_value_heads": 8, "tie_word_embeddings": False, "sliding_window": 4096},
    "qwen2": {
        "num_key_value_heads": 32,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "sliding_window": 4096,
        "max_window_layers": 28,
    },
    "gemma": {"num_key_value_heads": 16, "tie_word_embeddings": True, "head_dim": 256},
    "phi3": {"num_key_value_heads": None, "tie_word_embeddings": False, "sliding_window": None},
    "gpt2": {"tie_word_embeddings": True},
    "mixtral": {
        "num_key_value_heads": 8,
        "tie_word_embeddings": False,
        "sliding_window": None,
        "num_experts_per_tok": 2,
        "num_local_experts": 8,
    },
    "qwen2_moe": {
        "num_key_value_heads": 16,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "sliding_window": 4096,
        "max_window_layers": 28,
        "decoder_sparse_step": 1,
        "moe_intermediate_size": 1408,
        "shared_expert_intermediate_size": 5632,
        "num_experts_per_tok": 4,
        "num_experts": 60,
        "mlp_only_layers": [],
        "qkv_bias": True,
    },
}

# GPT-2 spells the standard fields differently (transformers' attribute_map).
GPT2_FIELD_NAMES = {
    "hidden_size": "n_embd",
    "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head",
    "max_position_embeddings": "n_positions",
}

# Config fields that signal structure the generic (Llama-layout) count cannot express.
UNMODELLED_MARKERS: dict[str, str] = {
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

KNOWN_LAYER_TYPES = ("full_attention", "sliding_attention")
