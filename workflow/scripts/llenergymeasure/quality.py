"""Quality of a variant: perplexity on a shipped evaluation text.

The text is tokenised once and cut into consecutive, non-overlapping windows of
`sequence_length` tokens (at most `max_sequences` of them, from the start of the text).
Each window is scored on its own (no context carried over), every token after the first is
predicted, and perplexity is exp(total negative log-likelihood / predicted tokens).
With random weights the value measures nothing about language; rows say `weights: random`.
"""

from __future__ import annotations

import math
from typing import Any


class EvaluationError(ValueError):
    """The evaluation text or settings cannot give a perplexity (one line, names the fix)."""


def token_windows(
    ids: list[int], sequence_length: int, max_sequences: int, field: str = "evaluation"
) -> list[list[int]]:
    """Consecutive non-overlapping windows of `sequence_length` ids, at most `max_sequences`."""
    if sequence_length < 2:
        raise EvaluationError(f"{field}.sequence_length: {sequence_length} is too short; use at least 2 tokens")
    if max_sequences < 1:
        raise EvaluationError(f"{field}.max_sequences: {max_sequences} must be at least 1")
    available = len(ids) // sequence_length
    if available == 0:
        raise EvaluationError(
            f"{field}.sequence_length: the text has only {len(ids)} tokens, fewer than one window of "
            f"{sequence_length}; use a longer text or a shorter sequence_length"
        )
    count = min(available, max_sequences)
    return [ids[i * sequence_length : (i + 1) * sequence_length] for i in range(count)]


def tokenize_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def vocab_size(model: Any) -> int:
    """Embedding rows of a causal LM (text config of multimodal configs; older transformers too)."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text_config.vocab_size)


def perplexity(model: Any, tokenizer: Any, text: str, sequence_length: int, max_sequences: int) -> tuple[float, int]:
    """Perplexity of `model` on `text`; returns (perplexity, number of predicted tokens)."""
    import torch

    ids = tokenize_text(tokenizer, text)
    windows = token_windows(ids, sequence_length, max_sequences)
    vocab = vocab_size(model)
    largest = max(max(window) for window in windows)
    if largest >= vocab:
        raise EvaluationError(
            f"evaluation: the tokenizer produced id {largest} but the model has {vocab} embeddings; "
            "use the tokenizer saved with the model"
        )
    device = next(p.device for p in model.parameters())
    total_nll = 0.0
    predicted = 0
    with torch.inference_mode():
        for window in windows:
            input_ids = torch.tensor([window], dtype=torch.long, device=device)
            logits = model(input_ids=input_ids, use_cache=False).logits[0, :-1].float()
            targets = input_ids[0, 1:]
            nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
            total_nll += float(nll.double())
            predicted += int(targets.numel())
    return math.exp(total_nll / predicted), predicted
