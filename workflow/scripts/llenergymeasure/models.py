"""Materialise a model directory: random weights from an architecture config, or a pinned hub snapshot.

A materialised directory is a Hugging Face model directory (config.json, model.safetensors,
generation_config.json, a tokenizer) plus `model_manifest.json` saying where it came from.
Random weights are deterministic: the same architecture and seed give the same bytes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .io import sha256_file, staged_directory, write_json_atomic
from .paths import REPO_ROOT

log = logging.getLogger(__name__)


class ModelSourceError(RuntimeError):
    """A model cannot be obtained (no network, missing revision, unsafe checkpoint)."""


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def materialise_random(architecture: Path, out_dir: Path, seed: int, tokenizer_text: Path) -> dict[str, Any]:
    """Build a float32 random-weight model from a config.json and save it with a tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from .tokenizer import train_tokenizer

    arch = json.loads(Path(architecture).read_text())
    model_type = arch["model_type"]
    config = AutoConfig.for_model(model_type, **{k: v for k, v in arch.items() if k != "model_type"})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    # generate() must produce exactly the requested tokens: EOS never stops it early.
    generation = GenerationConfig(
        bos_token_id=arch.get("bos_token_id"),
        eos_token_id=arch.get("eos_token_id"),
        pad_token_id=arch.get("pad_token_id", arch.get("eos_token_id")),
        do_sample=False,
    )
    generation.save_pretrained(out_dir)
    tokenizer = train_tokenizer(tokenizer_text, out_dir, vocab_size=int(arch["vocab_size"]))
    weights = out_dir / "model.safetensors"
    return {
        "source": "config",
        "architecture": str(architecture),
        "model_type": model_type,
        "seed": seed,
        "weights": "random",
        "params_total": count_parameters(model),
        "weights_file": weights.name,
        "weights_sha256": sha256_file(weights),
        "weights_bytes": weights.stat().st_size,
        "tokenizer": tokenizer,
    }


def materialise_hub(repo_id: str, revision: str, out_dir: Path, allow_pickle: bool = False) -> dict[str, Any]:
    """Download a pinned snapshot (config, safetensors weights, tokenizer) from the model hub."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub ships with transformers
        raise ModelSourceError(f"huggingface_hub is not installed: {exc}") from None
    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]
    if allow_pickle:
        patterns.append("*.bin")
    try:
        path = snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=patterns, local_dir=out_dir)
    except Exception as exc:  # network, auth, missing revision: all end the same way for the user
        raise ModelSourceError(
            f"cannot download {repo_id}@{revision} from the model hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); check the network, HF_TOKEN for gated "
            "models, or use source: config with an architecture file for random weights"
        ) from None
    snapshot = Path(path)
    safetensors = sorted(snapshot.glob("*.safetensors"))
    converted = False
    if not safetensors and allow_pickle:
        safetensors = convert_pickle_checkpoints(snapshot)
        converted = bool(safetensors)
    if not safetensors and not allow_pickle:
        raise ModelSourceError(
            f"{repo_id}@{revision} has no safetensors weights; pickle checkpoints are refused unless the "
            "model entry sets allow_pickle: true (they are then loaded with weights_only)"
        )
    return {
        "source": "hub",
        "repo_id": repo_id,
        "revision": revision,
        "weights": "pretrained",
        "weights_files": [p.name for p in safetensors],
        "converted_from_pickle": converted,
        "weights_bytes": sum(p.stat().st_size for p in safetensors),
    }


def convert_pickle_checkpoints(snapshot: Path) -> list[Path]:
    """Turn `pytorch_model*.bin` pickles into safetensors, unpickling with `weights_only=True`
    (tensors only, no code), so that every later step loads safetensors alone."""
    import torch
    from safetensors.torch import save_file

    written = []
    renamed: dict[str, str] = {}
    for pickle_file in sorted(snapshot.glob("*.bin")):
        state = torch.load(pickle_file, map_location="cpu", weights_only=True)
        # tied weights share storage, which safetensors refuses: store independent copies
        tensors = {name: tensor.detach().clone().contiguous() for name, tensor in state.items()}
        target = pickle_file.with_name(
            pickle_file.name.replace("pytorch_model", "model")[: -len(".bin")] + ".safetensors"
        )
        save_file(tensors, target, metadata={"format": "pt"})
        renamed[pickle_file.name] = target.name
        pickle_file.unlink()
        written.append(target)
    index = snapshot / "pytorch_model.bin.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data["weight_map"] = {k: renamed.get(v, v) for k, v in data.get("weight_map", {}).items()}
        (snapshot / "model.safetensors.index.json").write_text(json.dumps(data, indent=2))
        index.unlink()
    return written


def materialise(
    model: str, entry: dict[str, Any], out_dir: str | Path, seed: int, tokenizer_text: str | Path
) -> dict[str, Any]:
    """Materialise one configured model into `out_dir` atomically and write its manifest."""
    out_dir = Path(out_dir)
    with staged_directory(out_dir) as staging:
        if entry.get("source", "config") == "hub":
            manifest = materialise_hub(entry["repo_id"], entry["revision"], staging, bool(entry.get("allow_pickle")))
        else:
            architecture = Path(entry["architecture"])
            if not architecture.is_absolute() and not architecture.exists():
                architecture = REPO_ROOT / architecture
            manifest = materialise_random(architecture, staging, int(entry.get("seed", seed)), Path(tokenizer_text))
        manifest = {
            "model": model,
            "trust_remote_code": bool(entry.get("trust_remote_code", False)),
            "allow_pickle": bool(entry.get("allow_pickle", False)),
            **manifest,
        }
        write_json_atomic(staging / "model_manifest.json", manifest)
    log.info("materialised %s into %s", model, out_dir)
    return manifest
