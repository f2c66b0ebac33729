"""Adapter of rule `serve`: the serving scenario for one variant, in vLLM's interpreter
(`params.python`, see `adapter.in_rule_interpreter`; the main guard keeps processes vLLM
spawns from re-running the job)."""

import json

from llenergymeasure.adapter import command_line_job, in_rule_interpreter, run_rule
from llenergymeasure.serving.job import run_serving_job


def main(snakemake):
    run_rule(
        snakemake,
        lambda: run_serving_job(
            config=json.loads(snakemake.params.settings),
            model=snakemake.wildcards.model,
            quant=snakemake.wildcards.quant,
            backend=snakemake.wildcards.backend,
            variant_path=snakemake.input.variant,
            output=snakemake.output.rows,
            requests_output=snakemake.output.requests,
            env_output=snakemake.output.environment,
            server_log=snakemake.log.server,
        ),
    )


if __name__ == "__main__":
    if "snakemake" in globals():
        in_rule_interpreter(globals()["snakemake"], main)
    else:
        main(command_line_job())
