"""`build_variant`: one (model, quant) pair's weights, manifest and perplexity, in named steps.

plan (every input check) -> weights (a checkpoint, or load-time settings) -> manifest ->
perplexity (the variant loaded as the pytorch backends load it) -> variant.json.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ..backends.base import LoadInfo
from ..backends.loading import load_model
from ..io import sha256_file, staged_directory
from ..manifest import VariantManifest
from ..variants import BNB_QUANTS, LEGACY_QUANTS, LLMCOMPRESSOR_QUANTS, bnb_settings
from . import legacy, llm_compressor
from .inputs import BuildPlan, calibration_windows, library_versions, load_tokenizer, plan_build, plan_calibration

log = logging.getLogger("llenergymeasure.quantise")


def build_variant(model_dir: str, quant: str, settings: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Build variant `quant` of the model in `model_dir` into `out_dir`; write and return variant.json.

    `settings` holds the config's `quantisation` and `evaluation` sections and `device`."""
    plan = plan_build(model_dir, quant, settings)  # every input check happens before anything expensive
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    variant = _manifest(plan, str(model_dir))
    if plan.spec.makes_checkpoint:
        _build_checkpoint(plan, out, variant)
    else:
        _describe_load_time_quantisation(plan, variant)
    info = _score_perplexity(plan, variant)
    variant.write(out)
    log.info(
        "variant %s of %s: %s bytes on disk, perplexity %.4g over %d tokens (%s)",
        quant,
        variant.model,
        variant.weight_bytes_disk,
        variant.perplexity,
        variant.perplexity_tokens,
        info.kernel_path,
    )
    return variant.to_json()


def _manifest(plan: BuildPlan, model_dir: str) -> VariantManifest:
    """The manifest before weights and evaluation: what the variant is and where it comes from."""
    return VariantManifest(
        model=str(plan.model_manifest.get("model") or plan.model_dir.name),
        quant=plan.quant,
        quant_method=plan.spec.method,
        weight_bits=plan.spec.weight_bits,
        compute_dtype=_manifest_compute_dtype(plan),
        load_dtype=_load_dtype(plan),
        model_dir=model_dir,
        weights=plan.model_manifest.get("weights", "random"),
        settings={"trust_remote_code": plan.trust_remote_code, "device": plan.device},
    )


def _build_checkpoint(plan: BuildPlan, out: Path, variant: VariantManifest) -> None:
    """Calibrate and write `out/checkpoint/`; record the checkpoint, its bytes and the build settings."""
    start = time.perf_counter()
    calibration = plan_calibration(plan)
    windows = calibration_windows(plan.model_dir, calibration, plan.trust_remote_code)
    if plan.quant in LLMCOMPRESSOR_QUANTS:
        llm_compressor.preflight(plan.model_dir, plan.quant, plan.model_type, plan.trust_remote_code)
    variant.settings["calibration"] = {
        "text": calibration.text,
        "text_sha256": sha256_file(calibration.path),
        "samples": calibration.count,
        "sequence_length": calibration.length,
    }
    checkpoint_dir = out / "checkpoint"
    builder = llm_compressor.build_checkpoint if plan.quant in LLMCOMPRESSOR_QUANTS else legacy.build_checkpoint
    with staged_directory(checkpoint_dir) as staging:
        variant.settings.update(
            builder(plan.model_dir, plan.quant, windows, staging, plan.device, plan.trust_remote_code)
        )
    variant.checkpoint_dir = str(checkpoint_dir)
    variant.checkpoint_file = sorted(p.name for p in checkpoint_dir.glob("*.safetensors"))[0]
    variant.weight_bytes_disk = _safetensors_bytes(checkpoint_dir)
    variant.settings["build_s"] = round(time.perf_counter() - start, 3)


def _describe_load_time_quantisation(plan: BuildPlan, variant: VariantManifest) -> None:
    """none-* and bnb-*: no new weights; record the libraries and bitsandbytes' settings."""
    variant.weight_bytes_disk = _safetensors_bytes(plan.model_dir)
    variant.settings["libraries"] = library_versions(("torch", "transformers", "bitsandbytes"))
    if plan.quant in BNB_QUANTS:
        variant.settings.update(bnb_settings(plan.quant, plan.bnb_compute))


def _score_perplexity(plan: BuildPlan, variant: VariantManifest) -> LoadInfo:
    """Load the variant as measure will and score it on the evaluation text."""
    from ..quality import perplexity

    evaluation = plan.evaluation
    model, info = load_model(variant, plan.device)
    tokenizer = load_tokenizer(plan.model_dir, plan.trust_remote_code)
    variant.perplexity, variant.perplexity_tokens = perplexity(
        model, tokenizer, evaluation.path.read_text(encoding="utf-8"), evaluation.length, evaluation.count
    )
    variant.settings["evaluation"] = {
        "text": evaluation.text,
        "text_sha256": sha256_file(evaluation.path),
        "sequence_length": evaluation.length,
        "max_sequences": evaluation.count,
        "device": plan.device,
        "kernel_path": info.kernel_path,
    }
    del model
    return info


# -- dtypes and bytes --------------------------------------------------------------------------


def _manifest_compute_dtype(plan: BuildPlan) -> str:
    """The compute dtype the variant is meant to run at (LoadInfo reports what actually runs)."""
    if plan.spec.compute_dtype is not None:
        return plan.spec.compute_dtype
    if plan.quant in BNB_QUANTS:
        return plan.bnb_compute
    return _checkpoint_dtype(plan.model_dir)


def _load_dtype(plan: BuildPlan) -> str:
    """The dtype of the non-quantised tensors after loading."""
    if plan.spec.method == "none":
        return str(plan.spec.compute_dtype)
    if plan.quant in BNB_QUANTS:
        return plan.bnb_compute
    if plan.quant in LEGACY_QUANTS:
        return "float16"
    return _checkpoint_dtype(plan.model_dir)


def _checkpoint_dtype(model_dir: Path) -> str:
    config = json.loads((model_dir / "config.json").read_text())
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return str(dtype).replace("torch.", "")


def _safetensors_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in sorted(directory.glob("*.safetensors")))
