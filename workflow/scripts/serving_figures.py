"""Adapter of rule `serving_figures`: latency and J/token against request rate."""

from llenergymeasure.adapter import run_rule
from llenergymeasure.serving.figures import FIGURES, draw, load_rows

snakemake = globals()["snakemake"]

run_rule(
    snakemake,
    lambda: draw(
        load_rows(snakemake.input.rows),
        {name: (snakemake.output[f"{name}_pdf"], snakemake.output[f"{name}_png"]) for name in FIGURES},
    ),
)
