"""Adapter of rule `flops_adapter`: the base model's FLOPs, MFU and MBU, plus the adapter's matmuls."""

import json
from pathlib import Path

import pandas as pd

from llenergymeasure.adapter import run_rule
from llenergymeasure.adapter_flops import add_adapter_flops
from llenergymeasure.flops import annotate
from llenergymeasure.io import write_arrow_atomic
from llenergymeasure.lora_build import read_manifest

snakemake = globals()["snakemake"]


def body() -> None:
    rows = pd.read_parquet(snakemake.input.rows)
    hf_config = json.loads((Path(snakemake.input.model) / "config.json").read_text())
    annotated = add_adapter_flops(annotate(rows, hf_config), read_manifest(snakemake.input.adapter))
    write_arrow_atomic(snakemake.output[0], annotated)


run_rule(snakemake, body)
