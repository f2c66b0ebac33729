"""How wrong is the field's `2N x tokens` inference-FLOPs formula? Prints its error against the
exact analytical count of generate() for real-model shapes (config/models/*.json).

    python benchmarks/flops_error_table.py [--batch 1] [--new 256] [--verify] [--csv out.csv]

2N uses non-embedding parameters (all experts for MoE, as usually quoted) times the positions
the model processes (B x (S + T - 1)). `--verify` re-counts prefill plus one decode step of
the dense models at full size with torch's FlopCounterMode on the meta device (no weights,
no memory) and prints the relative difference from the analytical count.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "workflow" / "scripts"))

from llenergymeasure import flops  # noqa: E402

MODELS = {
    "Llama-3-8B": "llama-3-8b",
    "Qwen2-0.5B": "qwen2-0.5b",
    "Mistral-7B": "mistral-7b",
    "Mixtral-8x7B": "mixtral-8x7b",
    "GPT-2": "gpt2",
}
PROMPTS = (128, 256, 512, 1024, 2048, 4096)


def load(name: str) -> dict:
    return json.loads((REPO_ROOT / "config" / "models" / f"{name}.json").read_text())


def max_positions(config: dict) -> int | None:
    return config.get("max_position_embeddings") or config.get("n_positions")


def error(approx: float, exact: float) -> float:
    return 100.0 * (approx / exact - 1.0)


def verify_on_meta(config: dict, prompt: int) -> float | None:
    """Relative difference between FlopCounterMode (prefill + one decode step) and the count."""
    if config["model_type"] in ("mixtral", "qwen2_moe"):
        return None  # eager experts route data-dependently; meta tensors hold no data
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

    fields = {k: v for k, v in config.items() if k != "model_type"}
    hf_config = AutoConfig.for_model(config["model_type"], **fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, attn_implementation="eager").eval()
        ids = torch.zeros((1, prompt), dtype=torch.long)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            out = model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                use_cache=True,
                past_key_values=DynamicCache(config=model.config),
                logits_to_keep=1,
            )
            model(
                input_ids=ids[:, :1],
                attention_mask=torch.ones((1, prompt + 1), dtype=torch.long),
                past_key_values=out.past_key_values,
                use_cache=True,
                logits_to_keep=1,
            )
    expected = flops.count_generate(config, 1, prompt, 2)["flops_total"]
    return (expected - counter.get_total_flops()) / counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--new", type=int, default=256, help="new tokens for the generate columns")
    parser.add_argument("--verify", action="store_true", help="re-count dense models on the meta device")
    parser.add_argument("--csv", type=Path, help="also write the table here")
    args = parser.parse_args(argv)

    header = [
        "model",
        "prompt",
        "exact_prefill_gflop",
        "2n_err_prefill_pct",
        f"exact_gen{args.new}_gflop",
        f"2n_err_gen{args.new}_pct",
        "2n_active_err_gen_pct",
        "attention_share_gen_pct",
    ]
    if args.verify:
        header.append("meta_counter_rel_diff")
    rows: list[list] = []
    for label, name in MODELS.items():
        config = load(name)
        limit = max_positions(config)
        for prompt in PROMPTS:
            if limit and prompt > limit:
                rows.append([label, prompt, f"n/a (> {limit} positions)"] + [""] * (len(header) - 3))
                continue
            prefill = flops.count_generate(config, args.batch, prompt, 1)
            row = [
                label,
                prompt,
                f"{prefill['flops_total'] / 1e9:,.1f}",
                f"{error(prefill['flops_2n_reference'], prefill['flops_total']):+.1f}",
            ]
            if limit and prompt + args.new - 1 > limit:
                row += [f"n/a (> {limit} positions)", "", "", ""]
            else:
                gen = flops.count_generate(config, args.batch, prompt, args.new)
                active_2n = 2 * gen["params_active"] * args.batch * (prompt + args.new - 1)
                row += [
                    f"{gen['flops_total'] / 1e9:,.1f}",
                    f"{error(gen['flops_2n_reference'], gen['flops_total']):+.1f}",
                    f"{error(active_2n, gen['flops_total']):+.1f}",
                    f"{100 * gen['flops_attention'] / gen['flops_total']:.1f}",
                ]
            if args.verify:
                diff = verify_on_meta(config, prompt)
                row.append("n/a (MoE)" if diff is None else f"{diff:.1e}")
            rows.append(row)

    widths = [max(len(str(r[i])) for r in [*rows, header]) for i in range(len(header))]
    print(f"batch={args.batch}; 2N = 2 x non-embedding params x B x (S + T - 1); error = 2N / exact - 1")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))
    if args.csv:
        with args.csv.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
