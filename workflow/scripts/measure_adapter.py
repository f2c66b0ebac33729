"""Adapter of rule `measure_adapter`: every configured shape of one variant with one LoRA
adapter, unmerged then merged (the base rule's script stays untouched, so its jobs never re-run)."""

import json

from llenergymeasure.adapter import run_rule
from llenergymeasure.measure import run_job

snakemake = globals()["snakemake"]

run_rule(
    snakemake,
    lambda: run_job(
        config=json.loads(snakemake.params.settings),
        model=snakemake.wildcards.model,
        quant=snakemake.wildcards.quant,
        backend=snakemake.wildcards.backend,
        variant_path=snakemake.input.variant,
        output=snakemake.output.rows,
        env_output=snakemake.output.environment,
        adapter_dir=snakemake.input.adapter,
    ),
)
