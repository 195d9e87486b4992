"""`nhl report`: write the baselines-vs-NHL comparison report from metrics files, by hand.

The DVC stage `report` (pipelines/report.py) does the same from params.yaml and also logs an
MLflow run; this command takes everything from its arguments and logs nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write the baselines-vs-NHL comparison report from metrics files",
        description="Read metrics/<loss>/<model_id>.json (and plots/pr, plots/history) and write "
        "comparison.md, comparison.json and figures/ to --out, plus the mAP-vs-bits CSV. "
        "Without --losses/--variants every metrics file found is used; with them, "
        "missing models show as a dash.",
    )
    parser.add_argument("--metrics-dir", type=Path, default=Path("metrics"), help="default: %(default)s")
    parser.add_argument(
        "--plots-dir", type=Path, default=Path("plots"), help="holds pr/ and history/ (default: %(default)s)"
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=Path("data/splits"),
        help="split manifest directory, quoted in the header (default: %(default)s)",
    )
    parser.add_argument(
        "--benchmark",
        type=Path,
        default=Path("reports/benchmarks/search.json"),
        help="search benchmark results, used when present (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=Path("reports"), help="default: %(default)s")
    parser.add_argument("--map-csv", type=Path, default=Path("plots/map_vs_bits.csv"), help="default: %(default)s")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="chooser: largest mAP loss accepted for a shorter code (default: %(default)s = 1 point)",
    )
    parser.add_argument("--losses", nargs="+", default=None, help="base losses to report (default: all found)")
    parser.add_argument(
        "--variants", nargs="+", default=None, help="variants to report, e.g. baseline-16 nhl-full (default: all found)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nhl.report import build_report, write_report

    if (args.losses is None) != (args.variants is None):
        raise ValueError("--losses and --variants go together (give both, or neither to use every file found)")
    report = build_report(
        args.metrics_dir,
        args.plots_dir,
        losses=args.losses,
        variants=args.variants,
        tolerance=args.tolerance,
        manifest=args.manifest,
        benchmark=args.benchmark,
    )
    paths = write_report(report, args.out, map_csv=args.map_csv)
    models = report.data["models"]
    present = sum(row["present"] for row in models.values())
    print(f"report: {present} of {len(models)} models -> {paths['markdown']}, {paths['json']}, {paths['figures']}/")
    for loss, entry in report.data["chooser"]["losses"].items():
        best = entry["best_variant"]
        if best is not None:
            curve = entry["curves"][best]
            print(
                f"  {loss}: {best} -> {curve['chosen_bits']} bits (mAP {curve['chosen_map']:.4f}, "
                f"best {curve['best_bits']} bits at {curve['best_map']:.4f})"
            )
    return 0
