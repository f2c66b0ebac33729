"""Legacy checkpoints, for reproducing older artefacts: auto-gptq (archived) and autoawq
(deprecated), each in its own env (transformers < 5) and on CUDA only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..backends.loading import import_legacy
from ..variants import require
from .inputs import library_versions, load_tokenizer, read_model_type
from .llm_compressor import W4_GROUP_SIZE


def build_checkpoint(
    model_dir: Path, quant: str, windows: list[list[int]], out: Path, device: str, trust_remote_code: bool
) -> dict[str, Any]:
    """Quantise with auto-gptq (archived) or autoawq (deprecated) on CUDA into `out`."""
    if quant == "gptq-autogptq":
        return _autogptq_checkpoint(model_dir, windows, out, trust_remote_code)
    return _autoawq_checkpoint(model_dir, windows, out, trust_remote_code)


def _autogptq_checkpoint(
    model_dir: Path, windows: list[list[int]], out: Path, trust_remote_code: bool
) -> dict[str, Any]:
    import torch

    import_legacy("gptq-autogptq")
    from auto_gptq import AutoGPTQForCausalLM, BaseQuantizeConfig

    quantize_config = BaseQuantizeConfig(bits=4, group_size=W4_GROUP_SIZE, desc_act=False, sym=True)
    model = AutoGPTQForCausalLM.from_pretrained(
        str(model_dir),
        quantize_config,
        torch_dtype=torch.float16,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
    )
    examples = [
        {"input_ids": torch.tensor([w]), "attention_mask": torch.ones(1, len(w), dtype=torch.long)} for w in windows
    ]
    torch.manual_seed(0)
    model.quantize(examples, batch_size=1)
    model.save_quantized(str(out), use_safetensors=True)
    load_tokenizer(model_dir, trust_remote_code).save_pretrained(out)
    return {
        "library": "auto-gptq",
        "legacy": True,
        "libraries": library_versions(("auto-gptq", "transformers", "torch")),
        "calibration_device": "cuda",
        "quantize_config": {"bits": 4, "group_size": W4_GROUP_SIZE, "desc_act": False, "sym": True},
    }


def _autoawq_checkpoint(
    model_dir: Path, windows: list[list[int]], out: Path, trust_remote_code: bool
) -> dict[str, Any]:
    import_legacy("awq-autoawq")
    from awq import AutoAWQForCausalLM
    from awq.models.auto import AWQ_CAUSAL_LM_MODEL_MAP

    model_type = read_model_type(model_dir)
    require(
        model_type in AWQ_CAUSAL_LM_MODEL_MAP,
        f"quant: autoawq does not support model type {model_type!r}; supported: {', '.join(sorted(AWQ_CAUSAL_LM_MODEL_MAP))}",
    )
    tokenizer = load_tokenizer(model_dir, trust_remote_code)
    quant_config = {"zero_point": True, "q_group_size": W4_GROUP_SIZE, "w_bit": 4, "version": "GEMM"}
    model = AutoAWQForCausalLM.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code, safetensors=True)
    texts = [tokenizer.decode(w) for w in windows]
    model.quantize(
        tokenizer,
        quant_config=quant_config,
        calib_data=texts,
        max_calib_samples=len(windows),
        max_calib_seq_len=len(windows[0]),
    )
    model.save_quantized(str(out), safetensors=True)
    tokenizer.save_pretrained(out)
    return {
        "library": "autoawq",
        "legacy": True,
        "libraries": library_versions(("autoawq", "transformers", "torch")),
        "calibration_device": "cuda",
        "quant_config": quant_config,
    }
