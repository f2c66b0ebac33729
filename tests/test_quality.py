"""Perplexity on the shipped evaluation text, against a direct computation."""

from __future__ import annotations

import math

import pytest
from conftest import REPO_ROOT
from test_quantise_models import build_model

from llenergymeasure.quality import EvaluationError, perplexity, token_windows

EVAL_TEXT = (REPO_ROOT / "data" / "text" / "evaluation.txt").read_text()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = build_model(tmp_path_factory.mktemp("quality") / "tiny")
    return AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).eval(), AutoTokenizer.from_pretrained(
        model_dir
    )


def test_windows_are_consecutive_and_capped():
    ids = list(range(10))
    assert token_windows(ids, 3, 10) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert token_windows(ids, 3, 2) == [[0, 1, 2], [3, 4, 5]]


def test_too_short_text_names_the_field():
    with pytest.raises(EvaluationError, match=r"evaluation\.sequence_length: the text has only 5 tokens"):
        token_windows(list(range(5)), 8, 4)
    with pytest.raises(EvaluationError, match=r"evaluation\.sequence_length"):
        token_windows(list(range(5)), 1, 4)


def test_perplexity_matches_a_direct_computation(tiny):
    import torch

    model, tokenizer = tiny
    ppl, tokens = perplexity(model, tokenizer, EVAL_TEXT, sequence_length=32, max_sequences=3)
    assert tokens == 3 * 31
    ids = tokenizer(EVAL_TEXT, add_special_tokens=False)["input_ids"][: 3 * 32]
    total = 0.0
    with torch.no_grad():
        for start in range(0, 96, 32):
            window = torch.tensor([ids[start : start + 32]])
            log_probs = torch.log_softmax(model(window).logits[0, :-1].double(), dim=-1)
            total -= log_probs.gather(1, window[0, 1:, None]).sum().item()
    assert ppl == pytest.approx(math.exp(total / 93), rel=1e-5)


def test_random_weights_score_near_the_vocabulary_size(tiny):
    model, tokenizer = tiny
    ppl, _ = perplexity(model, tokenizer, EVAL_TEXT, sequence_length=64, max_sequences=2)
    # an untrained model is close to uniform over its vocabulary, far from a trained one
    assert 0.5 * model.config.vocab_size < ppl < 2 * model.config.vocab_size


def test_tokenizer_larger_than_model_is_refused(tiny):
    from transformers import AutoConfig, AutoModelForCausalLM

    _, tokenizer = tiny
    small = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(
            "llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64
        )
    )
    with pytest.raises(EvaluationError, match="use the tokenizer saved with the model"):
        perplexity(small, tokenizer, EVAL_TEXT, sequence_length=16, max_sequences=1)
