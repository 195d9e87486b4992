"""Stage `models@<loss>`: train and evaluate every variant of one loss in one process.

Reads `train`, `losses.<loss>`, `models.variants` and `evaluate` from params.yaml. Writes, per
variant, `models/<loss>/<model_id>.pt` (one MLflow run each) with its fingerprint
`models/<loss>/<model_id>.json`, `metrics/<loss>/<model_id>.json`, `plots/pr/<loss>/<model_id>.csv`
and `plots/history/<loss>/<model_id>.json`. The outputs persist between runs (dvc.yaml): only
models whose settings, data or training code changed are retrained, only changed results are
re-evaluated, and models of variants no longer listed are removed (nhl/modelset.py). Prints what
it trained, kept, evaluated and removed.

    python pipelines/loss_models.py --loss csq --manifest data/splits --features data/features
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _params import read_section  # pipelines/ is sys.path[0] when a stage script runs

from nhl.orchestration import stage_error
from nhl.timing import phase

# The source files whose bytes enter the fingerprints (relative to the project root, the stage's
# working directory): the training path and the evaluation path. They are also the stage's deps in
# dvc.yaml (tests/pipeline/test_modelset.py checks that), so a change there reruns the stage and
# redoes exactly the models it affects.
TRAIN_CODE = (
    "nhl/experiment.py",
    "nhl/training.py",
    "nhl/variants.py",
    "nhl/resources.py",
    "nhl/weighting.py",
    "nhl/distill.py",
    "nhl/losses",
    "nhl/models",
    "nhl/metrics.py",
    "nhl/retrieval_inputs.py",
    "nhl/data/dataset.py",
    "nhl/data/manifest.py",
    "nhl/features.py",
    "nhl/images.py",
)
EVALUATE_CODE = (
    "nhl/evaluation.py",
    "nhl/metrics.py",
    "nhl/retrieval_inputs.py",
    "nhl/models",
    "nhl/data/dataset.py",
    "nhl/features.py",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("--loss", required=True, help="a registered loss, e.g. csq")
    parser.add_argument("--manifest", type=Path, default=Path("data/splits"), help="split manifest directory")
    parser.add_argument("--features", type=Path, default=None, help="cached features, for train.freeze_backbone")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="default: %(default)s")
    parser.add_argument("--metrics-dir", type=Path, default=Path("metrics"), help="default: %(default)s")
    parser.add_argument("--plots-dir", type=Path, default=Path("plots"), help="default: %(default)s")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with phase("imports"):
            from nhl.experiment import build_train_config
            from nhl.modelset import Outputs, build_loss

        section = read_section(args.params, "train")
        losses = read_section(args.params, "losses")
        variants = read_section(args.params, "models").get("variants")
        if not isinstance(variants, list) or not variants or not all(isinstance(v, str) for v in variants):
            raise ValueError(f"models.variants: expected a non-empty list of variant names, got {variants!r}")
        if len(set(variants)) != len(variants):
            raise ValueError(f"models.variants: lists a variant twice: {variants}")
        configs = {v: build_train_config(section, args.loss, v, losses.get(args.loss) or {}) for v in variants}
        evaluate = read_section(args.params, "evaluate")
        topk = evaluate.get("topk")
        if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk <= 0):
            raise ValueError(f"evaluate.topk: expected a positive integer or null (whole database), got {topk!r}")
        run = build_loss(
            args.loss,
            configs,
            args.manifest,
            Outputs(args.models_dir, args.metrics_dir, args.plots_dir),
            {"topk": topk, "pr_lengths": list(evaluate.get("pr_lengths", (16, 64)))},
            TRAIN_CODE,
            EVALUATE_CODE,
            features=args.features,
            track=not args.no_track,
            progress=sys.stderr.isatty(),
        )
    except (ValueError, OSError, FloatingPointError) as err:  # OSError: unreadable input, unwritable output
        print(stage_error("models", err), file=sys.stderr)
        return 2
    print(run.summary())
    return 0


if __name__ == "__main__":
    with phase("other"):
        sys.exit(main())
