"""A small tokenizer trained locally on text shipped with the repository (no download).

Random-weight models still need a tokenizer: llama.cpp's GGUF converter reads one, and
perplexity needs text turned into ids. We train a byte-fallback BPE sentencepiece model
(deterministic: one thread, fixed input) and save it both as `tokenizer.model` and in
Hugging Face's `tokenizer.json` form.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

# sentencepiece needs at least the 256 byte pieces + specials with byte fallback.
MIN_VOCAB = 300
MAX_TRAINED_VOCAB = 4000  # the shipped text supports this many pieces; larger vocabularies are padded


def train_tokenizer(text: Path, out_dir: Path, vocab_size: int) -> dict[str, Any]:
    """Train on `text` and save into `out_dir`; return a description for the model manifest."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    pieces = max(MIN_VOCAB, min(vocab_size, MAX_TRAINED_VOCAB))
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size {vocab_size} is below {MIN_VOCAB}, the smallest byte-fallback vocabulary")
    with tempfile.TemporaryDirectory() as work:
        # sentencepiece stores the input and prefix paths in the model: keep them relative
        # and fixed so the same text gives the same bytes in any checkout.
        shutil.copy(text, Path(work) / "corpus.txt")
        cwd = os.getcwd()
        os.chdir(work)
        try:
            _train(spm, pieces)
        finally:
            os.chdir(cwd)
        shutil.copy(Path(work) / "tokenizer.model", out_dir / "tokenizer.model")
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    tokenizer = AutoTokenizer.from_pretrained(out_dir)  # converts tokenizer.model (needs protobuf)
    tokenizer.save_pretrained(out_dir)  # writes tokenizer.json, loadable without sentencepiece
    return {
        "kind": "sentencepiece-bpe",
        "trained_on": Path(text).name,
        "pieces": len(tokenizer),
        "model_vocab": vocab_size,
    }


def _train(spm: Any, pieces: int) -> None:
    spm.SentencePieceTrainer.train(
        input="corpus.txt",
        model_prefix="tokenizer",
        vocab_size=pieces,
        model_type="bpe",
        num_threads=1,
        character_coverage=1.0,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
