"""Adapter of rule `reference_logits`: the float32 parent's log-probabilities, once per model."""

from llenergymeasure.adapter import run_rule
from llenergymeasure.fidelity import write_reference

snakemake = globals()["snakemake"]

run_rule(
    snakemake,
    lambda: write_reference(
        model_dir=snakemake.input.model,
        text=snakemake.input.evaluation_text,
        evaluation=snakemake.params.evaluation,
        out=snakemake.output[0],
    ),
)
