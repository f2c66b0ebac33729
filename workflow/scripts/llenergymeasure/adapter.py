"""What every `workflow/scripts/<rule>.py` adapter shares: logging into the rule's log file.

An adapter runs as a Snakemake `script:`, which hands it a `snakemake` object. A rule whose
work needs another interpreter (vLLM jobs: `measure_vllm`, `serve`) passes it as
`params.python`; the adapter then runs itself there (`in_rule_interpreter`) as a command with
an argument list (never a shell line), its whole output going to the rule's log, and
`command_line_job` rebuilds the same object from the arguments on the other side.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any


def run_rule(snakemake: Any, body: Callable[[], None]) -> None:
    """Send library logging to the rule's `log:` file, run `body`, log any failure in full."""
    redirected = getattr(snakemake, "redirected", False)  # the launcher already sends our output there
    log_file = snakemake.log[0] if len(snakemake.log) and not redirected else None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", handlers=handlers, force=True
    )
    try:
        body()
    except BaseException:
        logging.getLogger("llenergymeasure").error("rule %s failed:\n%s", snakemake.rule, traceback.format_exc())
        raise


class NamedPaths(list):
    """A list of paths that also has them as attributes (like Snakemake's named lists)."""

    def __init__(self, pairs: list[tuple[str, str]]):
        super().__init__(value for _, value in pairs)
        for name, value in pairs:
            setattr(self, name, value)


def _pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise SystemExit(f"{option}: expected NAME=VALUE, got {value!r}")
        pairs.append((name, text))
    return pairs


OPTIONS = ("input", "output", "log", "params", "wildcards", "resources")


def command_line_job(argv: list[str] | None = None) -> SimpleNamespace:
    """A `snakemake`-like object from `--rule R --input k=v --output k=v --log k=v --params k=v --wildcards k=v --resources k=v`."""
    parser = argparse.ArgumentParser(description="run a rule's adapter outside Snakemake's script: directive")
    parser.add_argument("--rule", required=True)
    for option in OPTIONS:
        parser.add_argument(f"--{option}", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    job = SimpleNamespace(rule=args.rule, redirected=True)
    for option in OPTIONS:
        pairs = _pairs(getattr(args, option), f"--{option}")
        setattr(job, option, NamedPaths(pairs) if option == "log" else SimpleNamespace(**dict(pairs)))
    return job


def in_rule_interpreter(snakemake: Any, main: Callable[[Any], None]) -> None:
    """Run `main(snakemake)` here, or, when `params.python` names another interpreter, run the
    adapter `params.adapter` there with the job as arguments and its output in the rule's log."""
    python = getattr(snakemake.params, "python", "") or sys.executable
    if os.path.abspath(python) == os.path.abspath(sys.executable):  # not realpath: venvs share one binary
        main(snakemake)
        return
    command = [python, snakemake.params.adapter, "--rule", snakemake.rule]
    for option in OPTIONS:
        for name, value in getattr(snakemake, option).items():
            if option != "params" or name not in ("python", "adapter"):
                command += [f"--{option}", f"{name}={value}"]
    with open(snakemake.log[0], "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"rule {snakemake.rule} failed in {python} (exit {done.returncode}); see {snakemake.log[0]}")


def start(script_globals: dict[str, Any], main: Callable[[Any], None]) -> None:
    """The entry of an adapter that may run in another interpreter: under Snakemake's `script:`
    (a `snakemake` object in the script's globals) or relaunched as a command (`command_line_job`)."""
    if "snakemake" in script_globals:
        in_rule_interpreter(script_globals["snakemake"], main)
    else:
        main(command_line_job())


def job_arguments(snakemake: Any) -> dict[str, Any]:
    """What every job of one variant on one backend takes from its rule (measure, measure_vllm,
    measure_adapter, serve): the settings, the wildcards, the variant, the rows and the environment."""
    return {
        "config": json.loads(snakemake.params.settings),
        "model": snakemake.wildcards.model,
        "quant": snakemake.wildcards.quant,
        "backend": snakemake.wildcards.backend,
        "variant_path": snakemake.input.variant,
        "output": snakemake.output.rows,
        "env_output": snakemake.output.environment,
    }
