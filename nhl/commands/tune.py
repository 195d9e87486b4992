"""`nhl tune`: choose a loss's lr and main hyper-parameter on the val split, never the query set.

Trains one baseline per point of a small grid (train split), scores each on val against train,
and writes `reports/tuning/<loss>.md` with the table that chose the values. Copy the chosen
values into params.yaml `losses.<loss>` (training keys such as lr under `losses.<loss>.train`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="grid-search a loss's settings on the val split",
        description="Train baseline-BITS of LOSS at every point of the grid (train split) and score each on "
        "the val split; writes OUT/<loss>.md. The query split is never read.",
    )
    parser.add_argument("--loss", required=True, help="a registered loss")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="values to try; KEY is lr, epochs, patience, weight_decay, batch_size or a "
        "hyper-parameter of the loss (repeatable; default: lr at 1/3, 1 and 3 times train.lr)",
    )
    parser.add_argument("--bits", type=int, default=64, help="code length of the baselines (default: %(default)s)")
    parser.add_argument("--manifest", type=Path, default=Path("data/splits"), help="split manifest directory")
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file with `train` and `losses` sections (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/tuning"), help="where <loss>.md goes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from nhl import atomic
    from nhl.data.dataset import load_split
    from nhl.experiment import split_loss_settings
    from nhl.tuning import best_row, parse_grid, tune, tuning_markdown

    if not args.params.is_file():
        raise FileNotFoundError(f"params file {args.params} not found (pass --params)")
    params = yaml.safe_load(args.params.read_text()) or {}
    section = dict(params.get("train") or {})
    settings = (params.get("losses") or {}).get(args.loss) or {}
    grid = parse_grid(args.grid)
    if not grid:
        _, own = split_loss_settings(args.loss, settings)
        fallback: str | float = section.get("lr", 1e-3)  # YAML reads 1e-3 as a string, hence float() below
        lr = float(own.get("lr", fallback))
        grid = {"lr": [round(lr / 3, 8), lr, round(lr * 3, 8)]}
    if args.bits not in section.get("lengths", [args.bits]):
        section["lengths"] = sorted({*section.get("lengths", []), args.bits})
    train_set, val_set = load_split(args.manifest, "train"), load_split(args.manifest, "val")
    args.out.mkdir(parents=True, exist_ok=True)

    def progress(row) -> None:
        print(
            f"{args.loss} {row.point}: val mAP@{args.bits} {row.val_map:.4f} "
            f"(best epoch {row.best_epoch}/{row.epochs_run}, {row.seconds:.0f} s)",
            flush=True,
        )

    rows = tune(section, args.loss, settings, grid, args.bits, train_set, val_set, progress=progress)
    context = {
        key: section.get(key)
        for key in ("backbone", "backbone_params", "epochs", "batch_size", "lr", "patience", "seed")
    }
    context["losses." + args.loss] = settings
    command = "nhl " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "nhl tune"
    path = args.out / f"{args.loss}.md"
    atomic.write_text(path, tuning_markdown(args.loss, rows, args.bits, context, command))
    chosen = best_row(rows)
    print(f"chosen: {chosen.point} (val mAP@{args.bits} {chosen.val_map:.4f}) -> {path}")
    return 0
