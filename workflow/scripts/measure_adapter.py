"""Adapter of rule `measure_adapter`: every configured shape of one variant with one LoRA
adapter, unmerged then merged (the base rule's script stays untouched, so its jobs never re-run).

On vllm the rule names vLLM's interpreter in `params.python` and the adapter runs itself there
(`adapter.in_rule_interpreter`), as measure.py does; the main guard keeps a process vLLM spawns
from running the job again."""

from llenergymeasure.adapter import job_arguments, run_rule, start
from llenergymeasure.measure import run_job


def main(snakemake):
    run_rule(
        snakemake,
        lambda: run_job(
            **job_arguments(snakemake),
            adapter_dir=snakemake.input.adapter,
            merged_dir=getattr(snakemake.input, "merged", None) or None,
        ),
    )


if __name__ == "__main__":
    start(globals(), main)
