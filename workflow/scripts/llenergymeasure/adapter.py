"""What every `workflow/scripts/<rule>.py` adapter shares: logging into the rule's log file.

An adapter normally runs as a Snakemake `script:`, which hands it a `snakemake` object. A rule
that must run in another interpreter (vLLM jobs: see `measure_vllm`) calls the same adapter as a
command instead; `command_line_job` builds the same object from its arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from types import SimpleNamespace
from typing import Any, Callable


def run_rule(snakemake: Any, body: Callable[[], None]) -> None:
    """Send library logging to the rule's `log:` file, run `body`, log any failure in full."""
    log_file = snakemake.log[0] if len(snakemake.log) else None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)
    try:
        body()
    except BaseException:
        logging.getLogger("llenergymeasure").error("rule %s failed:\n%s", snakemake.rule, traceback.format_exc())
        raise


def _pairs(values: list[str], option: str) -> SimpleNamespace:
    fields = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise SystemExit(f"{option}: expected NAME=VALUE, got {value!r}")
        fields[name] = text
    return SimpleNamespace(**fields)


def command_line_job(argv: list[str] | None = None) -> SimpleNamespace:
    """A `snakemake`-like object from `--rule R --input k=v --output k=v --param k=v --wildcard k=v`.

    There is no `log` entry: the rule's shell command sends this process's whole output (the
    engine's own logging included) to its log file."""
    parser = argparse.ArgumentParser(description="run a rule's adapter outside Snakemake's script: directive")
    parser.add_argument("--rule", required=True)
    for option in ("input", "output", "param", "wildcard"):
        parser.add_argument(f"--{option}", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    return SimpleNamespace(
        rule=args.rule, log=[], input=_pairs(args.input, "--input"), output=_pairs(args.output, "--output"),
        params=_pairs(args.param, "--param"), wildcards=_pairs(args.wildcard, "--wildcard"),
    )
