"""Stage `evaluate`: score one trained model on the query vs database splits.

Writes `metrics/<loss>/<model_id>.json` (per-length mAP / P@100 / P@r<=2, training cost),
`plots/pr/<loss>/<model_id>.csv` (precision-recall of hash lookup per Hamming radius) and
`plots/history/<loss>/<model_id>.json` (per-epoch loss, val mAP, adaptive weights), all atomically,
and adds the final metrics to the model's MLflow run (attached, not reopened). `dvc repro` does
not run it: stage `models@<loss>` (pipelines/loss_models.py) evaluates every model of a loss in
one process, and the report stage adds every model's results to its MLflow run.

    python pipelines/evaluate.py --model models/csq/csq-nhl-full.pt --manifest data/splits
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _params import read_section  # pipelines/ is sys.path[0] when a stage script runs

from nhl.orchestration import stage_error
from nhl.timing import phase


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (`evaluate`)")
    parser.add_argument("--model", type=Path, required=True, help="a model file written by the train stage")
    parser.add_argument("--manifest", type=Path, default=Path("data/splits"), help="split manifest directory")
    parser.add_argument("--metrics-dir", type=Path, default=Path("metrics"), help="where <model_id>.json goes")
    parser.add_argument(
        "--plots-dir", type=Path, default=Path("plots"), help="where pr/<model_id>.csv and history/<model_id>.json go"
    )
    parser.add_argument(
        "--features",
        type=Path,
        default=None,
        help="cached features (the features stage's output), used for frozen-backbone models",
    )
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with phase("imports"):
            from nhl import atomic
            from nhl.evaluation import evaluate_file, pr_rows_csv
            from nhl.experiment import check_output_dir
            from nhl.layout import placed

        section = read_section(args.params, "evaluate")
        topk = section.get("topk")
        if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk <= 0):
            raise ValueError(f"evaluate.topk: expected a positive integer or null (whole database), got {topk!r}")
        pr_lengths = tuple(section.get("pr_lengths", (16, 64)))
        for option, folder in (("--metrics-dir", args.metrics_dir), ("--plots-dir", args.plots_dir)):
            check_output_dir(folder, option)  # before any work, so no file of the three is written alone
        record, rows, history = evaluate_file(
            args.model, args.manifest, topk=topk, pr_lengths=pr_lengths, features=args.features
        )
        model_id = record["model_id"]
        metrics_path = placed(args.metrics_dir, model_id, ".json")
        with phase("outputs"):
            atomic.write_text(placed(args.plots_dir / "pr", model_id, ".csv"), pr_rows_csv(rows))
            atomic.write_text(
                placed(args.plots_dir / "history", model_id, ".json"), json.dumps(history, indent=1) + "\n"
            )
            atomic.write_text(metrics_path, json.dumps(record, indent=2) + "\n")
        if not args.no_track and record.get("mlflow_run_id"):
            with phase("tracking"):
                from nhl.data.manifest import read_manifest
                from nhl.tracking.evaluations import log_evaluation

                log_evaluation(record, metrics_path, read_manifest(args.manifest)[1], args.manifest)
    except (ValueError, OSError) as err:  # OSError: unreadable input, unwritable output
        print(stage_error("evaluate", err), file=sys.stderr)
        return 2
    maps = ", ".join(f"{k}: {v['map']:.4f}" for k, v in record["bits"].items())
    print(f"evaluate: {model_id}: mAP {maps} -> {metrics_path}")
    return 0


if __name__ == "__main__":
    from nhl.timing import phase  # where the stage's time goes: bench/pipeline_cost.py

    with phase("other"):
        sys.exit(main())
