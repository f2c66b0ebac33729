"""Adapter of rule `quantise`: build one variant (manifest or checkpoint) and its variant.json."""

import os
from pathlib import Path

snakemake = globals()["snakemake"]

# A CPU study must not calibrate on a GPU that happens to be visible (llm-compressor uses
# any accelerator it finds): hide it before torch is imported.
if snakemake.params.settings["device"] == "cpu":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

from llenergymeasure.adapter import run_rule  # noqa: E402
from llenergymeasure.quantise import build_variant  # noqa: E402

run_rule(
    snakemake,
    lambda: build_variant(
        model_dir=snakemake.input.model,
        quant=snakemake.wildcards.quant,
        settings=snakemake.params.settings,
        out_dir=str(Path(snakemake.output[0]).parent),
    ),
)
