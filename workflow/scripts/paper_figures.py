"""Adapter of rule `paper_figures`: analyses, figures and tables from paper/data/ alone."""

from llenergymeasure.adapter import run_rule
from llenergymeasure.analysis import ANALYSES, analyse_files, families_from_config
from llenergymeasure.paths import REPO_ROOT
from llenergymeasure.figures import FIGURES, draw_files, load_study
from llenergymeasure.tables import TABLES

snakemake = globals()["snakemake"]


def body() -> None:
    analysis_paths = {name: snakemake.output[name] for name in ANALYSES}
    analyse_files(
        measurements_path=snakemake.input.measurements,
        summary_path=snakemake.input.summary,
        outputs=analysis_paths,
        config_analysis=snakemake.params.analysis,
        architecture_paths=snakemake.params.architectures,
        families=families_from_config(snakemake.config["models"], REPO_ROOT),
        new_tokens=snakemake.params.new_tokens,
        fidelity_path=snakemake.input.get("fidelity") or None,
    )
    draw_files(
        load_study(
            snakemake.input.measurements, snakemake.input.summary, analysis_paths,
            use_estimated_energy=snakemake.params.analysis.get("use_estimated_energy", False),
        ),
        figure_outputs={n: (snakemake.output[f"{n}_pdf"], snakemake.output[f"{n}_png"]) for n in FIGURES},
        table_outputs={n: snakemake.output[f"table_{n}"] for n in TABLES},
        findings_markdown=snakemake.output.findings_md,
    )


run_rule(snakemake, body)
