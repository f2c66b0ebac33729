"""`llenergymeasure flops`: the verified FLOP count of generate() for a config.json.

Bad arguments exit 2 with one line naming the argument. A config the engine cannot count
exits 3 with one line giving the reason (`--json` still prints the refusal object first).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llenergymeasure.variants import VARIANTS

from .architecture import FlopsConfigError
from .counting import count_generate

UNSUPPORTED_EXIT = 3


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `llenergymeasure flops`."""
    parser = subparsers.add_parser(
        "flops",
        help="exact analytical FLOPs of generate() for a Hugging Face config.json",
        description="Count the FLOPs of generate(max_new_tokens=NEW) on BATCH prompts of PROMPT tokens.",
    )
    parser.add_argument("--model-config", required=True, metavar="PATH", help="a Hugging Face config.json")
    parser.add_argument("--batch", required=True, metavar="B", help="sequences per generate call")
    parser.add_argument("--prompt", required=True, metavar="S", help="prompt tokens per sequence")
    parser.add_argument("--new", required=True, metavar="T", help="new tokens per sequence")
    parser.add_argument("--quant", default=None, metavar="METHOD", help=f"variant name ({', '.join(VARIANTS)})")
    parser.add_argument(
        "--static-cache",
        default=None,
        metavar="L",
        help="static KV cache length (the pytorch-compiled backend: prompt + its max_new_tokens)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run_cli)


def _cli_error(message: str) -> int:
    print(f"llenergymeasure flops: error: {message}", file=sys.stderr)
    return 2


def run_cli(args: argparse.Namespace) -> int:
    """Validate the arguments (each error names its argument, exit code 2), count, print."""
    sizes: dict[str, int] = {}
    for name in ("batch", "prompt", "new", "static_cache"):
        raw = getattr(args, name, None)
        if raw is None and name == "static_cache":
            sizes[name] = None
            continue
        try:
            value = int(str(raw).strip())
        except ValueError:
            value = 0
        if value <= 0:
            return _cli_error(f"--{name.replace('_', '-')}: must be a positive integer, got '{raw}'")
        sizes[name] = value
    if args.quant is not None and args.quant not in VARIANTS:
        return _cli_error(f"--quant: '{args.quant}' is not a known variant; allowed: {', '.join(VARIANTS)}")
    path = Path(args.model_config)
    if not path.is_file():
        return _cli_error(f"--model-config: no such file '{path}'")
    try:
        hf_config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _cli_error(f"--model-config: '{path}' is not readable JSON ({exc})")
    try:
        result = count_generate(
            hf_config, sizes["batch"], sizes["prompt"], sizes["new"], args.quant, static_cache_len=sizes["static_cache"]
        )
    except FlopsConfigError as exc:
        return _cli_error(f"--model-config: {exc}")
    if args.json:
        print(json.dumps({"model_config": str(path), **result}, sort_keys=True))
    elif result["confidence"] != "unsupported":
        print(format_table(result, str(path)))
    if result["confidence"] == "unsupported":
        print(f"llenergymeasure flops: unsupported: {result['reason']}", file=sys.stderr)
        return UNSUPPORTED_EXIT
    return 0


def format_table(result: dict[str, Any], source: str = "") -> str:
    """A human-readable summary of a count_generate result."""
    quant = result.get("quant") or "none"
    lines = [
        f"{source}  model_type={result['model_type'] or '?'}  batch={result['batch']}  "
        f"prompt={result['prompt']}  new={result['new']}  quant={quant}",
        f"method={result['method']}  confidence={result['confidence']}"
        + (f"  compute_dtype={result['compute_dtype']}" if result.get("compute_dtype") else ""),
    ]
    if result.get("reason"):
        lines.append(f"reason: {result['reason']}")
    rows = [
        "flops_prefill",
        "flops_decode",
        "flops_total",
        "flops_per_output_token",
        "flops_attention",
        "flops_attention_causal",
        "flops_lm_head",
        "flops_2n_reference",
        "int_ops_total",
        "trace_seconds",
        "params_total",
        "params_non_embedding",
        "params_active",
    ]
    width = max(len(name) for name in rows)
    for name in rows:
        value = result.get(name)
        if value is None:
            shown = "-"
        elif isinstance(value, float) and not value.is_integer():
            shown = f"{value:.6g}"
        else:
            shown = f"{value:,}" if isinstance(value, int) else f"{value:.4g}"
            if isinstance(value, int) and abs(value) >= 1e6:
                shown += f"  ({value:.4g})"
        lines.append(f"  {name:<{width}}  {shown}")
    exact = result["flops_total"]
    if exact and result.get("flops_2n_reference"):
        lines.append(
            f"  2N formula ({result['flops_2n_parameters']}) error vs this count: "
            f"{100 * (result['flops_2n_reference'] / exact - 1):+.2f}%"
        )
    if result.get("structure"):
        lines.append("  structure: " + ", ".join(f"{k}={v}" for k, v in result["structure"].items()))
    return "\n".join(lines)
