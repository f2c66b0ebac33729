"""Adapter of rule `adapter`: build one LoRA adapter directory of one model."""

import json

from llenergymeasure.adapter import run_rule
from llenergymeasure.lora_build import build_adapter

snakemake = globals()["snakemake"]

run_rule(
    snakemake,
    lambda: build_adapter(
        model=snakemake.wildcards.model,
        adapter=snakemake.wildcards.adapter,
        settings=json.loads(snakemake.params.settings),
        model_dir=snakemake.input.model,
        out_dir=snakemake.output[0],
    ),
)
