"""Family sweep: every causal-LM family transformers registers, counted against generate().

For each model_type in transformers' MODEL_FOR_CAUSAL_LM_MAPPING_NAMES this builds a tiny
random-weight model from the family's own config defaults, shrunk generically (2 layers,
hidden 64, vocabulary 128, 4 experts, a 16-token sliding window where the family has one),
runs `generate(min_new_tokens=T, max_new_tokens=T, do_sample=False)` under FlopCounterMode
with eager attention and eager experts, and compares `llenergymeasure.flops.count_generate`.

Outcomes: exact / traced (the engine gave a number: it must be within TOLERANCE) / refused
(`confidence: unsupported`) / skipped (not a decoder-only text family, or not buildable tiny,
with the reason). Run: `python tests/flops_sweep.py [--out sweep.json] [families...]`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

SHAPE = (2, 12, 8)  # batch, prompt, new: decode caches 12..18 cross a 16-token window's edge
WINDOW = 16
PER_FAMILY_S = 30
SUB_CONFIG_KEYS = (
    "text_config",
    "vision_config",
    "audio_config",
    "decoder_config",
    "encoder_config",
    "speech_config",
    "depth_decoder_config",
    "backbone_config",
    "vq_config",
    "audio_encoder_config",
)
SHRINK = {  # standard name -> tiny value, applied only where the family's config has the field
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 96,
    "vocab_size": 128,
    "head_dim": 16,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 48,
    "num_experts": 4,
    "num_local_experts": 4,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "moe_topk": 2,
    "top_k": 2,
    "n_shared_experts": 1,
    "first_k_dense_replace": 1,
    "kv_lora_rank": 16,
    "q_lora_rank": 24,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 16,
    "n_group": 1,
    "topk_group": 1,
    "ffn_dim": 96,
    "word_embed_proj_dim": 64,
    "max_position_embeddings": 256,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 0,
}


_WIDTH_PARTS = ("size", "dim", "rank", "channels", "d_state", "d_model", "d_inner", "d_conv", "d_ff", "ssm", "width")


class FamilyTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise FamilyTimeout(f"over {PER_FAMILY_S} s")


def tiny_config(model_type: str):
    """The family's default config shrunk generically; (config, None) or (None, skip reason)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    try:
        defaults = cls().to_dict()
    except Exception as exc:
        return None, f"default config does not build ({type(exc).__name__})"
    if defaults.get("is_encoder_decoder"):
        return None, "encoder-decoder"
    if any(defaults.get(key) for key in SUB_CONFIG_KEYS):
        return None, "multimodal or composite (sub-configs)"
    if "is_decoder" in defaults:  # BERT-style encoders that can be run as decoders
        return None, "encoder architecture registered for causal-LM use"
    aliases = dict(getattr(cls, "attribute_map", {}) or {})
    fields = {}
    for name, value in SHRINK.items():
        key = aliases.get(name, name)
        if key in defaults or name in defaults:
            fields[key if key in defaults else name] = value
    for key, value in defaults.items():  # other widths (SSM state, expert, projection sizes): shrunk too
        if key in fields or isinstance(value, bool) or not isinstance(value, int):
            continue
        if any(part in key for part in _WIDTH_PARTS) and "position" not in key and "window" not in key and value > 256:
            fields[key] = 64
        elif "heads" in key and value > 8:
            fields[key] = 4
    if defaults.get("sliding_window"):
        fields["sliding_window"] = WINDOW
    for key in ("attention_chunk_size",):
        if defaults.get(key):
            fields[key] = WINDOW
    try:
        return cls(**fields), None
    except Exception as exc:
        return None, f"tiny config rejected ({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})"


def counted_generate(model, batch: int, prompt: int, new: int) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.randint(
        3, min(model.config.vocab_size, 128), (batch, prompt), generator=torch.Generator().manual_seed(1)
    )
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )
    if out.shape[-1] != prompt + new:
        raise RuntimeError(f"generate returned {out.shape[-1] - prompt} new tokens, not {new}")
    return counter.get_total_flops()


def sweep_one(model_type: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from llenergymeasure import flops

    row = {"family": model_type, "outcome": "skipped", "error": None, "reason": None}
    config, skip = tiny_config(model_type)
    if config is None:
        row["reason"] = skip
        return row
    torch.manual_seed(0)
    try:
        try:
            model = AutoModelForCausalLM.from_config(
                config, attn_implementation="eager", experts_implementation="eager"
            )
        except (TypeError, ValueError):
            model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        model.eval()
        batch, prompt, new = SHAPE
        reference = counted_generate(model, batch, prompt, new)
    except Exception as exc:
        row["reason"] = (
            f"tiny model does not build or generate ({type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''})"
        )
        return row
    if reference <= 0:
        row["reason"] = "FlopCounterMode records no FLOPs for its generate()"
        return row
    hf_config = {**model.config.to_dict(), "model_type": model_type}
    start = time.perf_counter()
    result = flops.count_generate(hf_config, batch, prompt, new)
    row["engine_s"] = round(time.perf_counter() - start, 3)
    row["reference"] = reference
    row["reason"] = result["reason"]
    analytical = result.get("analytical_flops_total")
    row["analytical_error"] = None if analytical is None else analytical / reference - 1
    if result["confidence"] == "unsupported":
        row["outcome"] = "refused"
    else:
        row["outcome"] = result["confidence"]
        row["error"] = result["flops_total"] / reference - 1
    return row


def families() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("families", nargs="*")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)  # tiny matmuls: threads only contend on the 2-core CI machine
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    signal.signal(signal.SIGALRM, _alarm)
    rows, start = [], time.perf_counter()
    for model_type in args.families or families():
        begun = time.perf_counter()
        signal.alarm(PER_FAMILY_S)
        try:
            row = sweep_one(model_type)
        except FamilyTimeout as exc:
            row = {"family": model_type, "outcome": "skipped", "error": None, "reason": f"sweep step {exc}"}
        finally:
            signal.alarm(0)
        row["seconds"] = round(time.perf_counter() - begun, 2)
        rows.append(row)
        error = "" if row.get("error") is None else f"{100 * row['error']:+.4f}%"
        print(
            f"{row['family']:<28} {row['outcome']:<9} {error:>11}  {row['seconds']:6.2f}s  "
            f"{(row.get('reason') or '')[:150]}",
            flush=True,
        )
    total = time.perf_counter() - start
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    print("counts:", json.dumps(counts, sort_keys=True), f"total {total:.1f} s")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "counts": counts, "seconds": total}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
