"""llm-compressor checkpoints: `oneshot` with the shipped calibration text writes a
compressed-tensors checkpoint (gptq-w4a16, awq-w4a16, w8a8-int8).

`preflight` refuses, on the meta device and before calibration, models llm-compressor would
leave unquantised or whose widths break the 4-bit weight groups.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..variants import LLMCOMPRESSOR_QUANTS, QuantiseError, require
from .inputs import library_versions, load_tokenizer

# Group size of the 4-bit schemes (llm-compressor's W4A16 presets use 128; the legacy
# configs use the same so the artefacts are comparable).
W4_GROUP_SIZE = 128
SMOOTHQUANT_STRENGTH = 0.8  # llm-compressor's documented W8A8 recipe


def preflight(model_dir: Path, quant: str, model_type: str, trust_remote_code: bool) -> None:
    """Refuse models llm-compressor would leave unquantised or whose widths break the 4-bit groups.

    Checked on the meta device (no weights), before calibration."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    head = model.get_output_embeddings()
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head]
    require(
        bool(linears),
        f"quant: {quant!r} found no torch.nn.Linear layers to quantise in {model_type!r}; use bnb-* or gguf-*",
    )
    if quant in ("gptq-w4a16", "awq-w4a16"):
        for name, module in linears:
            require(
                module.in_features % W4_GROUP_SIZE == 0,
                f"quant: {quant!r} quantises weights in groups of {W4_GROUP_SIZE} input features but {name} has "
                f"{module.in_features}; use an architecture whose hidden and intermediate sizes are multiples of "
                f"{W4_GROUP_SIZE}, or bnb-*/w8a8-int8",
            )


def llmcompressor_recipe(quant: str) -> list[Any]:
    """The llm-compressor modifiers of a checkpoint variant (as documented by llm-compressor)."""
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier, SmoothQuantModifier

    if quant == "gptq-w4a16":
        return [GPTQModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"])]
    if quant == "awq-w4a16":
        return [AWQModifier(), QuantizationModifier(targets="Linear", scheme="W4A16_ASYM", ignore=["lm_head"])]
    if quant == "w8a8-int8":
        return [
            SmoothQuantModifier(smoothing_strength=SMOOTHQUANT_STRENGTH),
            GPTQModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"]),
        ]
    raise QuantiseError(
        f"quant: {quant!r} is not an llm-compressor variant; allowed: {', '.join(LLMCOMPRESSOR_QUANTS)}"
    )


class _cpu_safe_activation_cache:
    """Work around llm-compressor pinning cached activations when there is no accelerator.

    AWQ pins CPU tensors of its activation cache for faster host-to-device copies; without
    an accelerator `Tensor.pin_memory()` raises. Pinning only speeds transfers, so on a
    machine without one it is skipped; nothing else changes."""

    def __enter__(self) -> None:
        import torch
        from llmcompressor.pipelines.cache import IntermediatesCache

        self.original = IntermediatesCache.pin_memory
        if not torch.accelerator.is_available():
            IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None

    def __exit__(self, *exc: Any) -> None:
        from llmcompressor.pipelines.cache import IntermediatesCache

        IntermediatesCache.pin_memory = self.original


def build_checkpoint(
    model_dir: Path, quant: str, windows: list[list[int]], out: Path, device: str, trust_remote_code: bool
) -> dict[str, Any]:
    """Calibrate with llm-compressor `oneshot` and save a compressed-tensors checkpoint into `out`."""
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype="auto", use_safetensors=True, trust_remote_code=trust_remote_code
    )
    dataset = Dataset.from_dict({"input_ids": windows, "attention_mask": [[1] * len(w) for w in windows]})
    recipe = llmcompressor_recipe(quant)
    torch.manual_seed(0)
    with _cpu_safe_activation_cache():
        oneshot(
            model=model,
            dataset=dataset,
            recipe=recipe,
            num_calibration_samples=len(windows),
            max_seq_length=len(windows[0]),
            shuffle_calibration_samples=False,
            trust_remote_code_model=trust_remote_code,
            output_dir=str(out),
        )
    load_tokenizer(model_dir, trust_remote_code).save_pretrained(out)
    generation = model_dir / "generation_config.json"
    if generation.is_file():
        shutil.copy(generation, out / "generation_config.json")
    config = json.loads((out / "config.json").read_text())
    quantization = config.get("quantization_config") or {}
    require(
        quantization.get("quant_method") == "compressed-tensors",
        f"quant: llm-compressor wrote no compressed-tensors quantization_config for {quant!r}",
    )
    recipe_file = out / "recipe.yaml"
    return {
        "library": "llm-compressor",
        "libraries": library_versions(("llmcompressor", "compressed-tensors", "transformers", "torch")),
        "calibration_device": "cuda" if torch.cuda.is_available() else "cpu",
        "recipe": recipe_file.read_text() if recipe_file.is_file() else None,
        "format": quantization.get("format"),
        "ignore": quantization.get("ignore"),
    }
