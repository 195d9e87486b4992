"""Stage `train`: train one model (a loss and a variant) on the split manifest.

The `train` section of params.yaml gives the shared settings (backbone, lengths, epochs, ...),
`losses.<loss>` the loss's hyper-parameters. The variant is `baseline-<k>` or one of the nested
variants (`nhl-noA-noD`, `nhl-A`, `nhl-D`, `nhl-full`). Writes `<out>/<loss>/<loss>-<variant>.pt`
(nhl/layout.py).

    python pipelines/train.py --loss csq --variant nhl-full --manifest data/splits --out models
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from _params import read_section  # pipelines/ is sys.path[0] when a stage script runs

from nhl.orchestration import stage_error
from nhl.timing import phase


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (`train`, `losses`)")
    parser.add_argument("--loss", required=True, help="a registered loss, e.g. csq")
    parser.add_argument("--variant", required=True, help="baseline-<k>, nhl-noA-noD, nhl-A, nhl-D or nhl-full")
    parser.add_argument("--manifest", type=Path, default=Path("data/splits"), help="split manifest directory")
    parser.add_argument("--out", type=Path, default=Path("models"), help="model directory (default: %(default)s)")
    parser.add_argument(
        "--features",
        type=Path,
        default=None,
        help="cached features (the features stage's output), used with train.freeze_backbone",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with phase("imports"):
            from nhl.experiment import build_train_config, train_from_manifest
            from nhl.layout import placed
            from nhl.variants import model_id

        section = read_section(args.params, "train")
        losses = read_section(args.params, "losses")
        config = build_train_config(section, args.loss, args.variant, losses.get(args.loss) or {})
        mid = model_id(args.loss, args.variant)
        result = train_from_manifest(
            config,
            args.manifest,
            placed(args.out, mid, ".pt"),
            mid,
            workdir=args.out / "checkpoints" / mid,
            resume=args.resume,
            track=not args.no_track,
            progress=sys.stderr.isatty(),
            features=args.features if config.freeze_backbone else None,
        )
    except (ValueError, OSError, FloatingPointError) as err:  # OSError: unreadable input, unwritable output
        print(stage_error("train", err), file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") != "0":  # under torchrun every rank returns the same result; one line
        return 0
    print(
        f"train: {mid}: best epoch {result.best_epoch}/{result.epochs_run}, val mAP {result.best_score:.4f}, "
        f"{result.train_seconds:.1f} s, peak {result.peak_memory_mb:.0f} MiB -> {placed(args.out, mid, '.pt')}"
    )
    return 0


if __name__ == "__main__":
    from nhl.timing import phase  # where the stage's time goes: bench/pipeline_cost.py

    with phase("other"):
        sys.exit(main())
