"""Load a built PyTorch variant the way the pytorch backends run it.

`load_model` reads a `VariantManifest` (the variant.json the quantise rule wrote): none-*
load the float32 model at another dtype, bnb-* quantise at load time with bitsandbytes,
llm-compressor checkpoints load through compressed-tensors, and the legacy auto-gptq /
autoawq checkpoints through their own libraries (CUDA only). It returns the model and a
`LoadInfo` from `probe.describe_loaded`: what actually computes the matmuls.

Nothing here builds artefacts; the build stage (`quantise`) imports this module to score
what it built, never the other way round.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..manifest import VariantManifest
from ..variants import (
    BNB_QUANTS,
    DTYPES,
    LEGACY_LIBRARIES,
    LLMCOMPRESSOR_QUANTS,
    VARIANTS,
    QuantiseError,
    bnb_settings,
    check_supported,
    require,
)
from .base import LoadInfo
from .probe import describe_loaded


def resolve_torch_device(device: str | None) -> str:
    """`cpu` or `cuda`; `auto` (or None) asks torch whether a GPU is usable."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    require(device in ("cpu", "cuda"), f"device: {device!r} is not allowed; allowed values: auto, cpu, cuda")
    return str(device)


def torch_dtype(name: str) -> Any:
    import torch

    require(name in DTYPES, f"dtype: {name!r} is not allowed; allowed values: {', '.join(DTYPES)}")
    return getattr(torch, name)


def import_legacy(quant: str) -> Any:
    """The archived auto-gptq / deprecated autoawq module of a legacy variant, or a one-line error."""
    library, status, alternative = LEGACY_LIBRARIES[quant]
    module = "auto_gptq" if quant == "gptq-autogptq" else "awq"
    try:
        return __import__(module)
    except ImportError as exc:
        env = VARIANTS[quant].env
        raise QuantiseError(
            f"quant: {quant!r} needs the {status} {library} package, which is not importable here ({exc}); "
            f"run it in envs/{env}.yaml (snakemake --sdm conda) or use {alternative}"
        ) from None


def load_model(variant: VariantManifest | Mapping[str, Any], device: str) -> tuple[Any, LoadInfo]:
    """Load a variant for inference on `device` and describe what runs its matmuls."""
    variant = VariantManifest.coerce(variant)
    quant = variant.quant
    spec = VARIANTS.get(quant)
    require(spec is not None, f"variant.quant: unknown variant {quant!r}; allowed: {', '.join(VARIANTS)}")
    require(
        not quant.startswith("gguf-"), f"variant.quant: {quant!r} is a GGUF file; load it with the llamacpp backend"
    )
    device = resolve_torch_device(device)
    problem = check_supported(quant, device == "cuda")
    require(problem is None, f"variant.quant: {problem}")
    trust = bool(variant.settings.get("trust_remote_code", False))
    start = time.perf_counter()
    model = _load_weights(variant, spec.method, device, trust)
    model.eval()
    info = describe_loaded(model, spec, device, variant)
    info.load_s = time.perf_counter() - start
    return model, info


def _load_weights(variant: VariantManifest, method: str, device: str, trust: bool) -> Any:
    """The model of one variant, loaded by the library its method needs."""
    quant = variant.quant
    if method == "none":
        return _from_pretrained(variant.model_dir, device, trust, dtype=torch_dtype(VARIANTS[quant].compute_dtype))
    if quant in BNB_QUANTS:
        return _load_bnb(variant, device, trust)
    if quant in LLMCOMPRESSOR_QUANTS:
        return _from_pretrained(_checkpoint_dir(variant), device, trust, dtype="auto")
    if quant == "gptq-autogptq":
        import_legacy(quant)
        from auto_gptq import AutoGPTQForCausalLM

        return AutoGPTQForCausalLM.from_quantized(
            str(_checkpoint_dir(variant)), device="cuda:0", use_safetensors=True, trust_remote_code=trust
        ).model
    if quant == "awq-autoawq":
        import_legacy(quant)
        from awq import AutoAWQForCausalLM

        return AutoAWQForCausalLM.from_quantized(
            str(_checkpoint_dir(variant)),
            fuse_layers=False,
            safetensors=True,
            trust_remote_code=trust,
            device_map={"": "cuda:0"},
        ).model
    raise QuantiseError(f"variant.quant: no loader for {quant!r}")  # pragma: no cover - the catalogue is covered


def _checkpoint_dir(variant: VariantManifest) -> Path:
    directory = variant.checkpoint_dir
    require(
        bool(directory) and Path(directory).is_dir(),
        f"variant.checkpoint_dir: {directory!r} is not a directory; rebuild the variant with the quantise rule",
    )
    return Path(directory)


def _from_pretrained(path: str | Path, device: str, trust_remote_code: bool, **kwargs: Any) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, device_map=device, use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs
    )


def _load_bnb(variant: VariantManifest, device: str, trust_remote_code: bool) -> Any:
    from transformers import BitsAndBytesConfig

    bnb = variant.settings.get("bnb") or bnb_settings(variant.quant, variant.load_dtype or "float32")["bnb"]
    if bnb.get("load_in_8bit"):
        config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=float(bnb["llm_int8_threshold"]))
        dtype = torch_dtype(bnb.get("non_quantised_dtype", "float32"))
    else:
        dtype = torch_dtype(bnb["bnb_4bit_compute_dtype"])
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=bnb["bnb_4bit_quant_type"],
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=bool(bnb.get("bnb_4bit_use_double_quant", False)),
        )
    return _from_pretrained(variant.model_dir, device, trust_remote_code, dtype=dtype, quantization_config=config)
