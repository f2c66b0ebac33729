"""Adapter of rule `model`: materialise one model directory."""

from llenergymeasure.adapter import run_rule
from llenergymeasure.models import materialise

snakemake = globals()["snakemake"]

run_rule(
    snakemake,
    lambda: materialise(
        model=snakemake.wildcards.model,
        entry=snakemake.params.entry,
        out_dir=snakemake.output[0],
        seed=snakemake.params.seed,
        tokenizer_text=snakemake.input.tokenizer_text,
    ),
)
