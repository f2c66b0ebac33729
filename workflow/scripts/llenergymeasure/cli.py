"""The `llenergymeasure` command: subcommands registered by the modules that own them."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module listed here exposes `register_cli(subparsers)`, which adds its subcommand
# and sets `func` on the parser to a callable taking the parsed args and returning an exit code.
SUBCOMMAND_MODULES = ("config", "flops", "analyse_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llenergymeasure",
        description="Measure what LLM inference costs and annotate it with exact FLOPs.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"llenergymeasure.{name}")
        module.register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
