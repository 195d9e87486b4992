"""Stage `report`: compare the fixed-length baselines with the nested (NHL) models, per base loss.

Reads `metrics/<model_id>.json`, `plots/pr/` and `plots/history/` for every model of params.yaml
`models` (missing ones show as "—"), writes `reports/comparison.md`, `reports/comparison.json`,
`reports/figures/*.png` and `plots/map_vs_bits.csv`, and logs one MLflow run (tag
`nhl.kind=report`) carrying them as artifacts. The retrieval grids (`report.examples`) encode a
few seeded query items and the database with `models/<loss>-<variant>.pt`.

    python pipelines/report.py --params params.yaml --metrics-dir metrics --plots-dir plots --models-dir models
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from _params import read_section  # pipelines/ is sys.path[0] when a stage script runs

from nhl.orchestration import stage_error
from nhl.timing import phase

# params.yaml sections quoted in the report's header: what produced the numbers.
HEADER_SECTIONS = ("data", "train", "losses", "evaluate")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (`report`, `models`)")
    parser.add_argument("--metrics-dir", type=Path, default=Path("metrics"), help="the evaluate stage's metrics files")
    parser.add_argument("--plots-dir", type=Path, default=Path("plots"), help="holds pr/ and history/")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path("models"),
        help="trained models, for the retrieval examples (default: %(default)s)",
    )
    parser.add_argument(
        "--features",
        type=Path,
        default=None,
        help="cached features (the features stage's output): frozen-backbone models are encoded from them",
    )
    parser.add_argument("--manifest", type=Path, default=Path("data/splits"), help="split manifest directory (header)")
    parser.add_argument(
        "--benchmark",
        type=Path,
        default=Path("reports/benchmarks/search.json"),
        help="search benchmark results, used when present (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=Path("reports"), help="where comparison.md/.json and figures/ go")
    parser.add_argument(
        "--map-csv", type=Path, default=Path("plots/map_vs_bits.csv"), help="mAP-vs-bits CSV for dvc plots"
    )
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    return parser.parse_args(argv)


def headline_metrics(data: dict) -> dict[str, float]:
    """A few numbers worth finding in MLflow: speed-ups, mean mAP differences, chosen lengths."""
    metrics: dict[str, float] = {}
    for loss, section in data["losses"].items():
        for variant, row in section["cost"]["variants"].items():
            if row["speedup"] is not None:
                metrics[f"{loss}.{variant}.speedup"] = row["speedup"]
            diff = section["quality"]["map"]["mean_diff_points"][variant]
            if diff is not None:
                metrics[f"{loss}.{variant}.mean_map_diff_points"] = diff
        for name, curve in data["chooser"]["losses"][loss]["curves"].items():
            metrics[f"{loss}.{name}.chosen_bits"] = curve["chosen_bits"]
    return metrics


EXAMPLE_DEFAULTS = {"queries": 3, "topk": 10, "seed": 0, "variant": "nhl-full"}


def retrieval_examples(args: argparse.Namespace, section: dict, models: dict):
    """The retrieval grids' data (`report.examples`: queries, topk, seed, variant), or None when off."""
    from nhl.report.retrieval import collect_examples

    options = section.get("examples", {})
    if options is None or options is False:
        return None
    if not isinstance(options, dict) or set(options) - set(EXAMPLE_DEFAULTS):
        raise ValueError(
            f"{args.params}: report.examples: expected a mapping with keys {sorted(EXAMPLE_DEFAULTS)}, got {options!r}"
        )
    options = {**EXAMPLE_DEFAULTS, **options}
    for key in ("queries", "topk", "seed"):
        if isinstance(options[key], bool) or not isinstance(options[key], int):
            raise ValueError(f"{args.params}: report.examples.{key}: expected an integer, got {options[key]!r}")
    return collect_examples(
        args.models_dir,
        args.manifest,
        models["losses"],
        models["variants"],
        nested=options["variant"],
        queries=options["queries"],
        seed=options["seed"],
        topk=options["topk"],
        features=args.features,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with phase("imports"):
            from nhl.report import build_report, write_report

        section = read_section(args.params, "report")
        models = read_section(args.params, "models")
        for key in ("losses", "variants"):
            if not isinstance(models.get(key), list) or not models[key]:
                raise ValueError(f"{args.params}: models.{key}: expected a non-empty list")
        everything = yaml.safe_load(args.params.read_text()) or {}
        quoted = {name: everything[name] for name in HEADER_SECTIONS if isinstance(everything.get(name), dict)}
        if "losses" in quoted:  # only the losses this report covers
            quoted["losses"] = {k: v for k, v in quoted["losses"].items() if k in models["losses"]}
        with phase("compute"):
            examples = retrieval_examples(args, section, models)  # encodes the grids' queries and database
            report = build_report(
                args.metrics_dir,
                args.plots_dir,
                losses=models["losses"],
                variants=models["variants"],
                tolerance=section.get("tolerance", 0.01),
                manifest=args.manifest,
                benchmark=args.benchmark,
                params=quoted,
                examples=examples,
            )
        with phase("outputs"):
            paths = write_report(report, args.out, map_csv=args.map_csv)
        if not args.no_track:
            with phase("tracking"):
                from nhl.tracking import ModelRun

                with ModelRun(
                    "report", params={"report": section, "models": models}, tags={"nhl.kind": "report"}
                ) as run:
                    run.log_metrics(headline_metrics(report.data))
                    for key in ("markdown", "json", "map_csv", "figures"):  # figures: a directory, kept as figures/
                        run.log_artifact(paths[key])
                # the evaluate stages run with --no-track: their results join the training runs here
                from nhl.layout import metrics_file
                from nhl.tracking.evaluations import log_evaluations

                model_ids = [f"{loss}-{variant}" for loss in models["losses"] for variant in models["variants"]]
                log_evaluations([metrics_file(args.metrics_dir, m) for m in model_ids], args.manifest)
    except (ValueError, FileNotFoundError) as err:
        print(stage_error("report", err), file=sys.stderr)
        return 2
    missing = [m for m, row in report.data["models"].items() if not row["present"]]
    print(
        f"report: {len(report.data['models']) - len(missing)} of {len(report.data['models'])} models "
        f"-> {paths['markdown']}" + (f" (missing: {', '.join(missing)})" if missing else "")
    )
    return 0


if __name__ == "__main__":
    from nhl.timing import phase  # where the stage's time goes: bench/pipeline_cost.py

    with phase("other"):
        sys.exit(main())
