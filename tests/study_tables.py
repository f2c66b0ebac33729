"""Small hand-made study tables for the analysis, figure and notebook tests.

The numbers are invented (tests only): a per-trial table with every column the analyses
and figures read, built from simple rules so a test can predict its shape. Energy per token
falls with batch size, quantised variants cost more energy on the CPU platform and less on
the GPU one, and the GPU platform's energy is measured (not an estimate).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from llenergymeasure import stats

CHOICES = [
    ("tiny-llama", "none-float32", "pytorch"),
    ("tiny-llama", "none-bfloat16", "pytorch"),
    ("tiny-llama", "bnb-nf4", "pytorch"),
    ("tiny-llama", "gguf-q8_0", "llamacpp"),
    ("tiny-gpt2", "none-float32", "pytorch"),
    ("tiny-gpt2", "bnb-int8", "pytorch"),
]
FAMILIES = {"tiny-llama": "llama", "tiny-gpt2": "gpt2"}
REFERENCE = {"model": "tiny-llama", "quant": "none-float32", "backend": "pytorch"}
CONFIG_ANALYSIS = {
    "reference": REFERENCE,
    "compound_metrics": [
        "flops_per_output_token",
        "latency_s",
        "peak_memory_bytes",
        "energy_j_per_output_token",
    ],
    "extra_results": [],
}
_QUANT_COST = {"none-float32": 1.0, "none-bfloat16": 0.8, "bnb-nf4": 1.6, "gguf-q8_0": 0.7, "bnb-int8": 1.9}
_PLATFORMS = {
    "cpu-test": {
        "scale": 1.0,
        "device": "cpu",
        "device_name": "Test CPU",
        "estimate": True,
        "source": "estimate-cpu-tdp",
    },
    "gpu-test": {
        "scale": 0.05,
        "device": "cuda",
        "device_name": "NVIDIA H100 80GB HBM3",
        "estimate": False,
        "source": "zeus-nvml",
    },
}


def measurements(
    platforms: tuple[str, ...] = ("cpu-test",),
    batch_sizes: tuple[int, ...] = (1, 4),
    trials: int = 3,
    failed_batch: int | None = None,
) -> pd.DataFrame:
    """Per-trial rows; `failed_batch` makes every trial at that batch size fail (as OOM)."""
    rng = np.random.default_rng(7)
    rows = []
    for platform in platforms:
        spec = _PLATFORMS[platform]
        for model, quant, backend in CHOICES:
            size = 1.0 if model == "tiny-llama" else 0.7
            quant_cost = _QUANT_COST[quant]
            if platform == "gpu-test" and quant != "none-float32":
                quant_cost = 1.0 / quant_cost  # quantisation pays off on the GPU
            for batch in batch_sizes:
                for trial in range(trials):
                    noise = 1.0 + 0.01 * rng.standard_normal()
                    per_token = spec["scale"] * size * quant_cost * (1.0 + 3.0 / batch) * noise
                    latency = per_token * 32 * 0.4
                    failed = batch == failed_batch
                    ok = lambda value, failed=failed: None if failed else value  # noqa: E731
                    flops_per_token = 2.6e6 * size * (1.0 + 0.01 * (model == "tiny-llama"))
                    rows.append(
                        {
                            "platform_id": platform,
                            "model": model,
                            "quant": quant,
                            "backend": backend,
                            "batch_size": batch,
                            "prompt_tokens": 64,
                            "output_tokens": 32,
                            "trial": trial,
                            "status": "failed" if failed else "ok",
                            "error": "CUDA out of memory" if failed else None,
                            "dtype": "bfloat16" if "bfloat16" in quant else "float32",
                            "quant_method": quant.split("-")[0] if quant.startswith("none") else quant,
                            "latency_s": ok(latency),
                            "ttft_s": ok(latency * 0.1),
                            "tpot_s": ok(latency * 0.9 / 31),
                            "tokens_per_s": ok(batch * 32 / latency),
                            "energy_j": ok(per_token * batch * 32),
                            "energy_j_per_output_token": ok(per_token),
                            "energy_prefill_j": ok(per_token * batch * 32 * 0.2),
                            "energy_decode_j": ok(per_token * batch * 32 * 0.8),
                            "energy_source": spec["source"],
                            "energy_is_estimate": spec["estimate"],
                            "peak_memory_bytes": ok(int(4e6 * size / quant_cost + 1e5 * batch)),
                            "weights": "random",
                            "perplexity": 500.0 + 10.0 * _QUANT_COST[quant] + 5.0 * size,
                            "device": spec["device"],
                            "device_name": spec["device_name"],
                            "flops_total": flops_per_token * batch * 32,
                            "flops_per_output_token": flops_per_token,
                            "flops_2n_reference": 0.95 * flops_per_token * batch * 32,
                        }
                    )
    return pd.DataFrame(rows)


def tables(platforms: tuple[str, ...] = ("cpu-test",), **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(measurements, summary) as the aggregate rule writes them."""
    trials = measurements(platforms, **kwargs)
    return trials, stats.summarise(trials)
