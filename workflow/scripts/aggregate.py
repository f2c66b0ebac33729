"""Adapter of rule `aggregate`: the tidy per-trial table and the per-configuration summary."""

from llenergymeasure.adapter import run_rule
from llenergymeasure.aggregate import aggregate

snakemake = globals()["snakemake"]

run_rule(
    snakemake,
    lambda: aggregate(
        row_files=snakemake.input,
        measurements_out=snakemake.output.measurements,
        summary_out=snakemake.output.summary,
        extra_results=snakemake.params.extra_results,
        cv_threshold=snakemake.params.cv_threshold,
        threads=snakemake.threads,
    ),
)
