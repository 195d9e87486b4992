"""`nhl audit`: the provenance chain of a registered model version, with MLflow UI links.

Prints data protocol + content hash -> validation result -> training run -> metrics ->
promotion decision for the champion (default), another alias or a version number, each link
checked against the others (`nhl.registry.trail`). Exit 1 when a link is missing or disagrees.
Works on the project's sqlite store or the server in MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="show where a registered model came from (data -> validation -> run -> metrics -> promotion)",
        description="Print the audit trail of a registered model version: data protocol and hash, the validation "
        "result, the training run (with its MLflow UI address), its metrics and the promotion decision.",
    )
    parser.add_argument("--name", help="registered model name (default: the one nhl model with the alias)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--alias", default="champion", help="the version behind this alias (default: %(default)s)")
    which.add_argument("--version", type=int, help="this version number instead of an alias")
    parser.add_argument("--json", action="store_true", help="print the trail as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from nhl.registry.trail import audit_trail

    if args.version is not None and args.version < 1:
        raise ValueError(f"--version: expected a version number >= 1, got {args.version}")
    ref = str(args.version) if args.version is not None else args.alias
    trail = audit_trail(args.name, ref)
    if args.json:
        print(json.dumps({**asdict(trail), "complete": trail.complete}, indent=2))
    else:
        print(trail.render(), end="")
    return 0 if trail.complete else 1
