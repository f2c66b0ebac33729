# Sweep expansion and helpers shared by every rule.

import json

from llenergymeasure.config import (
    canonical_json,
    expand_jobs,
    measurement_settings,
    model_build_settings,
    resolve_device,
)
from llenergymeasure.variants import BACKEND_NAMES, VARIANTS

DEVICE = resolve_device(config)
JOBS = list(expand_jobs(config))


def _alternation(names):
    return "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))


wildcard_constraints:
    model=_alternation(config["models"]),
    quant=_alternation(VARIANTS),
    backend=_alternation(BACKEND_NAMES),


def model_dir(wildcards):
    """The materialised model directory of a model."""
    return f"results/models/{wildcards.model}"


def variant_manifest(wildcards):
    """The variant.json of a (model, quant) pair, made by the quantise or gguf rule."""
    return f"results/variants/{wildcards.model}/{wildcards.quant}/variant.json"


def measured_rows():
    """Every job's FLOPs-annotated rows, the input of aggregate."""
    return [f"results/flops/{j.model}/{j.quant}/{j.backend}.parquet" for j in JOBS]


def backend_env(wildcards):
    """The pinned conda env of a measure job: its backend's, or a legacy variant's own stack."""
    spec = VARIANTS[wildcards.quant]
    if spec.legacy:
        return f"../../envs/{spec.env}.yaml"
    envs = {
        "pytorch": "pytorch",
        "pytorch-compiled": "pytorch",
        "llamacpp": "llamacpp",
        "vllm": "vllm",
    }
    return f"../../envs/{envs[wildcards.backend]}.yaml"


def variant_env(wildcards):
    """The pinned conda env of the rule that builds a variant."""
    return f"../../envs/{VARIANTS[wildcards.quant].env}.yaml"


def uses_gpu(wildcards=None):
    """1 when jobs run on a GPU, so profiles/default runs one GPU job at a time."""
    return 1 if DEVICE == "cuda" else 0


# --- variants: the quantise rule builds every variant but gguf-*, which the gguf rule makes


def _python_built_quants():
    """Variant names the quantise step builds (every catalogue entry but the llama.cpp gguf-* ones)."""
    names = [name for name in VARIANTS if not name.startswith("gguf-")]
    return "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))


def quantise_settings(wildcards):
    """What build_variant reads: the config's quantisation and evaluation sections and the device."""
    return {
        "quantisation": config["quantisation"],
        "evaluation": config["evaluation"],
        "device": DEVICE,
    }


def quantise_threads(wildcards):
    """Calibration uses every core; manifest-only variants load, score perplexity, and stop."""
    return workflow.cores if VARIANTS[wildcards.quant].makes_checkpoint else 1


def gguf_f16_source(wildcards):
    """gguf-q8_0 and gguf-q4_k_m are quantised from the model's gguf-f16 file (converted once)."""
    if wildcards.quant == "gguf-f16":
        return []
    return f"results/variants/{wildcards.model}/gguf-f16/model.gguf"


# --- LoRA adapters (llenergymeasure/lora.py): the adapter jobs of workflow/rules/lora.smk

from llenergymeasure.lora import (
    adapter_build_settings,
    adapter_names,
    adapter_workload,
    expand_adapter_jobs,
)

ADAPTER_JOBS = list(expand_adapter_jobs(config))


def adapter_rows():
    """Every adapter job's FLOPs-annotated rows (unmerged and merged), for aggregate."""
    return [
        f"results/flops/{j.model}/{j.quant}/{j.backend}/adapter-{j.adapter}.parquet"
        for j in ADAPTER_JOBS
    ]


def adapter_measurement_settings(wildcards):
    """measurement_settings with the adapter's batch sizes: all its rows depend on."""
    settings = measurement_settings(config, wildcards.backend)
    settings["workload"] = adapter_workload(config, wildcards.model, wildcards.adapter)
    return canonical_json(settings)
