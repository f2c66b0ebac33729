"""Adapter of rule `figures`: every registered figure (PDF, PNG) and LaTeX table."""

from llenergymeasure.adapter import run_rule
from llenergymeasure.analysis import ANALYSES
from llenergymeasure.figures import FIGURES, draw_files, load_study
from llenergymeasure.tables import TABLES

snakemake = globals()["snakemake"]

run_rule(
    snakemake,
    lambda: draw_files(
        load_study(
            snakemake.input.measurements,
            snakemake.input.summary,
            {name: snakemake.input[name] for name in ANALYSES},
            use_estimated_energy=snakemake.params.use_estimated_energy,
        ),
        figure_outputs={n: (snakemake.output[f"{n}_pdf"], snakemake.output[f"{n}_png"]) for n in FIGURES},
        table_outputs={n: snakemake.output[f"table_{n}"] for n in TABLES},
        findings_markdown=snakemake.output.findings_md,
    ),
)
