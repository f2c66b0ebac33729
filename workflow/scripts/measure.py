"""Adapter of rules `measure` and `measure_vllm`: every configured shape of one variant on one backend.

measure_vllm names vLLM's interpreter in `params.python`; the adapter then runs itself there
(`adapter.in_rule_interpreter`). The main guard matters there: a process vLLM spawns
re-imports this file as `__mp_main__`, and must not run the job again."""

from llenergymeasure.adapter import job_arguments, run_rule, start
from llenergymeasure.measure import run_job


def main(snakemake):
    run_rule(
        snakemake,
        lambda: run_job(
            **job_arguments(snakemake),
            replicate=int(snakemake.wildcards.replicate),
            gpu_resource=int(getattr(snakemake.resources, "gpu", 0) or 0),
        ),
    )


if __name__ == "__main__":
    start(globals(), main)
