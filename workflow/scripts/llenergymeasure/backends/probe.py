"""What runs a loaded PyTorch variant: probe, kernels, bytes.

`describe_loaded` runs one prefill and one decode step under torch.profiler, finds the
modules holding quantised weights, and reports in a `LoadInfo` the kernel path actually
observed, the dtype the matmuls compute at, the bytes of weights (and quantisation state)
resident after that probe, and whether a quantised checkpoint ended up decompressed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from ..manifest import VariantManifest
from ..variants import QuantiseError, VariantSpec
from .base import LoadInfo

PROBE_PROMPT_TOKENS = 4  # the kernel-detection probe: one prefill of 4 tokens, one decode step
_MATMUL_OP_MARKERS = ("mm", "linear", "gemm", "gemv", "matmul")
_NON_CUSTOM_NAMESPACES = ("aten::", "prim::", "profiler::", "cuda", "Memcpy", "Memset", "[")


def _relevant_ops(names: set[str]) -> list[str]:
    """Custom-library ops (bitsandbytes::…, awq, …) and matmul-like aten ops."""
    keep = set()
    for name in names:
        if ("::" in name and not name.startswith(_NON_CUSTOM_NAMESPACES)) or (
            name.startswith("aten::") and any(marker in name for marker in _MATMUL_OP_MARKERS)
        ):
            keep.add(name)
    return sorted(keep)


def probe_ops(model: Any) -> dict[str, list[str]]:
    """Run one prefill and one decode step, recording the ops each dispatches (torch.profiler).

    Also settles the model: checkpoints that decompress on the first forward have done so,
    and bitsandbytes has repacked 4-bit weights for its CPU kernel."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from ..quality import vocab_size

    device = next(p.device for p in model.parameters())

    vocab = vocab_size(model)
    prompt = (torch.arange(PROBE_PROMPT_TOKENS, device=device) % max(1, vocab - 3) + 3).unsqueeze(0)
    observed: dict[str, list[str]] = {}
    with torch.inference_mode():
        with profile(activities=[ProfilerActivity.CPU]) as prefill:
            output = model(input_ids=prompt, use_cache=True)
        next_token = output.logits[:, -1:].argmax(-1)
        with profile(activities=[ProfilerActivity.CPU]) as decode:
            model(input_ids=next_token, past_key_values=output.past_key_values, use_cache=True)
    observed["prefill_ops"] = _relevant_ops({event.key for event in prefill.key_averages()})
    observed["decode_ops"] = _relevant_ops({event.key for event in decode.key_averages()})
    return observed


def _quantised_modules(model: Any) -> Iterator[tuple[str, Any, str]]:
    """(name, module, family) of every module holding quantised weights."""
    for name, module in model.named_modules():
        cls = type(module)
        origin = cls.__module__
        if origin.startswith("bitsandbytes"):
            if cls.__name__ in ("Linear4bit", "LinearNF4", "LinearFP4"):
                yield name, module, "bnb-4bit"
            elif cls.__name__ == "Linear8bitLt":
                yield name, module, "bnb-int8"
        elif getattr(module, "quantization_scheme", None) is not None and getattr(
            module.quantization_scheme, "weights", None
        ):
            yield name, module, "compressed-tensors"
        elif origin.startswith("auto_gptq.nn_modules.qlinear"):
            yield name, module, "auto-gptq"
        elif origin.startswith("awq.modules.linear"):
            yield name, module, "autoawq"


def _first(ops: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in ops), None)


def _phase_join(prefill: str | None, decode: str | None) -> str:
    if prefill == decode:
        return prefill or "unobserved"
    return f"prefill {prefill or 'unobserved'}, decode {decode or 'unobserved'}"


def _bnb_4bit_path(module: Any, ops: dict[str, list[str]], configured: str) -> tuple[str, str]:
    state = getattr(module.weight, "quant_state", None)
    quant_type = getattr(state, "quant_type", None) or getattr(module.weight, "quant_type", "4bit")
    candidates = ("bitsandbytes::gemv_4bit", "bitsandbytes::gemm_4bit", "bitsandbytes::dequantize_4bit")
    prefill = _first(ops["prefill_ops"], candidates)
    decode = _first(ops["decode_ops"], candidates)
    kernel = _phase_join(prefill and prefill.split("::")[1], decode and decode.split("::")[1])
    compute = configured
    if getattr(state, "packing_format_for_cpu", False):
        # bitsandbytes' fused CPU kernel (AVX512-BF16) casts activations to bfloat16.
        kernel += "[cpu-packed-bf16]"
        compute = "bfloat16"
    return f"bitsandbytes.Linear4bit({quant_type}):{kernel}", compute


def _bnb_int8_path(ops: dict[str, list[str]], device: str) -> str:
    candidates = ("bitsandbytes::int8_mixed_scaled_mm", "bitsandbytes::int8_scaled_mm")
    all_ops = set(ops["prefill_ops"]) | set(ops["decode_ops"])
    outer = _first(sorted(all_ops), candidates) or "unobserved"
    if "aten::_int_mm" in all_ops:
        inner = "int8 GEMM aten::_int_mm"
    elif device == "cpu":
        inner = "int8 values multiplied in float32 (bitsandbytes default kernel)"
    else:
        inner = "bitsandbytes::int8_linear_matmul[cuda]"
    return f"bitsandbytes.Linear8bitLt:{outer.split('::')[-1]}({inner})"


def _compressed_tensors_path(module: Any) -> tuple[str, str, bool]:
    from compressed_tensors.quantization import QuantizationStatus

    scheme = module.quantization_scheme
    status = getattr(module, "quantization_status", None)
    weight = getattr(module, "weight", None)
    activations = "+dynamic-int8-activation-qdq" if scheme.input_activations is not None else ""
    if status == QuantizationStatus.DECOMPRESSED or (weight is not None and weight.is_floating_point()):
        dtype = str(weight.dtype).replace("torch.", "")
        return f"compressed-tensors:decompressed-to-{dtype}{activations}", dtype, True
    # Still compressed while running: the module computes from its packed weights.
    fmt = getattr(scheme, "format", None) or "compressed"
    scale = getattr(module, "weight_scale", None)
    compute = "int8" if activations else (str(scale.dtype).replace("torch.", "") if scale is not None else "unknown")
    return f"compressed-tensors:{type(module).__name__}({fmt}){activations}", compute, False


def _kernel_and_compute(
    found: list[tuple[str, Any, str]],
    ops: dict[str, list[str]],
    device: str,
    configured: str,
    model: Any,
    float_dtype: str,
) -> tuple[str, str, bool]:
    """(kernel path, compute dtype, decompressed) from the most common quantised module family."""
    if not found:
        linear = (
            "transformers.Conv1D" if any(type(m).__name__ == "Conv1D" for m in model.modules()) else "torch.nn.Linear"
        )
        return f"{linear}({float_dtype})", float_dtype, False
    family = Counter(kind for _, _, kind in found).most_common(1)[0][0]
    sample = next(module for _, module, kind in found if kind == family)
    if family == "bnb-4bit":
        return (*_bnb_4bit_path(sample, ops, configured), False)
    if family == "bnb-int8":
        return _bnb_int8_path(ops, device), "int8", False
    if family == "compressed-tensors":
        return _compressed_tensors_path(sample)
    if family == "auto-gptq":
        return f"auto_gptq.{type(sample).__module__.rsplit('.', 1)[-1]}.QuantLinear", "float16", False
    backend = (
        "awq_ext" if getattr(__import__("awq.modules.linear.gemm", fromlist=["awq_ext"]), "awq_ext", None) else "triton"
    )
    return f"autoawq.{type(sample).__name__}({backend})", "float16", False


def describe_loaded(model: Any, spec: VariantSpec, device: str, variant: VariantManifest | None = None) -> LoadInfo:
    """Probe the loaded model and report kernel path, compute dtype and resident weight bytes."""
    ops = probe_ops(model)
    found = list(_quantised_modules(model))
    classes = Counter(f"{type(m).__module__}.{type(m).__name__}" for _, m, _ in found)
    float_dtype = str(next(p.dtype for p in model.parameters() if p.is_floating_point())).replace("torch.", "")
    configured = (variant.compute_dtype if variant is not None else None) or float_dtype
    kernel, compute, decompressed = _kernel_and_compute(found, ops, device, configured, model, float_dtype)
    if spec.makes_checkpoint and not found:
        raise QuantiseError(f"variant.quant: {spec.name!r} loaded without any quantised layer; rebuild the checkpoint")
    quantised_bytes = _tensor_bytes(m for _, m, _ in found)
    return LoadInfo(
        kernel_path=kernel,
        compute_dtype=compute,
        weight_bytes_memory=weight_bytes_in_memory(model),
        decompressed_at_load=decompressed,
        extra={
            **ops,
            "quantised_modules": len(found),
            "quantised_module_classes": dict(classes),
            "quantised_weight_bytes_memory": quantised_bytes,
            "non_quantised_dtype": float_dtype,
            "weight_bytes_kind": "parameters+buffers+quantisation state after a probe forward",
        },
    )


def _module_tensors(module: Any) -> Iterator[Any]:
    """Parameters, buffers and bitsandbytes quantisation state held by a module (not its children)."""
    for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
        yield tensor
        state = getattr(tensor, "quant_state", None)
        while state is not None:
            for attr in ("absmax", "code", "offset"):
                value = getattr(state, attr, None)
                if value is not None and hasattr(value, "element_size"):
                    yield value
            state = getattr(state, "state2", None)
        scale = getattr(tensor, "SCB", None)
        if scale is not None:
            yield scale
    # bitsandbytes Linear8bitLt moves the int8 weight and its row scales into `state` on first use
    state = getattr(module, "state", None)
    for attr in ("CB", "SCB"):
        value = getattr(state, attr, None)
        if value is not None and hasattr(value, "element_size"):
            yield value


def _tensor_bytes(modules: Iterator[Any]) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for module in modules:
        for tensor in _module_tensors(module):
            if tensor.device.type == "meta":
                continue
            key = (tensor.data_ptr(), tensor.numel())
            if key in seen:
                continue
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def weight_bytes_in_memory(model: Any) -> int:
    """Bytes of every distinct weight tensor (and quantisation state) resident in the model."""
    return _tensor_bytes(model.modules())
