# llenergymeasure: what LLM inference really costs, per implementation choice.
#
#   snakemake --cores all                       the default study (config/config.yaml)
#   snakemake --cores all --configfile STUDY    another study (replaces the default entirely)
#   snakemake --cores 1 paper_figures           every paper figure from paper/data/, no GPU
#
# DAG: model -> quantise | gguf -> measure -> flops -> aggregate -> analyse -> figure, latex_tables
#      model -> adapter -> measure_adapter -> flops_adapter -> aggregate  (LoRA adapters)
#      model -> reference_logits; quantise | gguf -> fidelity -> fidelity_table -> analyse


import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))

from llenergymeasure.config import ConfigError, load_config
from llenergymeasure.config_file import read_config_file

# A --configfile on the command line replaces the embedded default rather than
# being merged into it, so a study never inherits the default's models. Snakemake
# parses a --configfile itself; the default is read here first, so that a file
# that is not UTF-8 or not YAML is one line with its path, line and column.
if not workflow.overwrite_configfiles:
    try:
        if Path("config/config.yaml").exists():
            read_config_file("config/config.yaml")
    except ConfigError as error:
        raise SystemExit(f"config error: {error}")

    configfile: "config/config.yaml"


try:
    config.update(load_config(dict(config)))
except ConfigError as error:
    raise SystemExit(f"config error: {error}")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/quantise.smk"
include: "workflow/rules/gguf.smk"
include: "workflow/rules/measure.smk"
include: "workflow/rules/flops.smk"
include: "workflow/rules/lora.smk"
include: "workflow/rules/fidelity.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/analyse.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/serve.smk"


# Cheap table and figure rules run on the submitting host, never as cluster jobs.
localrules:
    all,
    aggregate,
    fidelity_table,
    analyse,
    figure,
    latex_tables,
    figures,
    paper_figures,
    serving_figures,


rule all:
    default_target: True
    input:
        offline_outputs(),
        serving_figure_outputs(),
