"""What a config gets where it says nothing, read by the stages without importing the validator.

* `DEFAULTS`: the schema's defaults (`config_schema.schema_defaults`, the one place they are
  written), merged under a config after validation.
* `resolve_device`: `device: auto` made concrete (cuda where NVML sees a GPU, else cpu).
* `max_positions`: the context a model config allows.

Light on purpose: measure, serving and the backends import this, never `config` (which
validates, and reaches the memory preflight and the FLOPs engine's architecture parsing).
"""

from __future__ import annotations

from typing import Any

from .config_schema import schema_defaults

DEFAULTS: dict[str, Any] = schema_defaults()


def cuda_visible() -> bool:
    """Whether an NVIDIA GPU is usable, checked through NVML without importing torch."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return False


def resolve_device(config: dict[str, Any]) -> str:
    device = config.get("device", "auto")
    if device == "auto":
        return "cuda" if cuda_visible() else "cpu"
    return device


def max_positions(arch: dict[str, Any]) -> int | None:
    """The positions a Hugging Face config allows, under whichever name its family uses."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(arch.get(key), int):
            return arch[key]
    return None
