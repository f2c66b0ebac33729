"""Fidelity of a variant to its own unquantised parent: a quality axis honest on random weights.

Perplexity of a random-weight model measures nothing about language, but how far a
quantised variant's next-token distributions move from those of the float32 model it was
made from is defined for any weights. On the evaluation text's windows (`quality.token_windows`,
the perplexity protocol's: consecutive, non-overlapping, no context carried over):

* the **parent** (none-float32 on the pytorch backend) writes its next-token log-probabilities
  once per model (`reference_log_probs`, rule `reference_logits`);
* each **variant** is scored by the engine that builds it, transformers for none-*, bnb-* and
  the llm-compressor checkpoints, llama.cpp for gguf-* (`fidelity_engine` says which, so an
  engine's numerics are part of a GGUF variant's fidelity), rule `fidelity`;
* per predicted token: KL(parent || variant) = sum_v p(v) (log p(v) - log q(v)) in nats, and
  whether both put their highest probability on the same token (top-1 agreement).

Per variant: the mean KL and top-1 agreement over all predicted tokens, and the median of
the per-window means with its order-statistic interval and exact coverage
(`intervals.median_interval`). Windows of one text are not independent draws, so the
interval describes spread over these windows, not over all text. Rows say
``fidelity_kind: "fidelity to the float32 parent"``; perplexity is kept only for trained
(``pretrained``) weights. The parent scored against itself gives agreement 1 and KL 0
up to the float32 storage of its log-probabilities (< 1e-6), a check that the path is deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import intervals
from .quality import EvaluationError, token_windows, tokenize_text

PARENT_QUANT = "none-float32"
FIDELITY_KIND = "fidelity to the float32 parent (next-token distributions on the evaluation text)"
TRAINED_WEIGHTS = frozenset({"pretrained", "trained"})
COLUMNS = [
    "model",
    "quant",
    "fidelity_engine",
    "weights",
    "fidelity_kind",
    "fidelity_tokens",
    "fidelity_windows",
    "fidelity_kl_mean",
    "fidelity_kl_window_median",
    "fidelity_kl_ci_low",
    "fidelity_kl_ci_high",
    "fidelity_top1_mean",
    "fidelity_top1_window_median",
    "fidelity_top1_ci_low",
    "fidelity_top1_ci_high",
    "fidelity_ci_coverage",
    "fidelity_ci_method",
    "perplexity",
    "perplexity_note",
]


def evaluation_windows(model_dir: str | Path, text: str | Path, evaluation: dict[str, Any]) -> list[list[int]]:
    """The perplexity protocol's windows of the evaluation text, in the model's tokenizer."""
    from transformers import AutoTokenizer

    for field in ("sequence_length", "max_sequences"):
        if not isinstance(evaluation.get(field), int):
            raise EvaluationError(f"evaluation.{field}: {evaluation.get(field)!r} must be an integer")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tokenize_text(tokenizer, Path(text).read_text(encoding="utf-8"))
    return token_windows(ids, int(evaluation["sequence_length"]), int(evaluation["max_sequences"]))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities along the last axis, in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def transformers_log_probs(model: Any, windows: list[list[int]]) -> np.ndarray:
    """(windows, length - 1, vocab) next-token log-probabilities of a transformers model."""
    import torch

    device = next(p.device for p in model.parameters())
    out = []
    with torch.inference_mode():
        for window in windows:
            ids = torch.tensor([window], dtype=torch.long, device=device)
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float().cpu().numpy()
            out.append(log_softmax(logits))
    return np.stack(out)


def llamacpp_log_probs(gguf_file: str | Path, quant: str, windows: list[list[int]], threads: int) -> np.ndarray:
    """The same, from llama.cpp's logits of a GGUF file."""
    from .backend_specs import LlamaCppSettings
    from .backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(LlamaCppSettings(threads=threads, max_new_tokens=0), "cpu")
    try:
        backend.load({"quant": quant, "checkpoint_file": str(gguf_file)})
        return np.stack([log_softmax(backend.sequence_logits(np.asarray(w))[:-1]) for w in windows])
    finally:
        backend.close()


def variant_log_probs(variant: dict[str, Any], windows: list[list[int]], threads: int = 1) -> tuple[np.ndarray, str]:
    """(log-probabilities, engine) of a variant, scored by the engine that builds it."""
    if str(variant["quant"]).startswith("gguf-"):
        return llamacpp_log_probs(variant["checkpoint_file"], variant["quant"], windows, threads), "llamacpp"
    from .backends.loading import load_model

    model, _ = load_model(variant, "cpu")
    try:
        return transformers_log_probs(model, windows), "transformers"
    finally:
        del model


def reference_log_probs(model_dir: str | Path, windows: list[list[int]]) -> np.ndarray:
    """The float32 parent's log-probabilities (stored float32 to halve the file)."""
    variant = {"quant": PARENT_QUANT, "model_dir": str(model_dir), "settings": {}}
    return variant_log_probs(variant, windows)[0].astype(np.float32)


def token_divergences(parent: np.ndarray, variant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(KL(parent || variant), top-1 agreement) per predicted token, shaped (windows, tokens)."""
    parent, variant = np.asarray(parent, dtype=np.float64), np.asarray(variant, dtype=np.float64)
    if parent.shape != variant.shape:
        raise EvaluationError(
            f"fidelity: parent log-probabilities {parent.shape} and the variant's {variant.shape} differ; "
            "score both on the same evaluation windows and vocabulary"
        )
    kl = (np.exp(parent) * (parent - variant)).sum(axis=-1)
    agree = (parent.argmax(axis=-1) == variant.argmax(axis=-1)).astype(float)
    return np.maximum(kl, 0.0), agree  # rounding can give -1e-17 for identical rows


def summarise(parent: np.ndarray, variant: np.ndarray) -> dict[str, float]:
    """Mean KL and top-1 agreement, and the median of per-window means with its interval."""
    kl, agree = token_divergences(parent, variant)
    kl_windows, agree_windows = kl.mean(axis=1), agree.mean(axis=1)
    kl_low, kl_high, coverage = intervals.median_interval(kl_windows)
    agree_low, agree_high, _ = intervals.median_interval(agree_windows)
    return {
        "fidelity_tokens": int(kl.size),
        "fidelity_windows": int(kl.shape[0]),
        "fidelity_kl_mean": float(kl.mean()),
        "fidelity_kl_window_median": float(np.median(kl_windows)),
        "fidelity_kl_ci_low": kl_low,
        "fidelity_kl_ci_high": kl_high,
        "fidelity_top1_mean": float(agree.mean()),
        "fidelity_top1_window_median": float(np.median(agree_windows)),
        "fidelity_top1_ci_low": agree_low,
        "fidelity_top1_ci_high": agree_high,
        "fidelity_ci_coverage": coverage,
        "fidelity_ci_method": f"{intervals.MEDIAN_TRIALS} over windows" if np.isfinite(coverage) else None,
    }


def fidelity_record(
    variant: dict[str, Any], parent: np.ndarray, windows: list[list[int]], threads: int = 1
) -> dict[str, Any]:
    """One variant's fidelity row (`COLUMNS`)."""
    scored, engine = variant_log_probs(variant, windows, threads)
    weights = variant.get("weights")
    trained = weights in TRAINED_WEIGHTS
    return {
        "model": variant["model"],
        "quant": variant["quant"],
        "fidelity_engine": engine,
        "weights": weights,
        "fidelity_kind": FIDELITY_KIND,
        **summarise(parent, scored),
        "perplexity": variant.get("perplexity") if trained else None,
        "perplexity_note": None if trained else f"weights {weights!r}: perplexity says nothing about language",
    }


def fidelity_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Every variant's fidelity row, sorted by model and variant."""
    table = pd.DataFrame(records, columns=COLUMNS) if records else pd.DataFrame(columns=COLUMNS)
    return table.sort_values(["model", "quant"], ignore_index=True)


# The rules' entry points ----------------------------------------------------------------------


def write_reference(model_dir: str | Path, text: str | Path, evaluation: dict[str, Any], out: str | Path) -> None:
    """Rule reference_logits: the windows and the parent's log-probabilities, one .npz."""
    import os
    import tempfile

    windows = evaluation_windows(model_dir, text, evaluation)
    log_probs = reference_log_probs(model_dir, windows)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".npz")
    os.close(handle)
    try:
        np.savez(tmp, windows=np.asarray(windows, dtype=np.int64), log_probs=log_probs)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(
    variant_path: str | Path, parent_path: str | Path, out: str | Path, threads: int = 1
) -> dict[str, Any]:
    """Rule fidelity: one variant's record (`COLUMNS`) as JSON, scored on the parent's windows."""
    import json

    from .io import write_json_atomic

    variant = json.loads(Path(variant_path).read_text())
    with np.load(parent_path) as stored:
        windows, parent = stored["windows"].tolist(), stored["log_probs"]
    record = fidelity_record(variant, parent, windows, threads)
    write_json_atomic(out, record)
    return record


def write_table(record_paths: list[str], out: str | Path) -> pd.DataFrame:
    """Rule fidelity_table: every record in one Parquet."""
    import json

    from .io import write_parquet_atomic

    table = fidelity_table([json.loads(Path(p).read_text()) for p in record_paths])
    write_parquet_atomic(out, table)
    return table
