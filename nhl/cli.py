"""The `nhl` command line: one subcommand per module in `nhl.commands`.

Each subcommand module exposes `register(subparsers)`, which adds its parser and sets
`func` to the function that runs it. Heavy libraries are imported inside those functions
so that `nhl --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nhl import __version__

# Subcommand modules, in the order `nhl --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "validate",
    "train",
    "tune",
    "evaluate",
    "encode",
    "search",
    "serve",
    "report",
    "promote",
    "audit",
    "run",
    "schedule",
    "ui",
)


def int_list(text: str) -> list[int]:
    """argparse type for "16,32,64" (commas or spaces): a list of integers, or a usage error."""
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="nhl",
        description="Multi-length deep supervised hashing with the Nested Hash Layer.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"nhl.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `nhl` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, OSError, FloatingPointError) as err:
        print(f"nhl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
