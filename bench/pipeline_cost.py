"""Where `dvc repro` spends its wall time: start-up and imports, MLflow, data, compute, DVC.

Copies the project (dvc.yaml, params.yaml, pipelines/, nhl/) into a fresh temporary directory
with its own git, DVC and MLflow store, optionally shrinks the model matrix, and times one
`dvc repro` of every stage from scratch (what `make run` does after install). Every stage
process appends a timing record to `$NHL_TIMINGS` (nhl/timing.py): its start-up (process creation
to the stage's first line: the interpreter and top-level imports), then `imports` (the library
the stage loads), `tracking` (MLflow: import, store, runs, logging), `data` (loading splits and
model files), `compute` (training, encoding, metrics, the report's tables and figures), `outputs`
(writing files) and `other` (argument and params parsing). DVC's own bookkeeping (hashing, the
lock file, the run cache, starting stage shells) is the repro's wall time minus the stage
processes' lives. Prints the table and the compute share; appends it to reports/benchmarks.md.

    python bench/pipeline_cost.py                          # mnist5k, csq x 3 variants, 6 epochs (~5 min)
    python bench/pipeline_cost.py --full                   # the default params.yaml as is (18 models)
    python bench/pipeline_cost.py --dataset digits --epochs 1 --no-append   # a quick try (~2 min)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

PARTS = ["start-up + imports", "MLflow", "data", "compute", "outputs", "other"]
PHASE_PART = {
    "imports": "start-up + imports",
    "tracking": "MLflow",
    "data": "data",
    "compute": "compute",
    "outputs": "outputs",
    "other": "other",
}
DEFAULT_VARIANTS = "baseline-16,nhl-noA-noD,nhl-full"


def make_project(dest: Path, overrides: dict) -> Path:
    """A copy of the project at `dest` with params.yaml sections updated by `overrides`; git + DVC init."""
    dest.mkdir(parents=True)
    shutil.copy2(ROOT / "dvc.yaml", dest / "dvc.yaml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("pipelines", "nhl"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section] = {**params.get(section, {}), **values}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / ".gitignore").write_text("/mlruns.db\n/mlartifacts/\n__pycache__/\n")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=dest, check=True, env=dvc_env(dest, None))
    subprocess.run(
        [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
        cwd=dest,
        check=True,
        env=dvc_env(dest, None),
    )
    if (ROOT / ".dvc" / "plots").is_dir():  # the plot templates dvc.yaml names
        shutil.copytree(ROOT / ".dvc" / "plots", dest / ".dvc" / "plots", dirs_exist_ok=True)
    return dest


def dvc_env(project: Path, timings: Path | None) -> dict[str, str]:
    from nhl.orchestration import dvc_env as base_env

    extra = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlruns.db'}",
        "PYTHONPATH": str(project),
        "NHL_PIPELINE_RUN": "",
        "DVC_NO_ANALYTICS": "1",
    }
    if timings is not None:
        extra["NHL_TIMINGS"] = str(timings)
    return base_env(extra)


def stage_kind(stage: str) -> str:
    """`models@csq` -> `models` (`train@csq-nhl-full` -> `train` in projects from before the per-loss stage)."""
    return stage.split("@", 1)[0] or "?"


def table(records: list[dict], wall: float) -> tuple[list[list[str]], dict[str, float]]:
    """Rows per stage kind (seconds per part), a DVC row and a total row; and the totals per part."""
    by_kind: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    for rec in records:
        kind = stage_kind(rec["stage"])
        counts[kind] += 1
        parts = by_kind[kind]
        life = rec.get("life") or 0.0
        parts["life"] += life
        parts["start-up + imports"] += rec.get("startup") or 0.0
        for name, seconds in rec["phases"].items():
            parts[PHASE_PART.get(name, "other")] += seconds
        accounted = (rec.get("startup") or 0.0) + sum(rec["phases"].values())
        parts["other"] += max(life - accounted, 0.0)  # interpreter shutdown, untimed lines
    totals: dict[str, float] = defaultdict(float)
    rows = []
    order = ["fetch", "split", "validate", "features", "models", "train", "evaluate", "report"]
    for kind in sorted(by_kind, key=lambda k: (order.index(k) if k in order else len(order), k)):
        parts = by_kind[kind]
        for part in PARTS + ["life"]:
            totals[part] += parts[part]
        rows.append(
            [
                kind,
                str(counts[kind]),
                f"{parts['life']:.1f}",
                *(f"{parts[p]:.1f}" for p in PARTS),
                f"{100 * parts['compute'] / parts['life']:.0f}%" if parts["life"] else "—",
            ]
        )
    dvc = max(wall - totals["life"], 0.0)
    rows.append(["DVC bookkeeping", "", f"{dvc:.1f}", *("" for _ in PARTS), ""])
    rows.append(
        [
            "**whole repro**",
            str(len(records)),
            f"**{wall:.1f}**",
            *(f"{totals[p]:.1f}" for p in PARTS),
            f"**{100 * totals['compute'] / wall:.0f}%**",
        ]
    )
    totals["dvc"] = dvc
    return rows, totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the default params.yaml as is (ignores the options below)")
    parser.add_argument("--dataset", default="mnist5k", help="mnist5k (default) or digits (a quick try)")
    parser.add_argument("--losses", default="csq", help="comma-separated losses (default: %(default)s)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated variants (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help="train.epochs (default: params.yaml's)")
    parser.add_argument("--keep", type=Path, default=None, help="build the project here and keep it")
    parser.add_argument("--no-append", action="store_true", help="print only; do not touch reports/benchmarks.md")
    args = parser.parse_args(argv)

    overrides: dict = {}
    if not args.full:
        overrides["models"] = {"losses": args.losses.split(","), "variants": args.variants.split(",")}
        if args.dataset != "mnist5k":
            overrides["data"] = {
                "dataset": args.dataset,
                "protocol": args.dataset,
                "query": None,
                "train": None,
                "val": None,
                "train_in_database": None,
            }
        if args.epochs is not None:
            overrides["train"] = {"epochs": args.epochs}
    workdir = Path(tempfile.mkdtemp(prefix="nhl-pipeline-cost-"))
    project = args.keep or workdir / "project"
    try:
        make_project(project, overrides)
        timings = workdir / "timings.jsonl"
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", "-f"],
            cwd=project,
            env=dvc_env(project, timings),
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            print(
                f"pipeline_cost: dvc repro failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
                file=sys.stderr,
            )
            return 1
        records = [json.loads(line) for line in timings.read_text().splitlines() if line.strip()]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows, totals = table(records, wall)
    headers = ["stage", "processes", "wall s", *(f"{p} s" for p in PARTS), "compute share"]
    from _report import append_table, markdown_table

    print(markdown_table(headers, rows))
    print(
        f"compute share of the whole `dvc repro`: {100 * totals['compute'] / wall:.0f}% "
        f"({totals['compute']:.1f} s of {wall:.1f} s)"
    )
    config = (
        "the default params.yaml"
        if args.full
        else (
            f"{args.dataset}, losses {args.losses}, variants {args.variants}"
            + (f", {args.epochs} epochs" if args.epochs is not None else ", params.yaml's epochs")
        )
    )
    notes = (
        f"One `dvc repro -f` of every stage in a fresh copy of the project ({config}; its own git, DVC and "
        "MLflow sqlite store, so the store's creation is included). Seconds are summed over the stage's processes. "
        "`start-up + imports`: process creation to the stage's first line, plus the library imports it times; "
        "`MLflow`: importing mlflow, the store, runs and logging (models included); `compute`: training "
        "(with its per-epoch val evaluation), encoding and metrics, the report's tables and figures; "
        "`other`: argument parsing, params, interpreter exit. DVC bookkeeping = repro wall time minus the "
        "stage processes' lives."
    )
    if not args.no_append:
        append_table(
            "Pipeline cost: where `dvc repro` spends its time (bench/pipeline_cost.py)", headers, rows, notes=notes
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
