"""Adapter of rule `model`: materialise one model directory."""

import json

from llenergymeasure.adapter import run_rule
from llenergymeasure.models import materialise

snakemake = globals()["snakemake"]

run_rule(
    snakemake,
    lambda: materialise(
        model=snakemake.wildcards.model,
        entry=json.loads(snakemake.params.settings),
        out_dir=snakemake.output[0],
        seed=json.loads(snakemake.params.settings)["seed"],
        tokenizer_text=snakemake.input.tokenizer_text,
    ),
)
