"""Reading a study config file: UTF-8 text, YAML, a mapping at the top level.

A file that fails any of these is one `ConfigError` line naming the path and, for an encoding
or YAML error, the line and column where reading stopped (1-based, as editors count), never a
traceback. `llenergymeasure validate` reads every config through `read_config_file`; the
Snakefile calls it on the embedded default before Snakemake loads that file. A `--configfile`
is parsed by Snakemake itself before the Snakefile runs, so those errors are Snakemake's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError


def _line_column(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column of byte `offset` in `data`."""
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, column


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in `path`, or ConfigError: one line with the path, line and column."""
    import yaml

    shown = str(path)
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"configfile: {shown!r} does not exist")
    data = file.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _line_column(data, exc.start)
        raise ConfigError(
            f"configfile: {shown}:{line}:{column}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark is not None else shown
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context, opened = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and opened is not None and opened is not mark:
            context = f"{context} opened at line {opened.line + 1}, column {opened.column + 1}"
        detail = f"{context}: {problem}" if context else problem
        raise ConfigError(f"configfile: {where}: not valid YAML ({detail}); fix the syntax there") from None
    if not isinstance(raw, dict):
        raise ConfigError("configfile: the top level must be a mapping with models, workload and measurement")
    return raw
