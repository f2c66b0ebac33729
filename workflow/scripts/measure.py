"""Adapter of rules `measure` and `measure_vllm`: every configured shape of one variant on one backend.

measure_vllm names vLLM's interpreter in `params.python`; the adapter then runs itself there
(`adapter.in_rule_interpreter`). The main guard matters there: a process vLLM spawns
re-imports this file as `__mp_main__`, and must not run the job again."""

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
            replicate=int(snakemake.wildcards.replicate),
            gpu_resource=int(getattr(snakemake.resources, "gpu", 0) or 0),
        ),
    )


if __name__ == "__main__":
    if "snakemake" in globals():
        in_rule_interpreter(globals()["snakemake"], main)
    else:
        main(command_line_job())
