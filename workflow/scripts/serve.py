"""Adapter of rule `serve`: the serving scenario for one variant (run as a command in the vLLM
interpreter, see `adapter.command_line_job`; the main guard keeps spawned processes from re-running it)."""

import json

from llenergymeasure.adapter import command_line_job, run_rule
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
            server_log=snakemake.params.server_log,
        ),
    )


if __name__ == "__main__":
    main(globals().get("snakemake") or command_line_job())
