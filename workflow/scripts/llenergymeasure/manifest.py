"""`variant.json`: the manifest every variant builder writes and measure and the backends read.

The quantise rule (none-*, bnb-*, llm-compressor and legacy checkpoints) and the gguf rule
each describe their artefact as one `VariantManifest`; `write` refuses a manifest missing a
contract field, and `read` / `from_json` accept any manifest written before, keeping keys this
class does not declare (the gguf rule's `perplexity_method`) so a manifest round-trips as it was.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import write_json_atomic
from .variants import require

FILENAME = "variant.json"

# Fields a written manifest must give (the others may stay None: no checkpoint, no evaluation).
REQUIRED_FIELDS = ("model", "quant", "quant_method", "weight_bits", "compute_dtype", "model_dir", "weight_bytes_disk")


@dataclass
class VariantManifest:
    """One built variant of one model: what it is, where its weights are, how good it is."""

    quant: str | None = None  # the variant's catalogue name (variants.VARIANTS)
    model: str | None = None
    quant_method: str | None = None
    weight_bits: int | None = None  # nominal storage bits per weight
    compute_dtype: str | None = None  # the dtype the variant is meant to compute at
    load_dtype: str | None = None  # the dtype of the non-quantised tensors after loading
    model_dir: str | None = None  # the materialised model directory it was built from
    checkpoint_dir: str | None = None  # a new checkpoint (llm-compressor, legacy), else None
    checkpoint_file: str | None = None  # its first safetensors file, or the GGUF file
    weight_bytes_disk: int | None = None
    weights: str | None = None  # "random" or "pretrained", from the model manifest
    perplexity: float | None = None
    perplexity_tokens: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # how it was built and evaluated
    extra: dict[str, Any] = field(default_factory=dict)  # builder-specific top-level keys

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VariantManifest:
        """A manifest from a parsed variant.json (missing fields are None)."""
        declared = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {key: value for key, value in data.items() if key in declared}
        values["settings"] = dict(values.get("settings") or {})
        return cls(**values, extra={key: value for key, value in data.items() if key not in declared})

    @classmethod
    def coerce(cls, variant: VariantManifest | Mapping[str, Any]) -> VariantManifest:
        """`variant` itself, or the manifest of a parsed variant.json mapping."""
        return variant if isinstance(variant, cls) else cls.from_json(variant)

    @classmethod
    def read(cls, path: str | Path) -> VariantManifest:
        return cls.from_json(json.loads(Path(path).read_text()))

    def to_json(self) -> dict[str, Any]:
        """The variant.json mapping: every declared field, then the builder's extra keys."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**data, **self.extra}

    def write(self, out_dir: str | Path) -> None:
        """Write `out_dir/variant.json` atomically, refusing a manifest without the contract fields."""
        missing = [name for name in REQUIRED_FIELDS if getattr(self, name) is None]
        require(not missing, f"variant.json: missing field(s) {', '.join(missing)}")
        write_json_atomic(Path(out_dir) / FILENAME, self.to_json())

    def row_fields(self) -> dict[str, Any]:
        """The measurement columns each row of a measure job takes from its variant."""
        return {
            "dtype": self.load_dtype or self.compute_dtype,
            "quant_method": self.quant_method,
            "weight_bits": self.weight_bits,
            "compute_dtype": self.compute_dtype,
            "weight_bytes_disk": self.weight_bytes_disk,
            "weights": self.weights,
            "perplexity": self.perplexity,
        }
