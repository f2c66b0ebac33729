"""Adapter of rule `flops`: annotate measured rows with verified FLOPs, MFU and MBU."""

import json
import logging
import time
from pathlib import Path

import pandas as pd

from llenergymeasure.adapter import run_rule
from llenergymeasure.flops import annotate
from llenergymeasure.io import write_arrow_atomic

snakemake = globals()["snakemake"]


def body() -> None:
    rows = pd.read_parquet(snakemake.input.rows)
    hf_config = json.loads((Path(snakemake.input.model) / "config.json").read_text())
    start = time.perf_counter()
    annotated = annotate(rows, hf_config)
    confidence = annotated["flops_confidence"].value_counts(dropna=False).to_dict()
    logging.getLogger("flops").info(
        "counted and traced %d rows in %.2f s; flops_confidence %s",
        len(annotated),
        time.perf_counter() - start,
        confidence,
    )
    write_arrow_atomic(snakemake.output[0], annotated)


run_rule(snakemake, body)
