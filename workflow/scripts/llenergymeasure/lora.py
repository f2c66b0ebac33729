"""LoRA adapters as a sweep dimension: config checks, the adapter jobs, the row columns.

A model entry may name adapters (`models.<m>.adapters.<name>`). Each one is built once per
model by the `adapter` rule (lora_build.py) and measured, besides the base model, twice on
each variant it lists: unmerged (PEFT's `PeftModel`, the adapter's matmuls run beside the base
layer's) and merged (`merge_and_unload`, the same plain model as the base). Rows carry the
adapter's name (`none` for the base model) and whether it was merged.

Everything here is pure Python except `projection_shapes`, which builds the architecture on
torch's meta device (no weights) to learn the names and shapes of its projections, so a
target module or a rank is checked against what the model really has, before any job.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import schema
from .errors import ConfigError
from .paths import repo_path

NO_ADAPTER = "none"
SOURCES = ("random", "path", "hub")
# keys a random adapter is made from; a path or hub adapter brings its own adapter_config.json
RANDOM_KEYS = ("rank", "alpha", "target_modules", "dropout")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")

# The one place that says which (backend, variant, architecture) triples can measure an adapter, and why not.
_UNSUPPORTED_BACKENDS = {
    "llamacpp": "llama.cpp needs the adapter converted to GGUF, which the adapter rule does not do",
}
# Architectures whose vLLM model class implements SupportsLoRA (vLLM 0.32; tests/test_lora_vllm.py
# checks this table against vLLM's model registry). Others load but refuse enable_lora.
VLLM_LORA_ARCHITECTURES = frozenset(
    {
        "GemmaForCausalLM",
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "MixtralForCausalLM",
        "Phi3ForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen2MoeForCausalLM",
    }
)
# max_lora_rank values vLLM accepts (vllm.config.lora.MaxLoRARanks); an adapter's rank is rounded up to one
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of `rank`."""
    for allowed in VLLM_MAX_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {VLLM_MAX_LORA_RANKS[-1]}")


def support_problem(backend: str, quant: str, arch: dict[str, Any] | None = None) -> str | None:
    """Why an adapter cannot be measured on `quant` with `backend` (for the architecture config
    `arch`, when known), or None when it can."""
    if backend in _UNSUPPORTED_BACKENDS:
        return f"{_UNSUPPORTED_BACKENDS[backend]}; measure adapters on pytorch, pytorch-compiled or vllm"
    if not quant.startswith("none-"):
        return (
            f"merging an adapter into {quant!r} weights re-quantises them, so merged and unmerged "
            "would measure different models; use a none-* variant"
        )
    if backend == "vllm" and arch is not None:
        unsupported = [a for a in arch.get("architectures") or [] if a not in VLLM_LORA_ARCHITECTURES]
        if unsupported:
            return (
                f"vLLM's {unsupported[0]} does not implement LoRA (enable_lora); measure this adapter on "
                f"pytorch, or use an architecture among {', '.join(sorted(VLLM_LORA_ARCHITECTURES))}"
            )
    return None


# The adapter_* columns measure adds to every row (base rows: adapter 'none', adapter_merged
# false), with their types, from config/schema/measurements.schema.yaml.
ROW_COLUMNS: dict[str, str] = {
    name: kind for name, kind in schema.columns("measure").items() if name.startswith("adapter")
}
# What identifies an adapter configuration besides the base configuration keys.
KEY_COLUMNS: tuple[str, ...] = tuple(schema.keys("adapter"))


def base_row_fields() -> dict[str, Any]:
    """The adapter columns of a base-model row."""
    return {"adapter": NO_ADAPTER, "adapter_merged": False}


@dataclass(frozen=True)
class AdapterJob:
    """One adapter measure job: an adapter on one variant and backend, unmerged then merged."""

    model: str
    quant: str
    backend: str
    adapter: str


def adapter_entries(config: dict[str, Any], model: str) -> dict[str, dict[str, Any]]:
    return config["models"][model].get("adapters") or {}


def adapter_backends(config: dict[str, Any], model: str, adapter: str) -> dict[str, list[str]]:
    """The variants an adapter is measured on: its `backends`, else all of its model's."""
    entry = adapter_entries(config, model)[adapter]
    return entry.get("backends") or config["models"][model]["backends"]


def expand_adapter_jobs(config: dict[str, Any]) -> Iterator[AdapterJob]:
    for model in config["models"]:
        for adapter in adapter_entries(config, model):
            for backend, quants in adapter_backends(config, model, adapter).items():
                for quant in quants:
                    yield AdapterJob(model, quant, backend, adapter)


def adapter_names(config: dict[str, Any]) -> list[str]:
    return sorted({name for model in config["models"] for name in adapter_entries(config, model)})


@functools.lru_cache(maxsize=1)
def schema_defaults() -> dict[str, Any]:
    """The adapter entry's defaults, as config/schema/config.schema.yaml states them."""
    from .config_schema import load_schema

    model = load_schema()["properties"]["models"]["additionalProperties"]
    fields = model["properties"]["adapters"]["additionalProperties"]["properties"]
    return {key: spec["default"] for key, spec in fields.items() if "default" in spec}


def adapter_build_settings(config: dict[str, Any], model: str, adapter: str) -> dict[str, Any]:
    """Everything an adapter directory depends on (not where it is measured), defaults filled."""
    entry = adapter_entries(config, model)[adapter]
    settings = {key: value for key, value in entry.items() if key not in ("backends", "batch_sizes")}
    defaults = schema_defaults()
    settings.setdefault("source", defaults["source"])
    if settings["source"] == "random":
        for key in ("alpha", "dropout"):
            settings.setdefault(key, defaults[key])
        settings["seed"] = entry.get("seed", config["models"][model].get("seed", config["seed"]))
    return settings


def adapter_workload(config: dict[str, Any], model: str, adapter: str) -> dict[str, Any]:
    """The workload an adapter job measures: the study's, with the adapter's batch sizes."""
    batch_sizes = adapter_entries(config, model)[adapter].get("batch_sizes")
    return {**config["workload"], **({"batch_sizes": batch_sizes} if batch_sizes else {})}


# ---------------------------------------------------------------------------- architecture


@functools.lru_cache(maxsize=32)
def _projection_shapes(architecture_json: str) -> tuple[tuple[str, int, int], ...]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    arch = json.loads(architecture_json)
    fields = {key: value for key, value in arch.items() if key != "model_type"}
    hf_config = AutoConfig.for_model(arch["model_type"], **fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    head = model.get_output_embeddings()
    shapes = []
    for name, module in model.named_modules():
        if module is head:
            continue
        if isinstance(module, torch.nn.Linear):
            shapes.append((name, module.in_features, module.out_features))
        elif isinstance(module, Conv1D):  # GPT-2's projections: weight is (in, out)
            shapes.append((name, int(module.weight.shape[0]), int(module.weight.shape[1])))
    return tuple(shapes)


def projection_shapes(arch: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Module name -> (in_features, out_features) of every linear projection an adapter can
    target (the LM head excluded), from the architecture built on the meta device."""
    return {name: (d_in, d_out) for name, d_in, d_out in _projection_shapes(json.dumps(arch, sort_keys=True))}


def matches_target(module_name: str, target: str) -> bool:
    """PEFT's rule for a list of target names: the full name, or its last dotted components."""
    return module_name == target or module_name.endswith("." + target)


def targeted(shapes: dict[str, tuple[int, int]], targets: list[str]) -> dict[str, tuple[int, int]]:
    return {name: shape for name, shape in shapes.items() if any(matches_target(name, t) for t in targets)}


# ---------------------------------------------------------------------------- config checks


def _leaf_names(shapes: dict[str, tuple[int, int]]) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name in shapes})


def check_targets(field: str, arch: dict[str, Any], rank: int, targets: Any) -> None:
    """Every target names a projection of the architecture, and the rank fits each one."""
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ConfigError(
            f"{field}.target_modules: {targets!r} is not a list of module names; "
            "give names such as [q_proj, v_proj] (regular expressions are not accepted)"
        )
    shapes = projection_shapes(arch)
    for target in targets:
        if not targeted(shapes, [target]):
            raise ConfigError(
                f"{field}.target_modules: {arch.get('model_type')} has no projection {target!r}; "
                f"allowed: {', '.join(_leaf_names(shapes))}"
            )
    for name, (d_in, d_out) in targeted(shapes, targets).items():
        if rank > min(d_in, d_out):
            raise ConfigError(
                f"{field}.rank: {rank} exceeds min(in, out) = {min(d_in, d_out)} of {name} "
                f"({d_in} x {d_out}); use a rank of at most {min(d_in, d_out)} or drop that target"
            )


def _check_adapter_dir(field: str, entry: dict[str, Any], arch: dict[str, Any] | None, root: Path) -> None:
    directory = repo_path(entry["path"], f"{field}.path", root)
    if not directory.is_dir():
        raise ConfigError(
            f"{field}.path: {entry['path']!r} is not a directory; give a PEFT adapter directory "
            "(adapter_config.json and adapter_model.safetensors)"
        )
    if not (directory / "adapter_model.safetensors").is_file():
        found = sorted(p.name for p in directory.glob("adapter_model*"))
        what = f"it has {', '.join(found)}" if found else "it has no adapter_model.safetensors"
        raise ConfigError(
            f"{field}.path: {entry['path']!r}: adapters are loaded from safetensors only and {what}; "
            "re-save it with save_pretrained(safe_serialization=True)"
        )
    try:
        adapter_config = json.loads((directory / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise ConfigError(
            f"{field}.path: {entry['path']!r} has no readable adapter_config.json; "
            "save the adapter with PEFT's save_pretrained"
        ) from None
    if adapter_config.get("peft_type") != "LORA":
        raise ConfigError(
            f"{field}.path: {entry['path']!r} holds a {adapter_config.get('peft_type')!r} adapter; "
            "only LoRA adapters are measured"
        )
    if arch is not None:
        check_targets(
            f"{field} (from {entry['path']}/adapter_config.json)",
            arch,
            int(adapter_config["r"]),
            adapter_config.get("target_modules"),
        )


def check_adapters(config: dict[str, Any], model: str, arch: dict[str, Any] | None, root: Path) -> None:
    """Every adapter of a model: its source's fields, its targets and rank, and where it runs.
    `arch` is the model's architecture config (None for a hub model: checked when it is built)."""
    entry = config["models"][model]
    for name, adapter in (entry.get("adapters") or {}).items():
        field = f"models.{model}.adapters.{name}"
        if name == NO_ADAPTER:
            raise ConfigError(f"{field}: {NO_ADAPTER!r} names the base model; give the adapter another name")
        source = adapter.get("source", "random")
        if source == "random":
            missing = [key for key in ("rank", "target_modules") if key not in adapter]
            if missing:
                raise ConfigError(
                    f"{field}.{missing[0]}: required for source 'random' "
                    "(rank and target_modules, e.g. rank: 8, target_modules: [q_proj, v_proj])"
                )
            if arch is not None:
                check_targets(field, arch, adapter["rank"], adapter["target_modules"])
        else:
            given = [key for key in RANDOM_KEYS if key in adapter]
            if given:
                raise ConfigError(
                    f"{field}.{given[0]}: a {source} adapter brings its own adapter_config.json; "
                    f"remove {given[0]} (it is only for source 'random')"
                )
        if source == "path":
            if "path" not in adapter:
                raise ConfigError(
                    f"{field}.path: required for source 'path' (a PEFT adapter directory in the repository)"
                )
            _check_adapter_dir(field, adapter, arch, root)
        if source == "hub":
            for key in ("repo_id", "revision"):
                if key not in adapter:
                    raise ConfigError(f"{field}.{key}: required for source 'hub' (a repo id and a full 40-hex commit)")
        _check_where(config, model, name, field, arch)


def _check_where(config: dict[str, Any], model: str, name: str, field: str, arch: dict[str, Any] | None) -> None:
    entry = config["models"][model]
    adapter = entry["adapters"][name]
    for backend, quants in adapter_backends(config, model, name).items():
        for index, quant in enumerate(quants):
            where = f"{field}.backends.{backend}[{index}]" if "backends" in adapter else f"{field}"
            if quant not in entry["backends"].get(backend, []):
                raise ConfigError(
                    f"{where}: models.{model} does not measure {quant!r} on {backend}; "
                    "list only variants of the model's backends"
                )
            problem = support_problem(backend, quant, arch)
            if problem:
                fix = "" if "backends" in adapter else " (or give the adapter a backends: list)"
                raise ConfigError(f"{where}: no adapter on {backend} {quant}: {problem}{fix}")
            if backend == "vllm" and int(adapter.get("rank") or 0) > VLLM_MAX_LORA_RANKS[-1]:
                raise ConfigError(
                    f"{field}.rank: {adapter['rank']} exceeds vLLM's largest max_lora_rank "
                    f"{VLLM_MAX_LORA_RANKS[-1]}; use a smaller rank or measure it on pytorch only"
                )
    for index, batch in enumerate(adapter.get("batch_sizes") or []):
        if batch not in config["workload"]["batch_sizes"]:
            raise ConfigError(
                f"{field}.batch_sizes[{index}]: {batch} is not one of workload.batch_sizes "
                f"{config['workload']['batch_sizes']}; pick from those"
            )
