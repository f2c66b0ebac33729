"""Adapter of rule `merge_adapter`: the base model with one LoRA adapter merged in, as a checkpoint."""

from llenergymeasure.adapter import run_rule
from llenergymeasure.lora_build import build_merged

snakemake = globals()["snakemake"]

run_rule(
    snakemake,
    lambda: build_merged(
        model_dir=snakemake.input.model, adapter_dir=snakemake.input.adapter, out_dir=snakemake.output[0]
    ),
)
