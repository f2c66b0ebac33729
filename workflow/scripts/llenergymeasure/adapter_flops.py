"""Exact FLOPs of a LoRA adapter in generate(), added to the base model's count (rule flops).

PEFT's unmerged LoRA layer computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling``. Of
that, the two adapter matmuls are counted in `FlopCounterMode`'s convention (2 FLOPs per
multiply-add, matmul-like ops only): for a rank-r adapter on a d_in x d_out projection,
``2 r d_in + 2 r d_out = 2 r (d_in + d_out)`` per token. Dropout is the identity at inference
(and nn.Identity when p = 0), and the scaling multiply and the residual add are elementwise
(d_out each per token), which the convention does not count, as it does not count the base
model's norms and activations either. Every adapted projection runs on every token a forward
processes: the S prompt tokens of the prefill and one token per sequence at each of the T - 1
decode steps (the LM head, which sees only the last prompt position, is never a target).
Merged (`merge_and_unload`) the adapter is folded into the base weights: no extra FLOPs.

Decode MBU counts the bytes a decode step reads. Unmerged, every step also reads every adapter
matrix once (the batch shares them): `adapter_read_bytes`, its parameters at 4 bytes, since PEFT
keeps adapter weights in float32 (`autocast_adapter_dtype`, its default, upcasts half-precision
ones). MBU is linear in bytes, so the row's base MBU gains mbu(adapter bytes, tpot). Merged, the
adapter is inside the base weights the row's `weight_bytes_memory` already counts.
"""

from __future__ import annotations

from typing import Any

from llenergymeasure import hardware

from . import schema

ADAPTER_DTYPE_BYTES = 4  # PEFT's adapter weights at inference: float32 (see the module docstring)

# The columns rule flops_adapter adds (stage flops_adapter in the schema).
ADAPTER_COLUMNS: tuple[str, ...] = tuple(schema.columns("flops_adapter"))


def adapter_flops_per_token(manifest: dict[str, Any]) -> int:
    """FLOPs an unmerged adapter adds per token through the model: sum of 2 r (d_in + d_out)."""
    return sum(2 * m["rank"] * (m["in_features"] + m["out_features"]) for m in manifest["modules"])


def adapter_generate_flops(manifest: dict[str, Any], batch: int, prompt: int, new: int, merged: bool) -> dict[str, int]:
    """Extra FLOPs of generate(B prompts of S tokens, T new tokens): prefill, decode, total."""
    per_token = 0 if merged else adapter_flops_per_token(manifest)
    prefill = per_token * batch * prompt
    decode = per_token * batch * (new - 1)
    return {"flops_prefill": prefill, "flops_decode": decode, "flops_total": prefill + decode}


def adapter_read_bytes(manifest: dict[str, Any]) -> int:
    """Bytes of adapter weights one unmerged decode step reads: every lora_A and lora_B once."""
    return int(manifest["params"]) * ADAPTER_DTYPE_BYTES


def add_adapter_flops(frame: Any, manifest: dict[str, Any]) -> Any:
    """Annotated rows of an adapter job with the adapter's FLOPs added to the totals:
    `flops_adapter` (0 when merged), flops_prefill/decode/total and flops_per_output_token
    including it, prefill MFU rescaled to the larger count, and decode MBU of an unmerged row
    with the adapter's bytes added."""
    import pandas as pd

    out = frame.copy()
    extra: list[int | None] = []
    for index, row in out.iterrows():
        shape = [row.get(k) for k in ("batch_size", "prompt_tokens", "output_tokens")]
        if any(pd.isna(v) for v in shape) or pd.isna(row.get("flops_total")):
            extra.append(None)
            continue
        batch, prompt, new = (int(v) for v in shape)
        added = adapter_generate_flops(manifest, batch, prompt, new, merged=bool(row.get("adapter_merged")))
        old_prefill = int(row["flops_prefill"])
        for column in ("flops_prefill", "flops_decode", "flops_total"):
            out.at[index, column] = int(row[column]) + added[column]
        out.at[index, "flops_per_output_token"] = (int(row["flops_total"]) + added["flops_total"]) / (batch * new)
        if not pd.isna(row.get("mfu_prefill")) and old_prefill:
            out.at[index, "mfu_prefill"] = (
                float(row["mfu_prefill"]) * (old_prefill + added["flops_prefill"]) / old_prefill
            )
        if not row.get("adapter_merged") and not pd.isna(row.get("mbu_decode")):
            adapter_mbu = hardware.mbu(adapter_read_bytes(manifest), float(row["tpot_s"]), row.get("device_name"))
            out.at[index, "mbu_decode"] = float(row["mbu_decode"]) + (adapter_mbu or 0.0)
        extra.append(added["flops_total"])
    out["flops_adapter"] = schema.cast(pd.Series(extra, index=out.index, dtype=object), "integer")
    return out
