# The study's figures and LaTeX tables (llenergymeasure/figures, tables.py), one job per
# figure, under a root as for rule analyse: results/ for this run's study, and
# results/paper_figures/ for the shipped one in paper/data/ (rule paper_figures), which
# reviewers rebuild from the shipped tables alone. Names, paths, what each figure reads and
# its report category: llenergymeasure/outputs.py.

from llenergymeasure.outputs import (
    FIGURE_PATTERN,
    PAPER_ROOT,
    STUDY_ROOT,
    all_figure_outputs,
    caption,
    table_paths,
)


rule figure:
    """One registered figure, as PDF and PNG (the PNG in `snakemake --report`, under its family)."""
    input:
        unpack(figure_inputs),
    output:
        pdf="{root}/figures/{figure}.pdf",
        png=report(
            "{root}/figures/{figure}.png",
            caption="../report/figure.rst",
            category=figure_family,
        ),
    log:
        "logs/figure/{root}/{figure}.log",
    wildcard_constraints:
        root=ROOT_PATTERN,
        figure=FIGURE_PATTERN,
    conda:
        "../../envs/figures.yaml"
    threads: 1
    params:
        use_estimated_energy=uses_estimated_energy,
        caption=lambda wildcards: caption(wildcards.figure),
    script:
        "../scripts/figure.py"


rule latex_tables:
    """Every registered LaTeX table, and the findings table also as Markdown."""
    input:
        unpack(table_inputs),
    output:
        **table_paths("{root}"),
    log:
        "logs/latex_tables/{root}.log",
    wildcard_constraints:
        root=ROOT_PATTERN,
    conda:
        "../../envs/figures.yaml"
    threads: 1
    params:
        use_estimated_energy=uses_estimated_energy,
    script:
        "../scripts/latex_tables.py"


rule figures:
    """Every registered figure (PDF, PNG) and LaTeX table of this run's study."""
    input:
        all_figure_outputs(STUDY_ROOT),


rule paper_figures:
    """Every figure, table and analysis from the shipped results alone: no model,
    quantise or measure job, no GPU. The analysis section comes from the shipped
    manifest (paper/data/manifest.json) when it has one."""
    input:
        all_figure_outputs(PAPER_ROOT),
        all_analysis_outputs(PAPER_ROOT),
