"""Backend registry: `get_backend(name)` returns the class registered under that name."""

from __future__ import annotations

import importlib

from ..backend_specs import SPECS
from .base import Backend, LoadInfo

# name -> "module:Class" (from backend_specs), imported lazily so that a backend's heavy
# dependencies (torch, llama_cpp, vllm) are only needed when that backend is used.
BACKENDS: dict[str, str] = {name: spec.backend_class for name, spec in SPECS.items()}


def get_backend(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise KeyError(f"unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    module_name, class_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["BACKENDS", "Backend", "LoadInfo", "get_backend"]
