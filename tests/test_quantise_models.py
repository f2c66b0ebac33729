"""Tiny real models for the quantisation and quality tests (built in a temporary directory).

A Llama-style model with one decoder layer, hidden size 128 (the smallest width that the
W4A16 schemes' 128-wide weight groups accept), and a byte-level BPE tokenizer trained on
the shipped tokenizer text. Random float32 weights, saved as a Hugging Face directory with
a `model_manifest.json` like the model rule's.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REPO_ROOT

VOCAB = 320  # the tokenizer's 256 byte pieces + 4 specials fit below this


def build_tokenizer(out_dir: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 8,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train([str(REPO_ROOT / "data" / "text" / "tokenizer.txt")], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.save_pretrained(out_dir)


def build_model(out_dir: Path, model_type: str = "llama", seed: int = 0) -> Path:
    """Save a one-layer random-weight causal LM with a tokenizer into `out_dir`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if model_type == "llama":
        config = AutoConfig.for_model(
            "llama",
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            vocab_size=VOCAB,
            max_position_embeddings=256,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
            tie_word_embeddings=False,
        )
    else:
        config = AutoConfig.for_model(
            "gpt2", n_embd=128, n_layer=1, n_head=4, n_positions=256, vocab_size=VOCAB, bos_token_id=1, eos_token_id=2
        )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    build_tokenizer(out_dir)
    manifest = {"model": out_dir.name, "source": "config", "weights": "random", "trust_remote_code": False}
    (out_dir / "model_manifest.json").write_text(json.dumps(manifest))
    return out_dir


def settings(device: str = "cpu", samples: int = 4, sequence_length: int = 32) -> dict:
    """The settings build_variant receives, with tiny calibration and evaluation."""
    return {
        "quantisation": {
            "bnb_compute_dtype": "float32",
            "calibration": {
                "text": "data/text/calibration.txt",
                "samples": samples,
                "sequence_length": sequence_length,
            },
        },
        "evaluation": {"text": "data/text/evaluation.txt", "sequence_length": 64, "max_sequences": 2},
        "device": device,
    }


def test_tiny_model_loads_and_tokenizes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = build_model(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer("The battery stores energy.", add_special_tokens=False)["input_ids"]
    assert 0 < max(ids) < model.config.vocab_size
    assert len(ids) < len("The battery stores energy.")  # merges were learned from the text
