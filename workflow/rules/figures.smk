# The study's figures and LaTeX tables (llenergymeasure/figures.py, tables.py), and the
# reviewers' rule that rebuilds all of them from the shipped results in paper/data/ alone.

from llenergymeasure.analysis import analysis_paths, shipped_analysis_config
from llenergymeasure.figures import all_figure_outputs, figure_paths

# Each PNG goes into `snakemake --report` with its caption (workflow/report/<name>.rst).
REPORTED_FIGURE_OUTPUTS = figure_paths("results")
for key, path in REPORTED_FIGURE_OUTPUTS.items():
    if key.endswith("_png"):
        caption = f"../report/{key.removesuffix('_png')}.rst"
        REPORTED_FIGURE_OUTPUTS[key] = report(path, caption=caption, category="Figures")


rule figures:
    """Every registered figure (PDF, PNG) and LaTeX table from the aggregate and analyses."""
    input:
        **analysis_paths("results/analysis"),
        measurements="results/aggregate/measurements.parquet",
        summary="results/aggregate/summary.parquet",
    output:
        **REPORTED_FIGURE_OUTPUTS,
    log:
        "logs/figures.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    params:
        use_estimated_energy=config["analysis"]["use_estimated_energy"],
    script:
        "../scripts/figures.py"


rule paper_figures:
    """Every figure, table and analysis from the shipped results alone: no model,
    quantise or measure job, no GPU. The analysis section comes from the shipped
    manifest (paper/data/manifest.json) when it has one."""
    input:
        measurements="paper/data/measurements.parquet",
        summary="paper/data/summary.parquet",
        # shipped with studies that scored fidelity (rule fidelity_table); older ones have none
        fidelity=lambda wc: (
            ["paper/data/fidelity.parquet"]
            if Path("paper/data/fidelity.parquet").exists()
            else []
        ),
    output:
        **figure_paths("results/paper_figures"),
        **analysis_paths("results/paper_figures/analysis"),
    log:
        "logs/paper_figures.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    params:
        analysis=shipped_analysis_config("paper/data/manifest.json", config["analysis"]),
        architectures=ARCHITECTURE_CONFIGS,
        new_tokens=config["workload"]["new_tokens"],
    script:
        "../scripts/paper_figures.py"
