"""What every `workflow/scripts/<rule>.py` adapter shares: logging into the rule's log file."""

from __future__ import annotations

import logging
import sys
import traceback
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
