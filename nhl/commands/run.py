"""`nhl run [DVC_REPRO_ARGS...]`: `dvc repro` with the project's environment.

Stage commands in dvc.yaml call `python`; this puts the running interpreter's bin directory
first on PATH so they use the same environment as `nhl`, and switches MLflow/DVC telemetry off.
"""

from __future__ import annotations

import argparse
import subprocess


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="reproduce the pipeline (dvc repro) with the project's interpreter",
        description="Run `dvc repro` in the current project with this interpreter's bin directory first on "
        "PATH (stage commands call `python`) and MLFLOW_DISABLE_TELEMETRY=true. Every argument "
        "goes to `dvc repro`, e.g. `nhl run --force models@csq`; `nhl run -h` shows its help.",
        # Options belong to `dvc repro`, not to us: with no `-` prefix of its own, this parser takes
        # `-f`, `--dry` and `-h` as plain arguments and hands them on.
        prefix_chars="+",
        add_help=False,
    )
    parser.add_argument("dvc_args", nargs="*", metavar="DVC_REPRO_ARGS", help="targets and options for `dvc repro`")
    parser.set_defaults(func=run)


def repro_command(dvc_args: list[str]) -> list[str]:
    """The `dvc repro` command line (a leading `--` separator is dropped)."""
    from nhl.orchestration import dvc_command

    args = list(dvc_args)
    if args and args[0] == "--":
        args = args[1:]
    return dvc_command("repro", *args)


def run(args: argparse.Namespace) -> int:
    from nhl.orchestration import dvc_env

    return subprocess.run(repro_command(args.dvc_args), env=dvc_env()).returncode
