"""Adapter of rule `measure_adapter`: every configured shape of one variant with one LoRA
adapter, unmerged then merged (the base rule's script stays untouched, so its jobs never re-run).

On vllm the rule names vLLM's interpreter in `params.python` and the adapter runs itself there
(`adapter.in_rule_interpreter`), as measure.py does; the main guard keeps a process vLLM spawns
from running the job again."""

import json

from llenergymeasure.adapter import command_line_job, in_rule_interpreter, run_rule
from llenergymeasure.measure import run_job


def main(snakemake):
    run_rule(
        snakemake,
        lambda: run_job(
            config=json.loads(snakemake.params.settings),
            model=snakemake.wildcards.model,
            quant=snakemake.wildcards.quant,
            backend=snakemake.wildcards.backend,
            variant_path=snakemake.input.variant,
            output=snakemake.output.rows,
            env_output=snakemake.output.environment,
            adapter_dir=snakemake.input.adapter,
            merged_dir=getattr(snakemake.input, "merged", None) or None,
        ),
    )


if __name__ == "__main__":
    if "snakemake" in globals():
        in_rule_interpreter(globals()["snakemake"], main)
    else:
        main(command_line_job())
