"""Build a LoRA adapter directory (rule `adapter`) and put one on a loaded model (rule measure_adapter).

A random adapter is made by PEFT (`get_peft_model` with `init_lora_weights=False`) after
`torch.manual_seed(seed)` and saved with `save_pretrained` as safetensors, so the same
settings give the same bytes. PEFT's default init sets lora_B to zeros, which would make the
adapter a numerical no-op that still costs its matmuls; with `init_lora_weights=False`
both lora_A and lora_B keep torch.nn.Linear's default kaiming-uniform init, so the adapter
really changes the outputs (the manifest records by how much on a fixed input). A path or
hub adapter is copied (safetensors only) and loaded onto the model once to prove it fits.

`adapter_manifest.json` records what FLOPs and rows need: rank, alpha, the targeted modules
with their shapes, the weights' bytes and sha256, the seed and the source.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .io import sha256_file, staged_directory, write_json_atomic

log = logging.getLogger(__name__)

MANIFEST = "adapter_manifest.json"
WEIGHTS = "adapter_model.safetensors"
INIT_NOTE = (
    "init_lora_weights=False: lora_A and lora_B keep torch.nn.Linear's kaiming-uniform init "
    "(B nonzero), so the adapter changes the outputs"
)


class AdapterBuildError(RuntimeError):
    """An adapter cannot be built or loaded (missing file, pickle weights, no network)."""


def _load_base(model_dir: str | Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True).eval()


def _make_random(base: Any, settings: dict[str, Any], staging: Path) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model

    lora_config = LoraConfig(
        r=int(settings["rank"]),
        lora_alpha=settings["alpha"],
        target_modules=list(settings["target_modules"]),
        lora_dropout=float(settings["dropout"]),
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=False,
    )
    torch.manual_seed(int(settings["seed"]))
    model = get_peft_model(base, lora_config)
    model.save_pretrained(staging, safe_serialization=True)
    return model


def _copy_adapter(source: Path, staging: Path) -> None:
    if not (source / WEIGHTS).is_file():
        found = sorted(p.name for p in source.glob("adapter_model*"))
        raise AdapterBuildError(
            f"{source}: no {WEIGHTS} (found {', '.join(found) or 'nothing'}); adapters are loaded from safetensors only"
        )
    for name in ("adapter_config.json", WEIGHTS):
        shutil.copy2(source / name, staging / name)


def _download(repo_id: str, revision: str, staging: Path) -> None:
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            repo_id=repo_id,
            revision=revision,
            local_dir=staging / "download",
            allow_patterns=["adapter_config.json", "adapter_model*"],
        )
    except Exception as exc:  # network, auth, missing revision
        raise AdapterBuildError(
            f"cannot download adapter {repo_id}@{revision} ({type(exc).__name__}); "
            "check the network and the revision, or use source: path"
        ) from None
    _copy_adapter(Path(path), staging)
    shutil.rmtree(staging / "download", ignore_errors=True)


def adapted_modules(peft_model: Any) -> list[dict[str, Any]]:
    """Each LoRA-wrapped module of a PeftModel: its name in the base model, shape and rank."""
    from peft.tuners.lora import LoraLayer

    modules = []
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            modules.append(
                {
                    "name": name.removeprefix("base_model.model."),
                    "in_features": int(module.in_features),
                    "out_features": int(module.out_features),
                    "rank": int(module.r["default"]),
                    "scaling": float(module.scaling["default"]),
                }
            )
    return modules


def _output_change(base_logits: Any, peft_model: Any, ids: Any) -> float:
    import torch

    with torch.inference_mode():
        adapted = peft_model(input_ids=ids).logits
    return float((adapted - base_logits).abs().max())


def build_adapter(
    model: str, adapter: str, settings: dict[str, Any], model_dir: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """Write the adapter directory (atomically: complete or absent) and return its manifest."""
    import peft
    import torch

    out_dir = Path(out_dir)
    with staged_directory(out_dir) as staging:
        base = _load_base(model_dir)
        ids = torch.randint(3, int(base.config.vocab_size), (1, 16), generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            base_logits = base(input_ids=ids).logits
        source = settings.get("source", "random")
        if source == "random":
            peft_model = _make_random(base, settings, staging)
        else:
            if source == "path":
                _copy_adapter(Path(settings["path"]), staging)
            else:
                _download(settings["repo_id"], settings["revision"], staging)
            peft_model = peft.PeftModel.from_pretrained(base, staging)
        peft_model.eval()
        modules = adapted_modules(peft_model)
        if not modules:
            raise AdapterBuildError(f"adapter {adapter!r} wraps no module of {model}")
        lora_config = peft_model.peft_config["default"]
        weights = staging / WEIGHTS
        manifest = {
            "adapter": adapter,
            "model": model,
            "source": source,
            "rank": int(lora_config.r),
            "alpha": float(lora_config.lora_alpha),
            "dropout": float(lora_config.lora_dropout),
            "target_modules": sorted(lora_config.target_modules),
            "modules": modules,
            "params": sum(m["rank"] * (m["in_features"] + m["out_features"]) for m in modules),
            "bytes": weights.stat().st_size,
            "sha256": sha256_file(weights),
            "seed": settings.get("seed") if source == "random" else None,
            "init": INIT_NOTE if source == "random" else "trained weights",
            "output_change_max_abs": _output_change(base_logits, peft_model, ids),
            "peft_version": peft.__version__,
            **{key: settings[key] for key in ("path", "repo_id", "revision") if key in settings},
        }
        write_json_atomic(staging / MANIFEST, manifest)
    log.info(
        "adapter %s of %s: rank %d on %d modules, %d bytes, max |logit change| %.3g",
        adapter,
        model,
        manifest["rank"],
        len(modules),
        manifest["bytes"],
        manifest["output_change_max_abs"],
    )
    return manifest


# ---------------------------------------------------------------------------- measuring


def read_manifest(adapter_dir: str | Path) -> dict[str, Any]:
    import json

    return json.loads((Path(adapter_dir) / MANIFEST).read_text())


def row_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """The adapter columns every row of an adapter job carries."""
    return {
        "adapter": manifest["adapter"],
        "adapter_source": manifest["source"],
        "adapter_rank": manifest["rank"],
        "adapter_alpha": manifest["alpha"],
        "adapter_target_modules": ",".join(manifest["target_modules"]),
        "adapter_bytes": manifest["bytes"],
        "adapter_sha256": manifest["sha256"],
    }


Phase = tuple[dict[str, Any], Callable[[Any], dict[str, Any]]]


def measurement_phases(adapter_dir: str | Path) -> list[Phase]:
    """What an adapter job measures, in order, as (row fields, preparation): the preparation runs
    outside every measured window and returns its timing. First the adapter is put on the loaded
    model (PEFT `PeftModel`, unmerged), then merged into it (`merge_and_unload`)."""
    fields = row_fields(read_manifest(adapter_dir))
    timings: dict[str, float] = {}

    def unmerge(runner: Any) -> dict[str, Any]:
        from peft import PeftModel

        start = time.perf_counter()
        runner.model = PeftModel.from_pretrained(runner.model, str(adapter_dir), is_trainable=False).eval()
        runner.synchronize()
        runner.model_replaced()
        timings["adapter_load_s"] = time.perf_counter() - start
        return dict(timings)

    def merge(runner: Any) -> dict[str, Any]:
        start = time.perf_counter()
        runner.model = runner.model.merge_and_unload()
        runner.synchronize()
        runner.model_replaced()
        return {**timings, "adapter_merge_s": time.perf_counter() - start}

    return [({**fields, "adapter_merged": False}, unmerge), ({**fields, "adapter_merged": True}, merge)]


# ---------------------------------------------------------------------------- merged checkpoint

MERGE_MANIFEST = "merge_manifest.json"
MERGED_WEIGHTS = "model.safetensors"


def build_merged(model_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the base model with the adapter merged in (PEFT `merge_and_unload`, float32,
    safetensors) for backends that load a checkpoint rather than a model object (vllm), with
    `merge_manifest.json`: the merge time, the adapter it came from and the weights' sha256."""
    import peft
    import torch
    from peft import PeftModel

    model_dir, adapter_dir, out_dir = Path(model_dir), Path(adapter_dir), Path(out_dir)
    adapter = read_manifest(adapter_dir)
    with staged_directory(out_dir) as staging:
        base = _load_base(model_dir)
        peft_model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False).eval()
        start = time.perf_counter()
        with torch.inference_mode():
            merged = peft_model.merge_and_unload()
        merge_s = time.perf_counter() - start
        merged.save_pretrained(staging, safe_serialization=True)
        for path in model_dir.iterdir():  # tokenizer and generation config: everything but the weights
            if path.is_file() and not path.name.endswith((".safetensors", ".bin")) and path.name != "config.json":
                shutil.copy2(path, staging / path.name)
        manifest = {
            "adapter": adapter["adapter"],
            "model": adapter["model"],
            "adapter_sha256": adapter["sha256"],
            "merge_s": merge_s,
            "dtype": "float32",
            "weights_sha256": sha256_file(staging / MERGED_WEIGHTS),
            "peft_version": peft.__version__,
        }
        write_json_atomic(staging / MERGE_MANIFEST, manifest)
    log.info("merged adapter %s into %s in %.3f s", adapter["adapter"], adapter["model"], merge_s)
    return manifest
