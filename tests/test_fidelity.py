"""Fidelity to the float32 parent: known answers, then the real engines on a tiny random Llama."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_gguf import needs_converter, tiny_gguf  # noqa: F401  (session fixture)

from llenergymeasure import fidelity, intervals
from llenergymeasure.quality import EvaluationError


def test_kl_and_top1_of_known_distributions():
    parent = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    variant = np.log(np.array([[[0.25, 0.5, 0.25], [0.1, 0.8, 0.1]]]))
    kl, agree = fidelity.token_divergences(parent, variant)
    expected = 0.5 * np.log(2) + 0.25 * np.log(0.5)  # sum p log(p/q) of the first token
    assert kl[0].tolist() == pytest.approx([expected, 0.0])
    assert agree[0].tolist() == [0.0, 1.0]  # argmax 0 vs 1, then both 1


def test_summary_is_zero_for_the_parent_and_uses_the_order_statistic_interval():
    rng = np.random.default_rng(0)
    parent = fidelity.log_softmax(rng.normal(size=(8, 5, 11)))
    same = fidelity.summarise(parent, parent)
    assert same["fidelity_kl_mean"] == 0.0 and same["fidelity_top1_mean"] == 1.0
    noisy = fidelity.log_softmax(np.log(np.exp(parent)) + 0.3 * rng.normal(size=parent.shape))
    out = fidelity.summarise(parent, noisy)
    kl, _ = fidelity.token_divergences(parent, noisy)
    low, high, coverage = intervals.median_interval(kl.mean(axis=1))
    assert out["fidelity_kl_mean"] == pytest.approx(kl.mean()) and out["fidelity_kl_mean"] > 0
    assert (out["fidelity_kl_ci_low"], out["fidelity_kl_ci_high"], out["fidelity_ci_coverage"]) == (low, high, coverage)
    assert out["fidelity_ci_coverage"] == pytest.approx(1 - 2 * 0.5**8)  # [min, max] of 8 windows
    assert out["fidelity_tokens"] == 40 and out["fidelity_windows"] == 8


def test_mismatched_windows_are_refused_with_the_fix():
    with pytest.raises(EvaluationError, match="same evaluation windows"):
        fidelity.token_divergences(np.zeros((1, 3, 4)), np.zeros((1, 3, 5)))


@needs_converter
def test_real_variants_against_their_parent(tiny_gguf, tmp_path):
    model_dir = tiny_gguf["model_dir"]
    evaluation = tiny_gguf["evaluation"]
    reference = tmp_path / "parent_log_probs.npz"
    fidelity.write_reference(model_dir, evaluation["text"], evaluation, reference)
    records = {}
    manifests = {
        q: {
            "model": "tiny",
            "quant": q,
            "model_dir": str(model_dir),
            "settings": {},
            "weights": "random",
            "perplexity": 300.0,
        }
        for q in ("none-float32", "none-bfloat16", "bnb-nf4")
    }
    manifests["gguf-f16"] = tiny_gguf["variants"]["gguf-f16"]
    manifests["gguf-q4_k_m"] = tiny_gguf["variants"]["gguf-q4_k_m"]
    for quant, manifest in manifests.items():
        (tmp_path / f"{quant}.variant.json").write_text(json.dumps(manifest))
        records[quant] = fidelity.write_record(
            tmp_path / f"{quant}.variant.json", reference, tmp_path / f"{quant}.json"
        )
    # the parent scored again on the same path: itself, up to the float32 storage of its log-probabilities
    assert records["none-float32"]["fidelity_kl_mean"] == pytest.approx(0.0, abs=1e-6)
    assert records["none-float32"]["fidelity_top1_mean"] == 1.0
    kl = {q: r["fidelity_kl_mean"] for q, r in records.items()}
    # 16-bit copies stay close; 4-bit moves further than llama.cpp's f16 of the same weights
    assert 0 < kl["none-bfloat16"] < kl["bnb-nf4"]
    assert 0 < kl["gguf-f16"] < kl["gguf-q4_k_m"]
    assert records["gguf-f16"]["fidelity_engine"] == "llamacpp"
    assert records["none-bfloat16"]["fidelity_engine"] == "transformers"
    assert records["gguf-f16"]["fidelity_top1_mean"] > 0.9
    # random weights: perplexity withheld and said why
    assert records["none-bfloat16"]["perplexity"] is None and "random" in records["none-bfloat16"]["perplexity_note"]
    table = fidelity.write_table(
        sorted(str(p) for p in tmp_path.glob("*-*.json") if "variant" not in p.name), tmp_path / "fidelity.parquet"
    )
    assert list(table.columns) == fidelity.COLUMNS and len(table) == 5
