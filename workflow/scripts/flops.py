"""Adapter of rule `flops`: annotate measured rows with analytical FLOPs, MFU and MBU."""

import json
from pathlib import Path

import pandas as pd

from llenergymeasure.adapter import run_rule
from llenergymeasure.flops import annotate
from llenergymeasure.io import write_parquet_atomic

snakemake = globals()["snakemake"]


def body() -> None:
    rows = pd.read_parquet(snakemake.input.rows)
    hf_config = json.loads((Path(snakemake.input.model) / "config.json").read_text())
    write_parquet_atomic(snakemake.output[0], annotate(rows, hf_config))


run_rule(snakemake, body)
