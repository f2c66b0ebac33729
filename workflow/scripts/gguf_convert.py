"""Adapter of rule `gguf`: convert a model to GGUF f16, or quantise the f16 file."""

from pathlib import Path

from llenergymeasure.adapter import run_rule
from llenergymeasure.gguf import build_variant

snakemake = globals()["snakemake"]

run_rule(
    snakemake,
    lambda: build_variant(
        model=snakemake.wildcards.model,
        quant=snakemake.wildcards.quant,
        model_dir=snakemake.input.model,
        out_dir=Path(snakemake.output.variant).parent,
        f16_gguf=snakemake.input.f16 or None,
        evaluation=snakemake.params.evaluation,
        threads=snakemake.threads,
        log_file=snakemake.log[0],
    ),
)
