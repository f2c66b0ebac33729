"""Adapter of rule `fidelity`: one variant's KL divergence and top-1 agreement with its parent."""

from llenergymeasure.adapter import run_rule
from llenergymeasure.fidelity import write_record

snakemake = globals()["snakemake"]

run_rule(
    snakemake,
    lambda: write_record(
        variant_path=snakemake.input.variant,
        parent_path=snakemake.input.parent,
        out=snakemake.output[0],
        threads=snakemake.threads,
    ),
)
