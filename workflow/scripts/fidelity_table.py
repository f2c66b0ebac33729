"""Adapter of rule `fidelity_table`: every variant's fidelity record in one Parquet."""

from llenergymeasure.adapter import run_rule
from llenergymeasure.fidelity import write_table

snakemake = globals()["snakemake"]

run_rule(snakemake, lambda: write_table(list(snakemake.input), snakemake.output[0]))
