"""The backend interface: load a variant, run prefill-only and full generation, report memory."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backend_specs import SPECS, set_fields, typed_settings
from ..manifest import VariantManifest

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_process_peak_rss() -> bool:
    """Start a new peak-RSS interval for this process (Linux >= 4.0); False where impossible."""
    try:
        _CLEAR_REFS.write_text("5")  # resets VmHWM
        return True
    except OSError:
        return False


def process_peak_rss_bytes() -> int | None:
    """This process's peak resident set (VmHWM) since start or the last reset."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class LoadInfo:
    """What a backend actually runs after loading a variant (recorded on every row)."""

    kernel_path: str  # what runs the matmuls, detected from the loaded modules
    compute_dtype: str
    weight_bytes_memory: int | None  # bytes of weights resident after load
    decompressed_at_load: bool = False  # a quantised checkpoint expanded to full precision
    load_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """One inference engine. Prefill-only is `generate(inputs, 1)`."""

    name: str = ""
    supported_quants: tuple[str, ...] = ()
    # generate(..., on_token=...) runs the same code path as without it, plus one host callback
    # per token, so the measured full window itself is streamed (see `trial`)
    streams_in_window: bool = True

    def __init__(self, settings: Any = None, device: str = "cpu"):
        """`settings`: the backend's settings instance (backend_specs), checked once where the
        config was loaded; a plain mapping (a test, a benchmark) is parsed the same way."""
        self.settings = typed_settings(self.name, settings) if self.name in SPECS else settings
        self.device = device

    @abc.abstractmethod
    def load(self, variant: VariantManifest | Mapping[str, Any]) -> LoadInfo:
        """Load the variant described by a `variant.json` manifest (or its parsed mapping)."""

    @abc.abstractmethod
    def prepare_inputs(self, batch_size: int, prompt_tokens: int, seed: int) -> Any:
        """Deterministic prompt token ids of the given shape, ready for `generate`."""

    @abc.abstractmethod
    def generate(self, inputs: Any, new_tokens: int, on_token: Callable[[], None] | None = None) -> int:
        """Generate exactly `new_tokens` tokens per sequence (EOS ignored); return that count.

        `on_token` is called after each new token is available on the host."""

    def model_replaced(self) -> None:
        """The model object changed after load (an adapter put on or merged in): drop anything
        prepared for the old one (no-op here; pytorch-compiled re-warms its compiled shapes)."""

    def synchronize(self) -> None:
        """Wait until queued device work has finished (no-op on CPU)."""

    def peak_memory_reset(self) -> None:
        """Start a new peak-memory interval."""

    def peak_memory_bytes(self) -> int | None:
        """Peak memory since the last reset, or None where it cannot be read."""
        return None

    def describe(self) -> dict[str, Any]:
        """Name, version and settings, recorded on every row."""
        return {"name": self.name, "version": None, "settings": self.set_settings()}

    def set_settings(self) -> dict[str, Any]:
        """The settings this backend was given (those not left to its defaults)."""
        if self.settings is None or isinstance(self.settings, Mapping):
            return dict(self.settings or {})
        return set_fields(self.settings)

    def close(self) -> None:
        """Release the model and device memory."""
