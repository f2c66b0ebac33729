"""7. The field's 2N formula (2 x non-embedding parameters x tokens) against the exact
analytical FLOP count of `generate`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .columns import empty as _empty
from .columns import frame as _frame

TWO_N_PROMPT_LENGTHS: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def load_architectures(paths: Iterable[str | Path]) -> dict[str, dict]:
    """Architecture configs (Hugging Face config.json files) by file stem."""
    return {Path(p).stem: json.loads(Path(p).read_text()) for p in sorted(map(str, paths))}


def _max_positions(hf_config: Mapping[str, Any]) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        if hf_config.get(key):
            return int(hf_config[key])
    return None


def two_n_formula_error(
    architectures: Mapping[str, Mapping[str, Any]],
    prompt_lengths: Sequence[int] = TWO_N_PROMPT_LENGTHS,
    batch_size: int = 1,
    new_tokens: int = 32,
) -> pd.DataFrame:
    """The field's ``2 x non-embedding params x tokens`` estimate against the exact
    analytical count of `generate`, per architecture and prompt length (only lengths whose
    prompt plus new tokens fit the architecture's context). relative_error = (2N - exact) / exact.
    A count the engine refuses (`flops_confidence: unsupported`) has no error to report: its
    row keeps empty FLOPs and says so in `flops_confidence`."""
    if not architectures:
        return _empty("two_n_error")
    from ..flops import count_generate

    rows: list[dict] = []
    for name, hf_config in sorted(architectures.items()):
        limit = _max_positions(hf_config)
        for prompt in prompt_lengths:
            if limit is not None and prompt + new_tokens > limit:
                continue
            counted = count_generate(dict(hf_config), batch_size, prompt, new_tokens)
            exact, estimate = counted.get("flops_total"), counted.get("flops_2n_reference")
            counted_ok = exact is not None and estimate is not None
            rows.append(
                {
                    "model": name,
                    "family": hf_config.get("model_type", name),
                    "batch_size": batch_size,
                    "prompt_tokens": prompt,
                    "output_tokens": new_tokens,
                    "flops_total": float(exact) if counted_ok else None,
                    "flops_2n_reference": float(estimate) if estimate is not None else None,
                    "relative_error": (float(estimate) - float(exact)) / float(exact) if counted_ok else None,
                    "flops_confidence": counted.get("confidence"),
                    "flops_2n_parameters": counted.get("flops_2n_parameters"),
                }
            )
    return _frame("two_n_error", rows)
