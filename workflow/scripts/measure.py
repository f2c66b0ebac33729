"""Adapter of rule `measure`: every configured shape of one variant on one backend."""

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
        replicate=int(snakemake.wildcards.replicate),
        gpu_resource=snakemake.resources.get("gpu", 0),
    ),
)
