"""Quantised variants as real artefacts: build them, describe them, load them.

`build_variant` makes the `variant.json` of one (model, quant) pair and, for checkpoint
methods, the checkpoint itself:

* `none-*`  load the float32 model at another dtype; manifest only.
* `bnb-*`   bitsandbytes quantises at load time (LLM.int8, NF4, FP4); manifest only.
* `gptq-w4a16`, `awq-w4a16`, `w8a8-int8`  llm-compressor `oneshot` with the shipped
  calibration text -> a compressed-tensors checkpoint (`<out_dir>/checkpoint/`).
* `gptq-autogptq`, `awq-autoawq`  the archived auto-gptq / deprecated autoawq libraries,
  each in its own env (transformers < 5, CUDA only), for reproducing older artefacts.

`load_model` loads a variant the way the pytorch backends run it and reports, in a
`LoadInfo`, what actually computes the matmuls: the quantised module classes and the
kernels observed (with torch.profiler) in one prefill and one decode step, the bytes of
weights resident after that, and whether a quantised checkpoint ended up decompressed.

Nothing here imports torch at module import: `check_supported` is used by config validation.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from .backends.base import LoadInfo
from .io import sha256_file, write_json_atomic
from .variants import VARIANTS, VariantSpec

log = logging.getLogger(__name__)

LLMCOMPRESSOR_QUANTS = ("gptq-w4a16", "awq-w4a16", "w8a8-int8")
LEGACY_QUANTS = ("gptq-autogptq", "awq-autoawq")
BNB_QUANTS = ("bnb-int8", "bnb-nf4", "bnb-fp4")
DTYPES = ("float32", "float16", "bfloat16")

# Group size of the 4-bit schemes (llm-compressor's W4A16 presets use 128; the legacy
# configs below use the same so the artefacts are comparable).
W4_GROUP_SIZE = 128
SMOOTHQUANT_STRENGTH = 0.8  # llm-compressor's documented W8A8 recipe
LLM_INT8_THRESHOLD = 6.0  # bitsandbytes' default outlier threshold

# Model types whose projections are transformers `Conv1D`, not `torch.nn.Linear`:
# llm-compressor targets Linear layers, so it would leave them unquantised.
CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer"})

_LEGACY_LIBRARY = {
    "gptq-autogptq": ("auto-gptq", "archived", "gptq-w4a16"),
    "awq-autoawq": ("autoawq", "deprecated", "awq-w4a16"),
}

PROBE_PROMPT_TOKENS = 4  # the kernel-detection probe: one prefill of 4 tokens, one decode step


class QuantiseError(ValueError):
    """A variant cannot be built or loaded here; one line naming the field and the fix."""


# ---------------------------------------------------------------------------------------
# validation (pure, no torch)
# ---------------------------------------------------------------------------------------


def check_supported(quant: str, device_has_cuda: bool, model_type: str | None = None) -> str | None:
    """Why `quant` cannot be built on this machine (or for this model type), or None if it can."""
    spec = VARIANTS.get(quant)
    if spec is None:
        return f"unknown variant {quant!r}; allowed: {', '.join(VARIANTS)}"
    if spec.needs_cuda and not device_has_cuda:
        library, status, alternative = _LEGACY_LIBRARY.get(quant, (spec.method, "", ""))
        legacy = f" ({status}; kept only to reproduce older artefacts)" if spec.legacy else ""
        instead = f"; on CPU use {alternative} (llm-compressor) instead" if alternative else ""
        return f"{quant!r} is built with {library}{legacy}, which needs CUDA, and no GPU is visible{instead}"
    if quant in LLMCOMPRESSOR_QUANTS and model_type in CONV1D_MODEL_TYPES:
        return (
            f"{quant!r} is made with llm-compressor, which quantises torch.nn.Linear layers, but model type "
            f"{model_type!r} uses transformers Conv1D layers and would stay unquantised; use bnb-* or gguf-* for it"
        )
    return None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise QuantiseError(message)


def _settings_section(settings: dict[str, Any], name: str) -> dict[str, Any]:
    section = settings.get(name)
    _require(isinstance(section, dict), f"{name}: missing from the settings given to the quantise step; pass the config's {name} section")
    return section


def _text_path(path: str, field: str) -> Path:
    """A config text path, relative to the working directory or the repository."""
    from .config import REPO_ROOT

    candidate = Path(path)
    for resolved in (candidate, REPO_ROOT / candidate):
        if resolved.is_file():
            return resolved
    raise QuantiseError(f"{field}: file {path!r} does not exist; ship the text or fix the path")


def _positive_int(section: dict[str, Any], key: str, field: str) -> int:
    value = section.get(key)
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, f"{field}.{key}: {value!r} must be a positive integer")
    return int(value)


def _resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    _require(device in ("cpu", "cuda"), f"device: {device!r} is not allowed; allowed values: auto, cpu, cuda")
    return str(device)


# ---------------------------------------------------------------------------------------
# model directory helpers
# ---------------------------------------------------------------------------------------


def read_model_manifest(model_dir: str | Path) -> dict[str, Any]:
    """`model_manifest.json` of a materialised model directory ({} if absent)."""
    path = Path(model_dir) / "model_manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _model_type(model_dir: Path) -> str:
    config = model_dir / "config.json"
    _require(config.is_file(), f"model_dir: {str(model_dir)!r} has no config.json; build it with the model rule first")
    return str(json.loads(config.read_text()).get("model_type", ""))


def _safetensors_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in sorted(directory.glob("*.safetensors")))


def _library_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _llmcompressor_preflight(model_dir: Path, quant: str, model_type: str, trust_remote_code: bool) -> None:
    """Refuse models llm-compressor would leave unquantised or whose widths break the 4-bit groups.

    Checked on the meta device (no weights), before calibration."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    head = model.get_output_embeddings()
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head]
    _require(bool(linears), f"quant: {quant!r} found no torch.nn.Linear layers to quantise in {model_type!r}; use bnb-* or gguf-*")
    if quant in ("gptq-w4a16", "awq-w4a16"):
        for name, module in linears:
            _require(
                module.in_features % W4_GROUP_SIZE == 0,
                f"quant: {quant!r} quantises weights in groups of {W4_GROUP_SIZE} input features but {name} has "
                f"{module.in_features}; use an architecture whose hidden and intermediate sizes are multiples of "
                f"{W4_GROUP_SIZE}, or bnb-*/w8a8-int8",
            )


# ---------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------


def build_variant(model_dir: str, quant: str, settings: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Build variant `quant` of the model in `model_dir` into `out_dir`; write and return variant.json.

    `settings` holds the config's `quantisation` and `evaluation` sections and `device`."""
    spec = VARIANTS.get(quant)
    _require(spec is not None, f"quant: unknown variant {quant!r}; allowed: {', '.join(VARIANTS)}")
    _require(not quant.startswith("gguf-"), f"quant: {quant!r} is built by the gguf rule (llama.cpp), not the quantise step")
    model_path = Path(model_dir)
    model_type = _model_type(model_path)
    device = _resolve_device(settings.get("device", "auto"))
    problem = check_supported(quant, device == "cuda", model_type)
    _require(problem is None, f"quant: {problem}")

    # Every input check happens before anything expensive.
    quantisation = _settings_section(settings, "quantisation")
    evaluation = _settings_section(settings, "evaluation")
    compute = quantisation.get("bnb_compute_dtype", "float32")
    _require(compute in DTYPES, f"quantisation.bnb_compute_dtype: {compute!r} is not allowed; allowed values: {', '.join(DTYPES)}")
    eval_text = _text_path(evaluation.get("text", ""), "evaluation.text")
    eval_length = _positive_int(evaluation, "sequence_length", "evaluation")
    eval_sequences = _positive_int(evaluation, "max_sequences", "evaluation")
    manifest = read_model_manifest(model_path)
    trust_remote_code = bool(manifest.get("trust_remote_code", False))
    _evaluation_windows(model_path, eval_text, eval_length, eval_sequences, trust_remote_code)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    method_settings: dict[str, Any] = {"trust_remote_code": trust_remote_code, "device": device}
    checkpoint_dir: Path | None = None
    checkpoint_file: str | None = None
    start = time.perf_counter()
    if spec.makes_checkpoint:
        calibration = _settings_section(quantisation, "calibration")
        calib_text = _text_path(calibration.get("text", ""), "quantisation.calibration.text")
        samples = _positive_int(calibration, "samples", "quantisation.calibration")
        length = _positive_int(calibration, "sequence_length", "quantisation.calibration")
        windows = _calibration_windows(model_path, calib_text, samples, length, trust_remote_code)
        if quant in LLMCOMPRESSOR_QUANTS:
            _llmcompressor_preflight(model_path, quant, model_type, trust_remote_code)
        method_settings["calibration"] = {
            "text": str(calibration["text"]),
            "text_sha256": sha256_file(calib_text),
            "samples": samples,
            "sequence_length": length,
        }
        checkpoint_dir = out / "checkpoint"
        with _staging_dir(checkpoint_dir) as staging:
            builder = _llmcompressor_checkpoint if quant in LLMCOMPRESSOR_QUANTS else _legacy_checkpoint
            method_settings.update(builder(model_path, quant, windows, staging, device, trust_remote_code))
        checkpoint_file = sorted(p.name for p in checkpoint_dir.glob("*.safetensors"))[0]
        weight_bytes_disk = _safetensors_bytes(checkpoint_dir)
        method_settings["build_s"] = round(time.perf_counter() - start, 3)
    else:
        weight_bytes_disk = _safetensors_bytes(model_path)
        method_settings["libraries"] = _library_versions(("torch", "transformers", "bitsandbytes"))
        if quant in BNB_QUANTS:
            method_settings.update(_bnb_settings(quant, compute))

    variant = {
        "model": str(manifest.get("model") or model_path.name),
        "quant": quant,
        "quant_method": spec.method,
        "weight_bits": spec.weight_bits,
        "compute_dtype": _manifest_compute_dtype(spec, compute, model_path),
        "load_dtype": _load_dtype(spec, compute, model_path),
        "model_dir": str(model_dir),
        "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None,
        "checkpoint_file": checkpoint_file,
        "weight_bytes_disk": int(weight_bytes_disk),
        "weights": manifest.get("weights", "random"),
        "perplexity": None,
        "perplexity_tokens": None,
        "settings": method_settings,
    }

    from .quality import perplexity

    model, info = load_model(variant, device)
    tokenizer = _load_tokenizer(model_path, trust_remote_code)
    ppl, tokens = perplexity(model, tokenizer, eval_text.read_text(encoding="utf-8"), eval_length, eval_sequences)
    variant["perplexity"] = ppl
    variant["perplexity_tokens"] = tokens
    variant["settings"]["evaluation"] = {
        "text": str(evaluation["text"]),
        "text_sha256": sha256_file(eval_text),
        "sequence_length": eval_length,
        "max_sequences": eval_sequences,
        "device": device,
        "kernel_path": info.kernel_path,
    }
    del model
    write_json_atomic(out / "variant.json", variant)
    log.info("variant %s of %s: %s bytes on disk, perplexity %.4g over %d tokens (%s)", quant, variant["model"],
             weight_bytes_disk, ppl, tokens, info.kernel_path)
    return variant


def write_manifest(out_dir: str | Path, variant: dict[str, Any]) -> None:
    """Write a variant.json atomically (for other builders, e.g. the gguf rule)."""
    missing = [key for key in ("model", "quant", "quant_method", "weight_bits", "compute_dtype", "model_dir", "weight_bytes_disk") if key not in variant]
    _require(not missing, f"variant.json: missing field(s) {', '.join(missing)}")
    record = {"load_dtype": None, "checkpoint_dir": None, "checkpoint_file": None, "weights": "random",
              "perplexity": None, "perplexity_tokens": None, "settings": {}, **variant}
    write_json_atomic(Path(out_dir) / "variant.json", record)


def _manifest_compute_dtype(spec: VariantSpec, bnb_compute: str, model_dir: Path) -> str:
    """The compute dtype the variant is meant to run at (LoadInfo reports what actually runs)."""
    if spec.compute_dtype is not None:
        return spec.compute_dtype
    if spec.name in BNB_QUANTS:
        return bnb_compute
    return _checkpoint_dtype(model_dir)


def _load_dtype(spec: VariantSpec, bnb_compute: str, model_dir: Path) -> str:
    """The dtype of the non-quantised tensors after loading."""
    if spec.method == "none":
        return str(spec.compute_dtype)
    if spec.name in BNB_QUANTS:
        return bnb_compute
    if spec.name in LEGACY_QUANTS:
        return "float16"
    return _checkpoint_dtype(model_dir)


def _checkpoint_dtype(model_dir: Path) -> str:
    config = json.loads((model_dir / "config.json").read_text())
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return str(dtype).replace("torch.", "")


def _bnb_settings(quant: str, compute: str) -> dict[str, Any]:
    if quant == "bnb-int8":
        return {"bnb": {"load_in_8bit": True, "llm_int8_threshold": LLM_INT8_THRESHOLD, "non_quantised_dtype": compute}}
    return {"bnb": {"load_in_4bit": True, "bnb_4bit_quant_type": quant.split("-")[1],
                    "bnb_4bit_compute_dtype": compute, "bnb_4bit_use_double_quant": False}}


class _staging_dir:
    """A temporary directory next to `target` that replaces `target` only on success."""

    def __init__(self, target: Path):
        self.target = target

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
        return self.path

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        if self.target.exists():
            shutil.rmtree(self.target)
        os.replace(self.path, self.target)


def _load_tokenizer(model_dir: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)


def _evaluation_windows(model_dir: Path, text: Path, length: int, sequences: int, trust_remote_code: bool) -> int:
    """Check the evaluation text gives at least one window; return the number of windows."""
    from .quality import EvaluationError, token_windows, tokenize_text

    ids = tokenize_text(_load_tokenizer(model_dir, trust_remote_code), text.read_text(encoding="utf-8"))
    try:
        return len(token_windows(ids, length, sequences))
    except EvaluationError as exc:
        raise QuantiseError(str(exc)) from None


def _calibration_windows(model_dir: Path, text: Path, samples: int, length: int, trust_remote_code: bool) -> list[list[int]]:
    """`samples` consecutive windows of `length` tokens from the calibration text."""
    from .quality import EvaluationError, token_windows, tokenize_text

    ids = tokenize_text(_load_tokenizer(model_dir, trust_remote_code), text.read_text(encoding="utf-8"))
    if len(ids) < samples * length:
        raise QuantiseError(
            f"quantisation.calibration: {samples} samples x {length} tokens need {samples * length} tokens but "
            f"{text.name} has {len(ids)}; lower samples or sequence_length, or use a longer text"
        )
    try:
        return token_windows(ids, length, samples, field="quantisation.calibration")
    except EvaluationError as exc:
        raise QuantiseError(str(exc)) from None


# -- llm-compressor ------------------------------------------------------------------------


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
    raise QuantiseError(f"quant: {quant!r} is not an llm-compressor variant; allowed: {', '.join(LLMCOMPRESSOR_QUANTS)}")


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


def _llmcompressor_checkpoint(model_dir: Path, quant: str, windows: list[list[int]], out: Path, device: str,
                              trust_remote_code: bool) -> dict[str, Any]:
    """Calibrate with llm-compressor `oneshot` and save a compressed-tensors checkpoint into `out`."""
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto", use_safetensors=True,
                                                 trust_remote_code=trust_remote_code)
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
    _load_tokenizer(model_dir, trust_remote_code).save_pretrained(out)
    generation = model_dir / "generation_config.json"
    if generation.is_file():
        shutil.copy(generation, out / "generation_config.json")
    config = json.loads((out / "config.json").read_text())
    quantization = config.get("quantization_config") or {}
    _require(quantization.get("quant_method") == "compressed-tensors",
             f"quant: llm-compressor wrote no compressed-tensors quantization_config for {quant!r}")
    recipe_file = out / "recipe.yaml"
    return {
        "library": "llm-compressor",
        "libraries": _library_versions(("llmcompressor", "compressed-tensors", "transformers", "torch")),
        "calibration_device": "cuda" if torch.cuda.is_available() else "cpu",
        "recipe": recipe_file.read_text() if recipe_file.is_file() else None,
        "format": quantization.get("format"),
        "ignore": quantization.get("ignore"),
    }


# -- legacy: auto-gptq / autoawq ---------------------------------------------------------------


def _legacy_checkpoint(model_dir: Path, quant: str, windows: list[list[int]], out: Path, device: str,
                       trust_remote_code: bool) -> dict[str, Any]:
    """Quantise with auto-gptq (archived) or autoawq (deprecated) on CUDA into `out`."""
    if quant == "gptq-autogptq":
        return _autogptq_checkpoint(model_dir, windows, out, trust_remote_code)
    return _autoawq_checkpoint(model_dir, windows, out, trust_remote_code)


def _import_legacy(quant: str) -> Any:
    library, status, alternative = _LEGACY_LIBRARY[quant]
    module = "auto_gptq" if quant == "gptq-autogptq" else "awq"
    try:
        return __import__(module)
    except ImportError as exc:
        env = VARIANTS[quant].env
        raise QuantiseError(
            f"quant: {quant!r} needs the {status} {library} package, which is not importable here ({exc}); "
            f"run it in envs/{env}.yaml (snakemake --sdm conda) or use {alternative}"
        ) from None


def _autogptq_checkpoint(model_dir: Path, windows: list[list[int]], out: Path, trust_remote_code: bool) -> dict[str, Any]:
    import torch

    _import_legacy("gptq-autogptq")
    from auto_gptq import AutoGPTQForCausalLM, BaseQuantizeConfig

    quantize_config = BaseQuantizeConfig(bits=4, group_size=W4_GROUP_SIZE, desc_act=False, sym=True)
    model = AutoGPTQForCausalLM.from_pretrained(str(model_dir), quantize_config, torch_dtype=torch.float16,
                                                trust_remote_code=trust_remote_code, use_safetensors=True)
    examples = [{"input_ids": torch.tensor([w]), "attention_mask": torch.ones(1, len(w), dtype=torch.long)} for w in windows]
    torch.manual_seed(0)
    model.quantize(examples, batch_size=1)
    model.save_quantized(str(out), use_safetensors=True)
    _load_tokenizer(model_dir, trust_remote_code).save_pretrained(out)
    return {
        "library": "auto-gptq",
        "legacy": True,
        "libraries": _library_versions(("auto-gptq", "transformers", "torch")),
        "calibration_device": "cuda",
        "quantize_config": {"bits": 4, "group_size": W4_GROUP_SIZE, "desc_act": False, "sym": True},
    }


def _autoawq_checkpoint(model_dir: Path, windows: list[list[int]], out: Path, trust_remote_code: bool) -> dict[str, Any]:
    _import_legacy("awq-autoawq")
    from awq import AutoAWQForCausalLM
    from awq.models.auto import AWQ_CAUSAL_LM_MODEL_MAP

    model_type = _model_type(model_dir)
    _require(model_type in AWQ_CAUSAL_LM_MODEL_MAP,
             f"quant: autoawq does not support model type {model_type!r}; supported: {', '.join(sorted(AWQ_CAUSAL_LM_MODEL_MAP))}")
    tokenizer = _load_tokenizer(model_dir, trust_remote_code)
    quant_config = {"zero_point": True, "q_group_size": W4_GROUP_SIZE, "w_bit": 4, "version": "GEMM"}
    model = AutoAWQForCausalLM.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code, safetensors=True)
    texts = [tokenizer.decode(w) for w in windows]
    model.quantize(tokenizer, quant_config=quant_config, calib_data=texts, max_calib_samples=len(windows),
                   max_calib_seq_len=len(windows[0]))
    model.save_quantized(str(out), safetensors=True)
    tokenizer.save_pretrained(out)
    return {
        "library": "autoawq",
        "legacy": True,
        "libraries": _library_versions(("autoawq", "transformers", "torch")),
        "calibration_device": "cuda",
        "quant_config": quant_config,
    }


# ---------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------


def _torch_dtype(name: str) -> Any:
    import torch

    _require(name in DTYPES, f"dtype: {name!r} is not allowed; allowed values: {', '.join(DTYPES)}")
    return getattr(torch, name)


def load_model(variant: dict[str, Any], device: str) -> tuple[Any, LoadInfo]:
    """Load a variant for inference on `device` and describe what runs its matmuls."""
    quant = variant.get("quant")
    spec = VARIANTS.get(quant)
    _require(spec is not None, f"variant.quant: unknown variant {quant!r}; allowed: {', '.join(VARIANTS)}")
    _require(not quant.startswith("gguf-"), f"variant.quant: {quant!r} is a GGUF file; load it with the llamacpp backend")
    device = _resolve_device(device)
    problem = check_supported(quant, device == "cuda")
    _require(problem is None, f"variant.quant: {problem}")
    trust = bool((variant.get("settings") or {}).get("trust_remote_code", False))
    start = time.perf_counter()
    if spec.method == "none":
        model = _from_pretrained(variant["model_dir"], device, trust, dtype=_torch_dtype(spec.compute_dtype))
    elif quant in BNB_QUANTS:
        model = _load_bnb(variant, device, trust)
    elif quant in LLMCOMPRESSOR_QUANTS:
        model = _from_pretrained(_checkpoint_dir(variant), device, trust, dtype="auto")
    elif quant == "gptq-autogptq":
        _import_legacy(quant)
        from auto_gptq import AutoGPTQForCausalLM

        model = AutoGPTQForCausalLM.from_quantized(str(_checkpoint_dir(variant)), device="cuda:0", use_safetensors=True,
                                                   trust_remote_code=trust).model
    elif quant == "awq-autoawq":
        _import_legacy(quant)
        from awq import AutoAWQForCausalLM

        model = AutoAWQForCausalLM.from_quantized(str(_checkpoint_dir(variant)), fuse_layers=False, safetensors=True,
                                                  trust_remote_code=trust, device_map={"": "cuda:0"}).model
    else:  # pragma: no cover - every catalogue entry is handled above
        raise QuantiseError(f"variant.quant: no loader for {quant!r}")
    model.eval()
    info = describe_loaded(model, spec, device, variant)
    info.load_s = time.perf_counter() - start
    return model, info


def _checkpoint_dir(variant: dict[str, Any]) -> Path:
    directory = variant.get("checkpoint_dir")
    _require(bool(directory) and Path(directory).is_dir(),
             f"variant.checkpoint_dir: {directory!r} is not a directory; rebuild the variant with the quantise rule")
    return Path(directory)


def _from_pretrained(path: str | Path, device: str, trust_remote_code: bool, **kwargs: Any) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, device_map=device, use_safetensors=True,
                                                trust_remote_code=trust_remote_code, **kwargs)


def _load_bnb(variant: dict[str, Any], device: str, trust_remote_code: bool) -> Any:
    from transformers import BitsAndBytesConfig

    bnb = (variant.get("settings") or {}).get("bnb") or _bnb_settings(variant["quant"], variant.get("load_dtype") or "float32")["bnb"]
    if bnb.get("load_in_8bit"):
        config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=float(bnb["llm_int8_threshold"]))
        dtype = _torch_dtype(bnb.get("non_quantised_dtype", "float32"))
    else:
        dtype = _torch_dtype(bnb["bnb_4bit_compute_dtype"])
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=bnb["bnb_4bit_quant_type"],
                                    bnb_4bit_compute_dtype=dtype,
                                    bnb_4bit_use_double_quant=bool(bnb.get("bnb_4bit_use_double_quant", False)))
    return _from_pretrained(variant["model_dir"], device, trust_remote_code, dtype=dtype, quantization_config=config)


# -- what runs: probe, kernels, bytes -----------------------------------------------------------

_MATMUL_OP_MARKERS = ("mm", "linear", "gemm", "gemv", "matmul")
_NON_CUSTOM_NAMESPACES = ("aten::", "prim::", "profiler::", "cuda", "Memcpy", "Memset", "[")


def _relevant_ops(names: set[str]) -> list[str]:
    """Custom-library ops (bitsandbytes::…, awq, …) and matmul-like aten ops."""
    keep = set()
    for name in names:
        if "::" in name and not name.startswith(_NON_CUSTOM_NAMESPACES):
            keep.add(name)
        elif name.startswith("aten::") and any(marker in name for marker in _MATMUL_OP_MARKERS):
            keep.add(name)
    return sorted(keep)


def probe_ops(model: Any) -> dict[str, list[str]]:
    """Run one prefill and one decode step, recording the ops each dispatches (torch.profiler).

    Also settles the model: checkpoints that decompress on the first forward have done so,
    and bitsandbytes has repacked 4-bit weights for its CPU kernel."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    device = next(p.device for p in model.parameters())
    from .quality import vocab_size

    vocab = vocab_size(model)
    prompt = (torch.arange(PROBE_PROMPT_TOKENS, device=device) % max(1, vocab - 3) + 3).unsqueeze(0)
    observed: dict[str, list[str]] = {}
    with torch.inference_mode():
        with profile(activities=[ProfilerActivity.CPU]) as prefill:
            output = model(input_ids=prompt, use_cache=True)
        next_token = output.logits[:, -1:].argmax(-1)
        with profile(activities=[ProfilerActivity.CPU]) as decode:
            model(input_ids=next_token, past_key_values=output.past_key_values, use_cache=True)
    observed["prefill_ops"] = _relevant_ops({event.key for event in prefill.key_averages()})
    observed["decode_ops"] = _relevant_ops({event.key for event in decode.key_averages()})
    return observed


def _quantised_modules(model: Any) -> Iterator[tuple[str, Any, str]]:
    """(name, module, family) of every module holding quantised weights."""
    for name, module in model.named_modules():
        cls = type(module)
        origin = cls.__module__
        if origin.startswith("bitsandbytes"):
            if cls.__name__ in ("Linear4bit", "LinearNF4", "LinearFP4"):
                yield name, module, "bnb-4bit"
            elif cls.__name__ == "Linear8bitLt":
                yield name, module, "bnb-int8"
        elif getattr(module, "quantization_scheme", None) is not None and getattr(module.quantization_scheme, "weights", None):
            yield name, module, "compressed-tensors"
        elif origin.startswith("auto_gptq.nn_modules.qlinear"):
            yield name, module, "auto-gptq"
        elif origin.startswith("awq.modules.linear"):
            yield name, module, "autoawq"


def _first(ops: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in ops), None)


def _phase_join(prefill: str | None, decode: str | None) -> str:
    if prefill == decode:
        return prefill or "unobserved"
    return f"prefill {prefill or 'unobserved'}, decode {decode or 'unobserved'}"


def _bnb_4bit_path(module: Any, ops: dict[str, list[str]], configured: str) -> tuple[str, str]:
    state = getattr(module.weight, "quant_state", None)
    quant_type = getattr(state, "quant_type", None) or getattr(module.weight, "quant_type", "4bit")
    candidates = ("bitsandbytes::gemv_4bit", "bitsandbytes::gemm_4bit", "bitsandbytes::dequantize_4bit")
    prefill = _first(ops["prefill_ops"], candidates)
    decode = _first(ops["decode_ops"], candidates)
    kernel = _phase_join(prefill and prefill.split("::")[1], decode and decode.split("::")[1])
    compute = configured
    if getattr(state, "packing_format_for_cpu", False):
        # bitsandbytes' fused CPU kernel (AVX512-BF16) casts activations to bfloat16.
        kernel += "[cpu-packed-bf16]"
        compute = "bfloat16"
    return f"bitsandbytes.Linear4bit({quant_type}):{kernel}", compute


def _bnb_int8_path(ops: dict[str, list[str]], device: str) -> str:
    candidates = ("bitsandbytes::int8_mixed_scaled_mm", "bitsandbytes::int8_scaled_mm")
    all_ops = set(ops["prefill_ops"]) | set(ops["decode_ops"])
    outer = _first(sorted(all_ops), candidates) or "unobserved"
    if "aten::_int_mm" in all_ops:
        inner = "int8 GEMM aten::_int_mm"
    elif device == "cpu":
        inner = "int8 values multiplied in float32 (bitsandbytes default kernel)"
    else:
        inner = "bitsandbytes::int8_linear_matmul[cuda]"
    return f"bitsandbytes.Linear8bitLt:{outer.split('::')[-1]}({inner})"


def _compressed_tensors_path(module: Any) -> tuple[str, str, bool]:
    from compressed_tensors.quantization import QuantizationStatus

    scheme = module.quantization_scheme
    status = getattr(module, "quantization_status", None)
    weight = getattr(module, "weight", None)
    activations = "+dynamic-int8-activation-qdq" if scheme.input_activations is not None else ""
    if status == QuantizationStatus.DECOMPRESSED or (weight is not None and weight.is_floating_point()):
        dtype = str(weight.dtype).replace("torch.", "")
        return f"compressed-tensors:decompressed-to-{dtype}{activations}", dtype, True
    # Still compressed while running: the module computes from its packed weights.
    fmt = getattr(scheme, "format", None) or "compressed"
    scale = getattr(module, "weight_scale", None)
    compute = "int8" if activations else (str(scale.dtype).replace("torch.", "") if scale is not None else "unknown")
    return f"compressed-tensors:{type(module).__name__}({fmt}){activations}", compute, False


def describe_loaded(model: Any, spec: VariantSpec, device: str, variant: dict[str, Any] | None = None) -> LoadInfo:
    """Probe the loaded model and report kernel path, compute dtype and resident weight bytes."""
    ops = probe_ops(model)
    found = list(_quantised_modules(model))
    families = Counter(family for _, _, family in found)
    classes = Counter(f"{type(m).__module__}.{type(m).__name__}" for _, m, _ in found)
    float_dtype = str(next(p.dtype for p in model.parameters() if p.is_floating_point())).replace("torch.", "")
    configured = (variant or {}).get("compute_dtype") or float_dtype
    decompressed = False
    if not found:
        compute = float_dtype
        linear = "transformers.Conv1D" if any(type(m).__name__ == "Conv1D" for m in model.modules()) else "torch.nn.Linear"
        kernel = f"{linear}({float_dtype})"
    else:
        family = families.most_common(1)[0][0]
        sample = next(module for _, module, kind in found if kind == family)
        if family == "bnb-4bit":
            kernel, compute = _bnb_4bit_path(sample, ops, configured)
        elif family == "bnb-int8":
            kernel, compute = _bnb_int8_path(ops, device), "int8"
        elif family == "compressed-tensors":
            kernel, compute, decompressed = _compressed_tensors_path(sample)
        elif family == "auto-gptq":
            kernel, compute = f"auto_gptq.{type(sample).__module__.rsplit('.', 1)[-1]}.QuantLinear", "float16"
        else:
            backend = "awq_ext" if getattr(__import__("awq.modules.linear.gemm", fromlist=["awq_ext"]), "awq_ext", None) else "triton"
            kernel, compute = f"autoawq.{type(sample).__name__}({backend})", "float16"
    if spec.makes_checkpoint and not found:
        raise QuantiseError(f"variant.quant: {spec.name!r} loaded without any quantised layer; rebuild the checkpoint")
    quantised_bytes = _tensor_bytes(m for _, m, _ in found)
    return LoadInfo(
        kernel_path=kernel,
        compute_dtype=compute,
        weight_bytes_memory=weight_bytes_in_memory(model),
        decompressed_at_load=decompressed,
        extra={
            **ops,
            "quantised_modules": len(found),
            "quantised_module_classes": dict(classes),
            "quantised_weight_bytes_memory": quantised_bytes,
            "non_quantised_dtype": float_dtype,
            "weight_bytes_kind": "parameters+buffers+quantisation state after a probe forward",
        },
    )


def _module_tensors(module: Any) -> Iterator[Any]:
    """Parameters, buffers and bitsandbytes quantisation state held by a module (not its children)."""
    for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
        yield tensor
        state = getattr(tensor, "quant_state", None)
        while state is not None:
            for attr in ("absmax", "code", "offset"):
                value = getattr(state, attr, None)
                if value is not None and hasattr(value, "element_size"):
                    yield value
            state = getattr(state, "state2", None)
        scale = getattr(tensor, "SCB", None)
        if scale is not None:
            yield scale
    # bitsandbytes Linear8bitLt moves the int8 weight and its row scales into `state` on first use
    state = getattr(module, "state", None)
    for attr in ("CB", "SCB"):
        value = getattr(state, attr, None)
        if value is not None and hasattr(value, "element_size"):
            yield value


def _tensor_bytes(modules: Iterator[Any]) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for module in modules:
        for tensor in _module_tensors(module):
            if tensor.device.type == "meta":
                continue
            key = (tensor.data_ptr(), tensor.numel())
            if key in seen:
                continue
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def weight_bytes_in_memory(model: Any) -> int:
    """Bytes of every distinct weight tensor (and quantisation state) resident in the model."""
    return _tensor_bytes(model.modules())
