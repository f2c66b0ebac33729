"""Adapter of rule `measure`: every configured shape of one variant on one backend.

Rule `measure_vllm` runs it as a command in the vLLM interpreter (see `adapter.command_line_job`).
The main guard matters there: a process vLLM spawns re-imports this file as `__mp_main__`, and
must not run the job again."""

import json

from llenergymeasure.adapter import command_line_job, run_rule
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
        ),
    )


if __name__ == "__main__":
    main(globals().get("snakemake") or command_line_job())
