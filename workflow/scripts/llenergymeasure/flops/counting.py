"""FLOPs of generate(): an analytical count checked against a FlopCounterMode trace.

`count_generate` counts in PyTorch's `FlopCounterMode` convention (2 FLOPs per multiply-
accumulate; element-wise work is not counted), for `model.generate(max_new_tokens=T)` in
transformers 5 with eager attention and eager experts. Two independent counts are made:

* analytical: the hand formula of a named family (`architecture`, `analytical`), else the
  count read from the modules transformers builds (`structure`);
* traced: FlopCounterMode over the meta-device model (`tracing`).

`flops_confidence` says what backs the number: `exact` when both exist and agree within
TOLERANCE (prefill and whole call); `traced` when only the trace does, or the two disagree
(the traced count is used, `flops_method: traced`, and the reason gives both); `unsupported`
when the model cannot be traced: no number at all, only the reason. Without torch and
transformers importable, a named family's hand formula is returned as `unverified`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llenergymeasure.variants import VARIANTS

from .analytical import count_hand_formula, parameter_counts
from .architecture import VERIFIED_FAMILIES, FlopsConfigError, parse_architecture

TOLERANCE = 1e-4  # relative: 0.01 %
SIZE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
_PARTS = ("flops_attention", "flops_attention_causal", "flops_lm_head", "flops_linear", "flops_router", "flops_rotary")


def _validate_shape(**sizes: Any) -> None:
    for name, value in sizes.items():
        if value is None and name == "static_cache_len":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise FlopsConfigError(f"{name} must be a positive integer, got {value!r}")


def _quant_spec(quant: str | None):
    if quant is None:
        return None
    if quant not in VARIANTS:
        raise FlopsConfigError(f"quant '{quant}' is not a known variant; allowed: {', '.join(VARIANTS)}")
    return VARIANTS[quant]


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def _require_size_fields(hf_config: dict) -> None:
    """A config.json must state the sizes its family has: transformers would fill a 7B default."""
    if not isinstance(hf_config, dict):
        raise FlopsConfigError("model config must be a JSON object (a Hugging Face config.json)")
    family = hf_config.get("model_type")
    if family in VERIFIED_FAMILIES or not _torch_available():
        return  # parse_architecture names the missing field
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if family not in CONFIG_MAPPING:
        return  # the structure walk reports the unknown model_type
    cls = CONFIG_MAPPING[family]
    aliases = dict(getattr(cls, "attribute_map", {}) or {})
    try:
        defaults = cls().to_dict()
    except Exception:
        return
    for name in SIZE_FIELDS:
        spelled = aliases.get(name, name)
        if spelled in defaults and spelled not in hf_config and name not in hf_config:
            raise FlopsConfigError(f"model config lacks '{spelled}', which the FLOP count needs")


def _relative(a: int, b: int) -> float:
    return abs(a - b) / b if b else (0.0 if a == b else float("inf"))


@dataclass
class _Counts:
    """The counts behind one answer: the module walk (structure) and the FlopCounterMode trace."""

    structure: Any = None
    structure_counts: dict[str, int] | None = None
    structure_error: str | None = None
    traced: Any = None
    trace_error: str | None = None


def _walk_and_trace(
    hf_config: dict, batch: int, prompt: int, new: int, static_cache_len: int | None, trace: bool
) -> _Counts:
    counts = _Counts()
    if not _torch_available():
        counts.trace_error = "torch and transformers are not importable here, so the count was not traced"
        return counts
    from .structure import count_structure, read_structure
    from .tracing import TraceError, trace_generate

    try:
        counts.structure = read_structure(hf_config)
        counts.structure_counts = count_structure(counts.structure, batch, prompt, new, static_cache_len)
    except Exception as exc:
        counts.structure_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    if not trace:
        counts.trace_error = "tracing was switched off"
        return counts
    try:
        counts.traced = trace_generate(hf_config, prompt, new, static_cache_len)
    except TraceError as exc:
        counts.trace_error = str(exc)
    return counts


def _choose(family: str, batch: int, hand: dict | None, counts: _Counts) -> tuple[dict[str, Any], str, str, str]:
    """The FLOPs reported and (method, confidence, reason): an analytical count the trace
    confirms is exact; one it contradicts gives way to the trace; without a trace, the hand
    formula is unverified and anything else is refused."""
    analytic, analytic_name = (
        (hand, f"the hand formula for {family}")
        if hand
        else (counts.structure_counts, "the count read from the model's modules")
    )
    result: dict[str, Any] = {name: None for name in ("flops_prefill", "flops_decode", "flops_total", *_PARTS)}
    traced = counts.traced
    if traced is not None:
        traced_prefill, traced_total = batch * traced.prefill, batch * (traced.prefill + traced.decode)
        agrees = (
            analytic is not None
            and _relative(analytic["flops_prefill"], traced_prefill) <= TOLERANCE
            and _relative(analytic["flops_total"], traced_total) <= TOLERANCE
        )
        if agrees:
            result.update(analytic)
            reason = f"{analytic_name} equals the FlopCounterMode trace of the model transformers builds"
            return result, ("analytical" if hand else "structure"), "exact", reason
        result.update(flops_prefill=traced_prefill, flops_decode=batch * traced.decode, flops_total=traced_total)
        if analytic is None:
            reason = (
                f"no analytical count ({counts.structure_error or 'none for this family'}); FlopCounterMode trace only"
            )
        else:
            error = analytic["flops_total"] / traced_total - 1
            reason = (
                f"{analytic_name} gives {analytic['flops_total']} FLOPs, the FlopCounterMode trace "
                f"{traced_total} ({100 * error:+.3f} %); the traced count is used"
            )
        return result, "traced", "traced", reason
    if hand is not None and not _torch_available():
        result.update(hand)
        reason = f"{counts.trace_error}: the hand formula for {family} (tested against FlopCounterMode) is unchecked for this config"
        return result, "analytical", "unverified", reason
    reason = f"model_type '{family or '?'}': {counts.trace_error or counts.structure_error}; no FLOP count is reported"
    return result, "none", "unsupported", reason


def _parameters(structure: Any, hand_arch: Any) -> dict[str, int | None]:
    """params_total, params_non_embedding and params_active, from the module walk or the formula."""
    names = ("params_total", "params_non_embedding", "params_active")
    if structure is not None:
        return {name: getattr(structure, name) for name in names}
    if hand_arch is not None:
        counts = parameter_counts(hand_arch)
        return {name: counts[name] for name in names}
    return dict.fromkeys(names)


def _add_per_token(result: dict[str, Any], batch: int, prompt: int, new: int, per_token: int) -> None:
    """Add FLOPs per processed token (e.g. a LoRA adapter's) to prefill, decode and the linears."""
    if result["flops_total"] is None or not per_token:
        return
    result["flops_prefill"] += batch * prompt * per_token
    result["flops_decode"] += batch * (new - 1) * per_token
    result["flops_total"] = result["flops_prefill"] + result["flops_decode"]
    if result["flops_linear"] is not None:
        result["flops_linear"] += batch * (prompt + new - 1) * per_token


def count_generate(
    hf_config: dict,
    batch: int,
    prompt: int,
    new: int,
    quant: str | None = None,
    *,
    static_cache_len: int | None = None,
    extra_flops_per_token: int = 0,
    trace: bool = True,
) -> dict[str, Any]:
    """FLOPs of `generate(max_new_tokens=new)` on `batch` sequences of `prompt` tokens.

    static_cache_len: the static KV cache's length (the pytorch-compiled backend), else the
    dynamic cache. extra_flops_per_token: FLOPs per processed token of projections the config
    does not describe (e.g. LoRA adapters), added to prefill, decode and `flops_linear`.
    Weight-only quantisation never changes the count; W8A8 reports its linear-layer work again
    as `int_ops_total`. Raises FlopsConfigError on bad input (the message names the field)."""
    _validate_shape(batch=batch, prompt=prompt, new=new, static_cache_len=static_cache_len)
    if static_cache_len is not None and static_cache_len < prompt + new - 1:
        raise FlopsConfigError(
            f"static_cache_len {static_cache_len} is shorter than prompt + new - 1 = {prompt + new - 1}"
        )
    spec = _quant_spec(quant)
    _require_size_fields(hf_config)
    family = str(hf_config.get("model_type") or "")
    hand_arch = parse_architecture(hf_config) if family in VERIFIED_FAMILIES else None
    hand = count_hand_formula(hand_arch, batch, prompt, new, static_cache_len) if hand_arch else None

    counts = _walk_and_trace(hf_config, batch, prompt, new, static_cache_len, trace)
    result, method, confidence, reason = _choose(family, batch, hand, counts)
    params = _parameters(counts.structure, hand_arch)
    _add_per_token(result, batch, prompt, new, extra_flops_per_token)

    processed = prompt + new - 1  # positions forwarded: the last new token is never fed back
    active = params["params_active"]
    # W8A8: the quantised decoder linears run as int8 ops; LM head, router and attention stay float.
    weight_only = spec.weight_only if spec else True
    analytic = hand or counts.structure_counts
    result.update(
        flops_per_output_token=None if result["flops_total"] is None else result["flops_total"] / (batch * new),
        flops_2n_reference=None if active is None else 2 * active * batch * processed,
        flops_2n_parameters="params_active",
        **params,
        method=method,
        confidence=confidence,
        reason=reason,
        int_ops_total=None if weight_only else result["flops_linear"],
        compute_dtype=spec.compute_dtype if spec else None,
        quant=quant,
        model_type=family,
        batch=batch,
        prompt=prompt,
        new=new,
        static_cache_len=static_cache_len,
        extra_flops_per_token=extra_flops_per_token,
        analytical_flops_total=None if analytic is None else analytic["flops_total"],
        trace_seconds=None if counts.traced is None else counts.traced.seconds,
        structure=None if counts.structure is None else counts.structure.features,
    )
    return result
