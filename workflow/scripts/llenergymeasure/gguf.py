"""GGUF variants for llama.cpp: convert a Hugging Face model directory, quantise, describe.

`gguf-f16` is the model converted by llama.cpp's own `convert_hf_to_gguf.py`; `gguf-q8_0`
and `gguf-q4_k_m` are that file quantised by `llama_model_quantize` (llama.cpp's
`llama-quantize`). The converter is not part of the installed llama-cpp-python package:
`install-llamacpp.sh` extracts it, with its bundled gguf-py, from the pinned source
distribution into a cache directory (see `converter_dir`).

llama.cpp's k-quants need rows of 256 weights; a smaller matrix falls back to another type
(q4_K -> q5_0, q6_K -> q8_0), so the manifest records the tensor types actually written and
the effective bits per weight rather than trusting the variant's nominal name.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .manifest import VariantManifest
from .variants import VARIANTS

log = logging.getLogger(__name__)

CONVERTER_ENV = "LLENERGYMEASURE_LLAMACPP_CONVERTER"  # overrides the converter directory
CACHE_ENV = "LLENERGYMEASURE_CACHE"
# variant name -> (converter --outtype, llama_ftype constant or None for the converter's output)
GGUF_TYPES: dict[str, tuple[str, str | None]] = {
    "gguf-f16": ("f16", None),
    "gguf-q8_0": ("f16", "LLAMA_FTYPE_MOSTLY_Q8_0"),
    "gguf-q4_k_m": ("f16", "LLAMA_FTYPE_MOSTLY_Q4_K_M"),
}


class GgufError(RuntimeError):
    """The converter is missing or failed, or quantisation failed."""


def llama_cpp_version() -> str:
    import llama_cpp

    return str(llama_cpp.__version__)


def converter_dir(version: str | None = None) -> Path:
    """The directory holding convert_hf_to_gguf.py, conversion/ and gguf-py/ for `version`
    (default: the installed llama-cpp-python's, so converter and runtime always match)."""
    if os.environ.get(CONVERTER_ENV):
        return Path(os.environ[CONVERTER_ENV])
    version = version or llama_cpp_version()
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "llenergymeasure"
    )
    return Path(root) / f"llama.cpp-{version}" / "convert"


def find_converter() -> Path:
    """The converter script, or a one-line error saying how to get it."""
    script = converter_dir() / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise GgufError(
            f"llama.cpp's HF->GGUF converter is not at {script}; run `bash install-llamacpp.sh --converter-only` "
            f"(extracts it from the pinned llama-cpp-python sdist) or set {CONVERTER_ENV} to a directory holding it"
        )
    return script


def _gguf_module() -> Any:
    """The gguf-py bundled with the converter (the PyPI `gguf` release can lag behind it)."""
    bundled = str(converter_dir() / "gguf-py")
    if bundled not in sys.path:
        sys.path.insert(0, bundled)
    return importlib.import_module("gguf")


def convert_to_f16(model_dir: str | Path, out_file: str | Path, log_file: str | Path | None = None) -> float:
    """Run llama.cpp's converter on a HF model directory; return the seconds it took."""
    script = find_converter()
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise GgufError(f"model_dir {model_dir} has no config.json; build it with the model rule first")
    command = [sys.executable, str(script), str(model_dir), "--outtype", "f16", "--outfile", str(out_file)]
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # use the bundled gguf-py
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if log_file:
        with open(log_file, "a") as handle:
            handle.write(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0 or not Path(out_file).is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise GgufError(f"convert_hf_to_gguf.py failed on {model_dir} (exit {result.returncode}): {tail[0]}")
    return elapsed


def quantise_gguf(source: str | Path, target: str | Path, ftype_name: str, threads: int) -> float:
    """Quantise a GGUF file with llama.cpp's `llama_model_quantize`; return the seconds it took."""
    import llama_cpp

    from .backends.llamacpp import route_llama_log

    route_llama_log(logging.INFO)  # per-tensor types and fallbacks go to the rule's log
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = int(threads)
    start = time.perf_counter()
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0 or not Path(target).is_file():
        raise GgufError(f"llama_model_quantize({ftype_name}) of {source} returned {status}")
    return time.perf_counter() - start


def tensor_summary(path: str | Path) -> dict[str, Any]:
    """Tensor types actually stored in a GGUF file and the effective bits per weight."""
    gguf = _gguf_module()
    reader = gguf.GGUFReader(str(path))
    matrix_elements: Counter[str] = Counter()
    matrix_bytes = matrix_count = total_bytes = total_elements = 0
    for tensor in reader.tensors:
        elements, size = int(tensor.n_elements), int(tensor.n_bytes)
        total_elements += elements
        total_bytes += size
        if sum(int(d) > 1 for d in tensor.shape) >= 2:  # weight matrices (incl. embeddings, output)
            matrix_elements[tensor.tensor_type.name] += elements
            matrix_bytes += size
            matrix_count += 1
    file_type = reader.fields.get("general.file_type")
    return {
        # type -> weights stored in it, most weights first
        "matrix_tensor_types": dict(matrix_elements.most_common()),
        "matrix_bits_per_weight": 8 * matrix_bytes / max(sum(matrix_elements.values()), 1),
        "bits_per_weight": 8 * total_bytes / max(total_elements, 1),
        "tensors": len(reader.tensors),
        "matrix_tensors": matrix_count,
        "file_type": int(file_type.parts[-1][0]) if file_type is not None else None,
    }


def evaluation_windows(
    model_dir: str | Path, text: str | Path, sequence_length: int, max_sequences: int
) -> list[list[int]]:
    """The evaluation windows of `quality` (the same protocol as every other variant's
    perplexity), tokenised by the model directory's own tokenizer."""
    from transformers import AutoTokenizer

    from .quality import token_windows, tokenize_text

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tokenize_text(tokenizer, Path(text).read_text(encoding="utf-8"))
    return token_windows(ids, sequence_length, max_sequences)


def gguf_perplexity(gguf_file: str | Path, quant: str, windows: list[list[int]], threads: int) -> tuple[float, int]:
    """Perplexity of llama.cpp on the windows, as `quality.perplexity` scores a transformers
    model: every token after the first of a window is predicted; returns (ppl, tokens scored)."""
    import numpy as np

    from .backend_specs import LlamaCppSettings
    from .backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(LlamaCppSettings(threads=threads, max_new_tokens=0), "cpu")
    try:
        backend.load(VariantManifest(quant=quant, checkpoint_file=str(gguf_file)))
        largest = max(max(window) for window in windows)
        if largest >= backend.n_vocab:
            raise GgufError(
                f"evaluation: the tokenizer produced id {largest} but {gguf_file} has {backend.n_vocab} "
                "tokens; use the tokenizer saved with the model"
            )
        nll, scored = 0.0, 0
        for chunk in windows:
            logits = backend.sequence_logits(np.asarray(chunk)).astype(np.float64)[:-1]
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            nll -= float(log_probs[np.arange(len(chunk) - 1), np.asarray(chunk[1:])].sum())
            scored += len(chunk) - 1
    finally:
        backend.close()
    return math.exp(nll / scored), scored


def build_variant(
    model: str,
    quant: str,
    model_dir: str | Path,
    out_dir: str | Path,
    f16_gguf: str | Path | None = None,
    evaluation: dict[str, Any] | None = None,
    threads: int = 1,
    log_file: str | Path | None = None,
) -> dict[str, Any]:
    """Write `out_dir/model.gguf` and `out_dir/variant.json` for a gguf-* variant.

    `f16_gguf`: an existing gguf-f16 file to quantise (else the model is converted here)."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _check_inputs(quant, model_dir, f16_gguf, evaluation)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "model.gguf"
    timings = _write_gguf(quant, model_dir, target, f16_gguf, threads, log_file)
    summary = tensor_summary(target)
    perplexity = perplexity_tokens = None
    if evaluation is not None:
        windows = evaluation_windows(
            model_dir, evaluation["text"], int(evaluation["sequence_length"]), int(evaluation["max_sequences"])
        )
        perplexity, perplexity_tokens = gguf_perplexity(target, quant, windows, threads)
    variant = _manifest(model, quant, model_dir, target, perplexity, perplexity_tokens)
    variant.settings = {
        "llama_cpp_python": llama_cpp_version(),
        "converter": str(converter_dir() / "convert_hf_to_gguf.py"),
        "converter_outtype": GGUF_TYPES[quant][0],
        "quantise_ftype": GGUF_TYPES[quant][1],
        "quantised_from": str(f16_gguf) if f16_gguf is not None else None,
        "threads": threads,
        **summary,
        **timings,
    }
    variant.write(out_dir)
    log.info(
        "%s/%s: %s, %.2f bits per matrix weight, types %s",
        model,
        quant,
        target,
        summary["matrix_bits_per_weight"],
        summary["matrix_tensor_types"],
    )
    return variant.to_json()


def _check_inputs(quant: str, model_dir: Path, f16_gguf: str | Path | None, evaluation: dict[str, Any] | None) -> None:
    """Refuse a bad variant, model directory, f16 source or evaluation section before any work."""
    if quant not in GGUF_TYPES:
        raise GgufError(f"quant {quant!r} is not a GGUF variant; allowed: {', '.join(GGUF_TYPES)}")
    if evaluation is not None:
        for field in ("text", "sequence_length", "max_sequences"):
            if field not in evaluation:
                raise GgufError(f"evaluation.{field} is missing; set it in the config's evaluation section")
    if not (model_dir / "config.json").is_file():
        raise GgufError(f"model_dir {model_dir} has no config.json; build it with the model rule first")
    if f16_gguf is None:
        find_converter()  # fail before any work when the converter is missing
    elif not Path(f16_gguf).is_file():
        raise GgufError(f"f16_gguf {f16_gguf} does not exist; build the gguf-f16 variant first")


def _write_gguf(
    quant: str, model_dir: Path, target: Path, f16_gguf: str | Path | None, threads: int, log_file: str | Path | None
) -> dict[str, float]:
    """Convert (and quantise) into a staging file that replaces `target` on success; the seconds taken."""
    _, ftype_name = GGUF_TYPES[quant]
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".gguf-") as work:
        staged = Path(work) / "model.gguf"
        if ftype_name is None:
            timings["convert_s"] = convert_to_f16(model_dir, staged, log_file)
        else:
            source = Path(f16_gguf) if f16_gguf is not None else Path(work) / "f16.gguf"
            if f16_gguf is None:
                timings["convert_s"] = convert_to_f16(model_dir, source, log_file)
            timings["quantise_s"] = quantise_gguf(source, staged, ftype_name, threads)
        os.replace(staged, target)
    return timings


def _manifest(
    model: str, quant: str, model_dir: Path, target: Path, perplexity: float | None, perplexity_tokens: int | None
) -> VariantManifest:
    spec = VARIANTS[quant]
    manifest_path = model_dir / "model_manifest.json"
    weights = json.loads(manifest_path.read_text()).get("weights") if manifest_path.is_file() else None
    method = "quality protocol (non-overlapping windows, exp of mean next-token NLL) on llama.cpp logits"
    return VariantManifest(
        model=model,
        quant=quant,
        quant_method=spec.method,
        weight_bits=spec.weight_bits,
        compute_dtype=spec.compute_dtype,
        load_dtype=spec.compute_dtype,
        model_dir=str(model_dir),
        checkpoint_file=str(target),
        weight_bytes_disk=target.stat().st_size,
        weights=weights,
        perplexity=perplexity,
        perplexity_tokens=perplexity_tokens,
        extra={"perplexity_method": method if perplexity else None},  # the gguf rule's own key
    )
