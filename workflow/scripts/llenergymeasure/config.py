"""Study configuration: semantic checks, defaults, the memory preflight and sweep expansion.

Every check runs before any job is planned, and every failure is one line that names the
field and says what is allowed, so a bad config never costs a model build or a measurement.
Reading the file is `config_file`, the schema check `config_schema`, the question whether
each shape fits in memory `memory_preflight`; every failure is an `errors.ConfigError`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backend_specs import internal_settings, parse_settings
from .config_file import read_config_file
from .config_schema import SCHEMA_PATH, load_schema, validate_schema  # noqa: F401 (re-exported)
from .defaults import DEFAULTS, cuda_visible, max_positions, resolve_device  # noqa: F401 (re-exported)
from .errors import ConfigError
from .memory_preflight import check_memory
from .paths import REPO_ROOT, repo_path
from .serving.settings import check_serving
from .variants import BACKEND_NAMES, BACKENDS_NEEDING_CUDA, VARIANTS, check_supported, quants_for_backend

DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "config.yaml"

MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class Job:
    """One measure job: a model variant on one backend, measuring every configured shape."""

    model: str
    quant: str
    backend: str


def _merge_defaults(config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(defaults)
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_defaults(value, merged[key])
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _check_architecture(name: str, entry: dict[str, Any], root: Path) -> dict[str, Any]:
    """The model's architecture config, checked: inside the repository, present, JSON, a HF config."""
    field = f"models.{name}.architecture"
    if "architecture" not in entry:
        raise ConfigError(f"{field}: required for source 'config'; give a path such as config/models/{name}.json")
    path = repo_path(entry["architecture"], field, root)
    if not path.is_file():
        raise ConfigError(f"{field}: file {entry['architecture']!r} does not exist; add it or fix the path")
    try:
        arch = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{field}: {entry['architecture']!r} is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    if not isinstance(arch, dict) or "model_type" not in arch:
        raise ConfigError(
            f"{field}: {entry['architecture']!r} has no 'model_type'; it must be a Hugging Face config.json"
        )
    return arch


def _check_model_source(name: str, entry: dict[str, Any], root: Path, longest: int) -> tuple[dict | None, int | None]:
    """A model's architecture (source config) and its positions, or the hub fields it needs."""
    if not MODEL_NAME_RE.match(name):
        raise ConfigError(f"models.{name}: model names use lowercase letters, digits, '.', '_', '-' (no paths)")
    if entry.get("source", "config") != "config":
        for key in ("repo_id", "revision"):
            if key not in entry:
                raise ConfigError(
                    f"models.{name}.{key}: required for source 'hub' (a repo id and a full 40-hex commit)"
                )
        return None, None
    arch = _check_architecture(name, entry, root)
    limit = max_positions(arch)
    if limit is not None and longest > limit:
        raise ConfigError(
            f"workload: prompt_tokens + new_tokens = {longest} exceeds models.{name}'s "
            f"{limit} positions; shorten the workload or use a longer-context architecture"
        )
    return arch, limit


def _check_model_backends(name: str, entry: dict[str, Any], model_type: str | None, has_cuda: bool) -> None:
    """Every (backend, variant) of a model exists, fits together and runs on this device."""
    for backend, quants in entry["backends"].items():
        field = f"models.{name}.backends.{backend}"
        if backend not in BACKEND_NAMES:
            raise ConfigError(f"{field}: unknown backend {backend!r}; allowed: {', '.join(BACKEND_NAMES)}")
        if backend in BACKENDS_NEEDING_CUDA and not has_cuda:
            raise ConfigError(
                f"{field}: backend {backend!r} needs an NVIDIA GPU and none is visible; remove it or run on a GPU machine"
            )
        allowed = quants_for_backend(backend)
        on_this_device = quants_for_backend(backend, "cuda" if has_cuda else "cpu")
        for index, quant in enumerate(quants):
            if quant not in VARIANTS:
                raise ConfigError(
                    f"{field}[{index}]: unknown variant {quant!r}; allowed for {backend}: {', '.join(allowed)}"
                )
            if quant not in allowed:
                raise ConfigError(
                    f"{field}[{index}]: {backend} cannot run {quant!r}; allowed for {backend}: {', '.join(allowed)}"
                )
            if quant not in on_this_device:
                raise ConfigError(
                    f"{field}[{index}]: {backend} on CPU cannot run {quant!r} (not verified with its CPU build); "
                    f"allowed on CPU: {', '.join(on_this_device)}; measure it on a GPU or with pytorch"
                )
            problem = check_supported(quant, has_cuda, model_type)
            if problem:
                raise ConfigError(f"{field}[{index}]: {problem}")


def _check_texts(config: dict[str, Any], root: Path) -> None:
    for section, key in (("quantisation", "calibration"), ("evaluation", None)):
        block = config[section][key] if key else config[section]
        field = f"{section}.{key}.text" if key else f"{section}.text"
        path = repo_path(block["text"], field, root)
        if not path.is_file():
            raise ConfigError(f"{field}: file {block['text']!r} does not exist; ship the text or fix the path")


def _check_analysis(config: dict[str, Any], root: Path) -> None:
    """The reference is a measured configuration; every extra results folder has its table."""
    reference = config["analysis"].get("reference")
    if reference:
        jobs = {(j.model, j.quant, j.backend) for j in expand_jobs(config)}
        key = (reference.get("model"), reference.get("quant"), reference.get("backend"))
        if key not in jobs:
            raise ConfigError(
                f"analysis.reference: {dict(zip(('model', 'quant', 'backend'), key, strict=True))} is not a measured "
                "configuration; pick one of the models' backends/variants"
            )
    for index, folder in enumerate(config["analysis"].get("extra_results", [])):
        field = f"analysis.extra_results[{index}]"
        if (
            not (Path(folder) / "measurements.parquet").is_file()
            and not (root / folder / "measurements.parquet").is_file()
        ):
            raise ConfigError(
                f"{field}: {folder!r} has no measurements.parquet; point it at another run's results/aggregate folder"
            )


def check_semantics(config: dict[str, Any], root: Path = REPO_ROOT, has_cuda: bool | None = None) -> None:
    """Checks beyond the schema: files exist, combinations are runnable on this machine, shapes fit."""
    device = config.get("device", "auto")
    if has_cuda is None:
        has_cuda = device == "cuda" or (device == "auto" and cuda_visible())
    if device == "cpu":
        has_cuda = False
    workload = config["workload"]
    longest = max(workload["prompt_tokens"]) + workload["new_tokens"]
    positions: dict[str, int | None] = {}
    architectures: dict[str, dict[str, Any]] = {}
    for name, entry in config["models"].items():
        arch, positions[name] = _check_model_source(name, entry, root, longest)
        if arch is not None:
            architectures[name] = arch
        _check_model_backends(name, entry, arch.get("model_type") if arch else None, has_cuda)
        if entry.get("adapters"):
            from .lora import check_adapters

            check_adapters(config, name, arch, root)
    check_serving(config, positions, ConfigError)
    _check_texts(config, root)
    for backend, settings in config.get("backend_settings", {}).items():
        _check_backend_settings(backend, settings, workload)
    _check_analysis(config, root)
    check_memory(config, architectures, "cuda" if has_cuda else "cpu")


def _check_backend_settings(backend: str, settings: dict[str, Any], workload: dict[str, Any]) -> None:
    field = f"backend_settings.{backend}"
    if backend not in BACKEND_NAMES:
        raise ConfigError(f"{field}: unknown backend; allowed: {', '.join(BACKEND_NAMES)}")
    typed = parse_settings(backend, settings)  # types, bounds and words, from its settings dataclass
    for key in internal_settings(backend):
        if key in settings:
            raise ConfigError(f"{field}.{key}: set by the pipeline for the jobs that need it (adapter jobs); remove it")
    room = getattr(typed, "max_new_tokens", None)
    if room is not None and room < workload["new_tokens"]:
        raise ConfigError(
            f"{field}.max_new_tokens: {room} is smaller than workload.new_tokens {workload['new_tokens']}; "
            f"set it to at least {workload['new_tokens']} (or remove it: measure sizes it to the workload)"
        )
    longest_prompt = max(workload["prompt_tokens"])
    prompt_room = getattr(typed, "max_prompt_tokens", None)
    if prompt_room is not None and prompt_room < longest_prompt:
        raise ConfigError(
            f"{field}.max_prompt_tokens: {prompt_room} is smaller than the longest prompt "
            f"{longest_prompt}; set it to at least {longest_prompt} (or remove it)"
        )


def load_config(
    source: str | Path | dict[str, Any], root: Path = REPO_ROOT, has_cuda: bool | None = None
) -> dict[str, Any]:
    """Validate a config (a path or an already-loaded dict) and return it with defaults filled."""
    raw = read_config_file(source) if isinstance(source, (str, Path)) else source
    if not isinstance(raw, dict):
        raise ConfigError("configfile: the top level must be a mapping with models, workload and measurement")
    raw = json.loads(json.dumps(raw))  # plain types only (snakemake passes its own mapping types)
    validate_schema(raw)
    config = _merge_defaults(raw, DEFAULTS)
    check_semantics(config, root=root, has_cuda=has_cuda)
    return config


def expand_jobs(config: dict[str, Any]) -> Iterator[Job]:
    """Every (model, quant, backend) measure job of the sweep, in config order."""
    for model, entry in config["models"].items():
        for backend, quants in entry["backends"].items():
            for quant in quants:
                yield Job(model, quant, backend)


def measurement_settings(config: dict[str, Any], backend: str) -> dict[str, Any]:
    """Everything a measure job's rows depend on besides its model and variant.

    The measure rule passes only this (as canonical JSON), so adding a model or a variant to a
    finished study re-runs nothing that was already measured; rows carry its hash."""
    return {
        "seed": config["seed"],
        "device": config["device"],
        "workload": config["workload"],
        # how many replicates run is not what one measures: adding replicates re-runs none
        "measurement": {key: value for key, value in config["measurement"].items() if key != "replicates"},
        "backend_settings": {backend: (config.get("backend_settings") or {}).get(backend) or {}},
    }


MODEL_BUILD_KEYS = ("source", "architecture", "repo_id", "revision", "trust_remote_code", "allow_pickle")


def model_build_settings(config: dict[str, Any], model: str) -> dict[str, Any]:
    """Everything a model directory depends on (not which backends or variants measure it)."""
    entry = config["models"][model]
    settings = {key: entry[key] for key in MODEL_BUILD_KEYS if key in entry}
    settings.setdefault("source", "config")
    settings["seed"] = entry.get("seed", config["seed"])
    return settings


def canonical_json(data: Any) -> str:
    """Key-order-independent JSON, for Snakemake params that must not change spuriously."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def register_cli(subparsers: Any) -> None:
    parser = subparsers.add_parser("validate", help="validate a study config without running anything")
    parser.add_argument("configfile", nargs="?", default=str(DEFAULT_CONFIG_PATH))
    parser.set_defaults(func=_cli_validate)


def _cli_validate(args: Any) -> int:
    try:
        config = load_config(args.configfile)
    except ConfigError as exc:
        print(f"config error: {exc}")
        return 2
    jobs = list(expand_jobs(config))
    print(f"ok: {len(config['models'])} model(s), {len(jobs)} measure job(s)")
    return 0
