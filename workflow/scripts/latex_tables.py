"""Adapter of rule `latex_tables`: every registered LaTeX table and the findings Markdown."""

from llenergymeasure.adapter import run_rule
from llenergymeasure.figures import draw_files, load_study
from llenergymeasure.outputs import TABLE_READS
from llenergymeasure.tables import TABLES

snakemake = globals()["snakemake"]

run_rule(
    snakemake,
    lambda: draw_files(
        load_study(
            snakemake.input.measurements,
            snakemake.input.summary,
            {name: snakemake.input[name] for name in TABLE_READS},
            use_estimated_energy=snakemake.params.use_estimated_energy,
        ),
        figure_outputs={},
        table_outputs={name: snakemake.output[f"table_{name}"] for name in TABLES},
        findings_markdown=snakemake.output.findings_md,
    ),
)
