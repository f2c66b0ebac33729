"""Adapter of rule `figure`: one registered figure (PDF, PNG) from the analyses it reads."""

from llenergymeasure.adapter import run_rule
from llenergymeasure.figures import load_study, render
from llenergymeasure.outputs import FIGURES

snakemake = globals()["snakemake"]
name = snakemake.wildcards.figure

run_rule(
    snakemake,
    lambda: render(
        name,
        load_study(
            snakemake.input.measurements,
            snakemake.input.summary,
            {analysis: snakemake.input[analysis] for analysis in FIGURES[name].reads},
            use_estimated_energy=snakemake.params.use_estimated_energy,
        ),
        snakemake.output.pdf,
        snakemake.output.png,
    ),
)
