"""Adapter of rule `serve`: the serving scenario for one variant, in vLLM's interpreter
(`params.python`, see `adapter.in_rule_interpreter`; the main guard keeps processes vLLM
spawns from re-running the job)."""

from llenergymeasure.adapter import job_arguments, run_rule, start
from llenergymeasure.serving.job import run_serving_job


def main(snakemake):
    run_rule(
        snakemake,
        lambda: run_serving_job(
            **job_arguments(snakemake),
            requests_output=snakemake.output.requests,
            server_log=snakemake.log.server,
        ),
    )


if __name__ == "__main__":
    start(globals(), main)
