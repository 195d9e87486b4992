"""`nhl train`: train one model (a loss and a variant) on a split manifest, with a progress bar.

Settings come from the `train` and `losses` sections of a params file (default params.yaml, as
the DVC stage uses), and any of them can be overridden on the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nhl.cli import int_list


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one baseline or NHL model",
        description="Train one model on MANIFEST's train split, selecting the checkpoint on its val split. "
        "VARIANT is baseline-<k> (one length) or nhl-noA-noD, nhl-A, nhl-D, nhl-full (every "
        "length of train.lengths, without/with adaptive weighting A and cascade distillation D).",
    )
    parser.add_argument("--loss", required=True, help="a registered loss (see `nhl train --list-losses`)")
    parser.add_argument("--variant", default="nhl-full", help="baseline-<k> or an NHL variant (default: %(default)s)")
    parser.add_argument("--manifest", type=Path, default=Path("data/splits"), help="split manifest directory")
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file with `train` and `losses` sections (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=Path("models"), help="model directory (default: %(default)s)")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--lengths", type=int_list, help="override train.lengths, e.g. 16,32,64")
    parser.add_argument("--backbone", help="override train.backbone")
    parser.add_argument("--seed", type=int, help="override train.seed")
    parser.add_argument("--device", help="override train.device (auto, cpu, cuda)")
    parser.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    parser.add_argument("--no-track", action="store_true", help="do not log the run to MLflow")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from nhl.experiment import build_train_config, train_from_manifest
    from nhl.layout import placed
    from nhl.variants import model_id

    if not args.params.is_file():
        raise FileNotFoundError(f"params file {args.params} not found (pass --params)")
    params = yaml.safe_load(args.params.read_text()) or {}
    section = dict(params.get("train") or {})
    overrides = {
        "epochs": args.epochs,
        "lengths": args.lengths,
        "backbone": args.backbone,
        "seed": args.seed,
        "device": args.device,
    }
    section.update({key: value for key, value in overrides.items() if value is not None})
    loss_params = (params.get("losses") or {}).get(args.loss) or {}
    config = build_train_config(section, args.loss, args.variant, loss_params)
    mid = model_id(args.loss, args.variant)
    path = placed(args.out, mid, ".pt")
    result = train_from_manifest(
        config,
        args.manifest,
        path,
        mid,
        workdir=args.out / "checkpoints" / mid,  # beside the loss folders, as the pipeline keeps them
        resume=args.resume,
        track=not args.no_track,
        progress=sys.stderr.isatty(),
    )
    print(
        f"{mid}: best epoch {result.best_epoch}/{result.epochs_run}, val mAP (mean over lengths) "
        f"{result.best_score:.4f}, {result.train_seconds:.1f} s training, peak {result.peak_memory_mb:.0f} MiB "
        f"-> {path}"
    )
    return 0
