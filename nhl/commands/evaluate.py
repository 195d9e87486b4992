"""`nhl evaluate --model M --manifest DIR [--out metrics.json]`: a model's retrieval metrics.

The same scoring as the `evaluate` stage (`nhl.evaluation.evaluate_file`): query vs database
split, every nested length from one encoding, the metrics record of architecture.md. Prints the
JSON, or writes it atomically to `--out` (and the precision-recall rows to `--pr-out`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nhl.cli import int_list


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on a manifest's query vs database splits",
        description="Encode the query and database splits with the model and compute mAP, P@100 and "
        "P@r<=2 for each of its lengths (the metrics/<loss>/<model_id>.json format).",
    )
    parser.add_argument("--model", required=True, help="trained model file (models/<loss>/<model_id>.pt)")
    parser.add_argument(
        "--manifest", type=Path, default=Path("data/splits"), help="split manifest directory (default: %(default)s)"
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="raw directory with images.npy, or the image root (default: as recorded in manifest.json)",
    )
    parser.add_argument("--topk", type=int, default=None, help="mAP@topk (default: the whole database)")
    parser.add_argument(
        "--pr-lengths",
        type=int_list,
        default=(16, 64),
        help="lengths whose precision-recall rows are computed (default: 16,64)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the metrics JSON here (default: print it)")
    parser.add_argument("--pr-out", type=Path, default=None, help="write precision-recall rows here (CSV)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nhl import atomic
    from nhl.codes import resolve_model_path
    from nhl.evaluation import evaluate_file, pr_rows_csv

    if args.topk is not None and args.topk <= 0:
        raise ValueError(f"--topk: expected a positive integer, got {args.topk}")
    path = resolve_model_path(args.model)
    record, rows, _ = evaluate_file(path, args.manifest, topk=args.topk, pr_lengths=args.pr_lengths, source=args.images)
    text = json.dumps(record, indent=2) + "\n"
    if args.pr_out is not None:
        atomic.write_text(args.pr_out, pr_rows_csv(rows))
    if args.out is None:
        print(text, end="")
        return 0
    atomic.write_text(args.out, text)
    maps = ", ".join(f"{k}: {v['map']:.4f}" for k, v in record["bits"].items())
    print(f"evaluate: {record['model_id']}: mAP {maps} -> {args.out}")
    return 0
