"""Adapter of rule `analyse`: every analysis of a study's aggregate tables, one Parquet each."""

from llenergymeasure.adapter import run_rule
from llenergymeasure.analysis import ANALYSES, analyse_files, families_from_config
from llenergymeasure.paths import REPO_ROOT

snakemake = globals()["snakemake"]

run_rule(
    snakemake,
    lambda: analyse_files(
        measurements_path=snakemake.input.measurements,
        summary_path=snakemake.input.summary,
        outputs={name: snakemake.output[name] for name in ANALYSES},
        config_analysis=snakemake.params.analysis,
        architecture_paths=snakemake.input.architectures,
        families=families_from_config(snakemake.config["models"], REPO_ROOT),
        new_tokens=snakemake.params.new_tokens,
        fidelity_path=snakemake.input.fidelity or None,
    ),
)
