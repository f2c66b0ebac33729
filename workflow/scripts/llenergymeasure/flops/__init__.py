"""FLOPs of autoregressive generation (`generate` with a KV cache), verified against the model.

`count_generate(hf_config, batch, prompt, new)` counts the matrix-multiply FLOPs that
`model.generate(max_new_tokens=T)` executes in transformers 5 with eager attention and eager
MoE experts, in PyTorch's `FlopCounterMode` convention, and says what backs the number
(`method`, `confidence`, `reason`): see `counting` and docs/flops.md. Modules:

* `architecture`, `analytical`: the hand formulas of the named families (pure Python), and the
  byte counts behind MBU;
* `structure`: the model transformers builds, on the meta device, walked module by module;
* `tracing`: FlopCounterMode over that model's prefill and decode forwards;
* `counting`: the two counts compared, one verdict;
* `annotation`: the columns the `flops` rule adds to measured rows; `cli`: `llenergymeasure flops`.
"""

from .analytical import (
    _sum_min,
    count_hand_formula,
    decode_bytes_per_step,
    kv_cache_bytes,
    parameter_counts,
    weight_bytes,
)
from .annotation import ANNOTATION_COLUMNS, annotate, static_cache_length
from .architecture import VERIFIED_FAMILIES, Architecture, FlopsConfigError, LayerSpec, MlpSpec, parse_architecture
from .cli import format_table, register_cli, run_cli
from .counting import TOLERANCE, count_generate

__all__ = [
    "ANNOTATION_COLUMNS",
    "TOLERANCE",
    "VERIFIED_FAMILIES",
    "Architecture",
    "FlopsConfigError",
    "LayerSpec",
    "MlpSpec",
    "_sum_min",
    "annotate",
    "count_generate",
    "count_hand_formula",
    "decode_bytes_per_step",
    "format_table",
    "kv_cache_bytes",
    "parameter_counts",
    "parse_architecture",
    "register_cli",
    "run_cli",
    "static_cache_length",
    "weight_bytes",
]
