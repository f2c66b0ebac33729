"""Adapter of rule `flops`: annotate one model's measured rows with verified FLOPs, MFU and MBU."""

import json
import logging
import time
from pathlib import Path

from llenergymeasure.adapter import run_rule
from llenergymeasure.aggregate import read_row_files
from llenergymeasure.flops import annotate
from llenergymeasure.io import write_arrow_atomic

snakemake = globals()["snakemake"]


def body() -> None:
    paths = list(snakemake.input.rows)
    # one frame for all of the model's jobs: each distinct shape is counted and traced once
    rows = read_row_files(paths).to_pandas()
    hf_config = json.loads((Path(snakemake.input.model) / "config.json").read_text())
    start = time.perf_counter()
    annotated = annotate(rows, hf_config)
    confidence = annotated["flops_confidence"].value_counts(dropna=False).to_dict()
    logging.getLogger("flops").info(
        "counted and traced %d rows of %d row files in %.2f s; flops_confidence %s",
        len(annotated),
        len(paths),
        time.perf_counter() - start,
        confidence,
    )
    write_arrow_atomic(snakemake.output[0], annotated)


run_rule(snakemake, body)
