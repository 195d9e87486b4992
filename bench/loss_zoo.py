"""Every registered loss at its committed settings on mnist5k: baseline-64 vs nested, query-set mAP@ALL.

For each loss in `nhl.losses.list_losses()` trains `baseline-64` and one nested model (`nhl-noA-noD`
by default, every length of train.lengths) with the settings the pipeline would use: params.yaml's
`train` section with `losses.<loss>` on top (its hyper-parameters and its own `train` settings,
e.g. lr and epochs, which apply to both models alike). Each model's checkpoint is selected on val;
the table reports mAP@ALL of the query split against the database split at 64 bits. Appends the
table to reports/benchmarks.md.

    python bench/loss_zoo.py                 # committed settings, two models at a time
    python bench/loss_zoo.py --losses dhn    # only some losses (a table of those rows)
    python bench/loss_zoo.py --compose       # no training: one table of every loss from the newest rows
    python bench/loss_zoo.py --released      # the shared train settings and every loss's defaults
    python bench/loss_zoo.py --losses shrewd --seeds 0 1 2   # the spread over seeds (its own table)
    python bench/loss_zoo.py --losses dhn --lengths 32 64 128  # nested model without the short codes

Every model trains in a fresh process with one torch thread, so a table does not depend on how the
models were spread over the jobs; `--jobs 2` keeps both cores busy. (Until 2026-12-06 numba's first
val mAP raised each process to two threads after epoch 1, so two jobs competed for the cores and a
model's float results depended on what its process had computed before: SHREWD's baseline-64 moved
from 0.883 to 0.783 query mAP between a fresh and a reused process. `nhl.threads` fixed this.)

`--compose` takes each loss's row from the newest committed-settings table in reports/benchmarks.md
and appends one table of them all, with the date each row was measured; a row whose hyper-parameters,
lr or epochs are not the ones params.yaml commits now is refused (exit 2), so the composed table only
holds measurements at the committed settings.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

BITS = 64
TARGET = 0.85
TITLE = "Loss zoo on mnist5k at committed settings"


def train_and_score(
    manifest: str, section: dict, loss: str, variant: str, settings: dict, seed: int | None = None
) -> dict:
    """Train one model (one torch thread) and return its query mAP@ALL at BITS and its cost;
    `seed` replaces train.seed."""
    import tempfile

    import torch
    from torch.utils.data import DataLoader

    from nhl.data.dataset import load_split
    from nhl.experiment import build_train_config
    from nhl.metrics import mean_average_precision
    from nhl.models.hasher import encode_loader
    from nhl.training import train_model

    torch.set_num_threads(1)
    section = section if seed is None else {**section, "seed": seed}
    config = build_train_config(section, loss, variant, settings)
    train_set, val_set = load_split(manifest, "train"), load_split(manifest, "val")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        result = train_model(config, train_set, val_set, train_set, workdir, progress=False)
    query, database = load_split(manifest, "query"), load_split(manifest, "database")
    q, ql = encode_loader(result.model, DataLoader(query, batch_size=250))
    d, dl = encode_loader(result.model, DataLoader(database, batch_size=500))
    score = mean_average_precision(q[:, :BITS], ql, d[:, :BITS], dl)
    return {
        "map": score,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs_run,
        "lr": config.lr,
        "seconds": time.perf_counter() - start,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="the `train` and `losses` sections")
    parser.add_argument("--variant", default="nhl-noA-noD", help="the nested variant to compare")
    parser.add_argument("--manifest", type=Path, default=ROOT / "data" / "splits")
    parser.add_argument("--losses", nargs="*", help="default: every registered loss")
    parser.add_argument(
        "--released",
        action="store_true",
        help="ignore `losses`: every loss at its defaults with the shared train settings",
    )
    parser.add_argument(
        "--lengths",
        nargs="+",
        type=int,
        help="the nested model's lengths instead of train.lengths (must hold 64): which shorter codes cost the "
        "64-bit one; the table gets its own title",
    )
    parser.add_argument("--jobs", type=int, default=2, help="models trained at once (default: %(default)s)")
    parser.add_argument(
        "--seeds", nargs="+", type=int, help="train every model at each of these seeds: a table of the spread"
    )
    parser.add_argument(
        "--compose",
        action="store_true",
        help="train nothing: one table of every loss from the newest committed-settings rows in --report",
    )
    parser.add_argument(
        "--report", type=Path, default=ROOT / "reports" / "benchmarks.md", help="for --compose and --seeds"
    )
    return parser.parse_args(argv)


def hparams_text(settings: dict) -> str:
    """The table's hyper-parameters cell for a loss's settings (its `train` mapping left out)."""
    hparams = {k: v for k, v in settings.items() if k != "train"}
    return ", ".join(f"{k}={v}" for k, v in hparams.items()) or "defaults"


def newest_rows(text: str) -> dict[str, tuple[str, dict[str, str]]]:
    """{loss: (date, row)} from the newest committed-settings zoo table holding that loss."""
    rows: dict[str, tuple[str, dict[str, str]]] = {}
    for section in text.split("\n## ")[1:]:
        title, _, body = section.partition("\n")
        if not title.startswith(TITLE):
            continue
        date = re.search(r"^- date: (.+)$", body, re.MULTILINE)
        lines = [line.strip() for line in body.splitlines() if line.startswith("| ")]
        if len(lines) < 3:
            continue
        headers = [cell.strip() for cell in lines[0].strip("|").split("|")]
        for line in lines[2:]:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            row = dict(zip(headers, cells, strict=True))
            rows[row["loss"]] = (date.group(1) if date else "unknown", row)
    return rows


def committed_mismatch(row: dict[str, str], settings: dict, section: dict) -> str | None:
    """Why `row` was not measured at these settings, or None when it was.

    The epochs cell is the baseline's epochs run: the committed epochs, or fewer when early stopping
    ended it (then best epoch + patience)."""
    train = {**section, **(settings.get("train") or {})}
    if row["hyper-parameters"] != hparams_text(settings):
        return f"hyper-parameters {row['hyper-parameters']!r}, committed {hparams_text(settings)!r}"
    if float(row["lr"]) != float(train["lr"]):
        return f"lr {row['lr']}, committed {train['lr']}"
    run, best = int(row["epochs"]), int(row["best epoch (base / nested)"].split("/")[0])
    if run != int(train["epochs"]) and run != best + int(train["patience"]):
        return f"{run} epochs run (best {best}), committed {train['epochs']} with patience {train['patience']}"
    return None


def compose(args: argparse.Namespace, params: dict, losses: list[str]) -> int:
    """Append one table of every loss, each row from its newest committed-settings measurement."""
    from _report import append_table

    section = dict(params["train"])
    found = newest_rows(args.report.read_text(encoding="utf-8")) if args.report.is_file() else {}
    rows, dates = [], set()
    for loss in losses:
        settings = dict((params.get("losses") or {}).get(loss) or {})
        if loss not in found:
            print(
                f"loss_zoo: {args.report} has no row for {loss}; run bench/loss_zoo.py --losses {loss}", file=sys.stderr
            )
            return 2
        date, row = found[loss]
        why = committed_mismatch(row, settings, section)
        if why is not None:
            print(
                f"loss_zoo: the newest {loss} row ({date}) is not at the committed settings: {why}; "
                f"run bench/loss_zoo.py --losses {loss}",
                file=sys.stderr,
            )
            return 2
        dates.add(date)
        rows.append([*row.values(), date])
    headers = [*next(iter(found.values()))[1].keys(), "measured"]
    notes = (
        "Each row copied from the newest committed-settings table above that holds its loss (the "
        "`measured` column is that table's date; see its machine, command and notes), after checking it "
        "against params.yaml as committed now: hyper-parameters, lr, and epochs run (the committed "
        f"epochs, or best epoch + patience when early stopping ended the run). {len(dates)} runs."
    )
    append_table(
        f"Loss zoo on mnist5k, every loss at its committed settings (composed, {len(rows)} losses)",
        headers,
        rows,
        notes=notes,
        path=args.report,
    )
    return 0


def seed_table(args: argparse.Namespace, section: dict, losses: list[str], settings: dict, results: dict) -> int:
    """Append one table of baseline and nested mAP@BITS over `args.seeds`: mean, sample sd, paired gaps."""
    import statistics

    from _report import append_table, markdown_table

    def spread(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.3f} ± {sd:.3f}"

    rows = []
    for loss in losses:
        base = [results[(loss, f"baseline-{BITS}", seed)]["map"] for seed in args.seeds]
        nested = [results[(loss, args.variant, seed)]["map"] for seed in args.seeds]
        gaps = [n - b for b, n in zip(base, nested, strict=True)]
        rows.append(
            [
                loss,
                hparams_text(settings[loss]),
                " / ".join(f"{b:.3f}" for b in base),
                spread(base),
                " / ".join(f"{n:.3f}" for n in nested),
                spread(nested),
                spread(gaps),
                " / ".join(f"{results[(loss, f'baseline-{BITS}', seed)]['epochs']}" for seed in args.seeds),
            ]
        )
    seeds = ", ".join(str(seed) for seed in args.seeds)
    headers = [
        "loss",
        "hyper-parameters",
        f"baseline-{BITS} per seed",
        "baseline mean ± sd",
        f"{args.variant} @{BITS} per seed",
        "nested mean ± sd",
        "nested - baseline (paired) mean ± sd",
        "baseline epochs run",
    ]
    notes = (
        f"Query-set mAP@ALL at {BITS} bits of the checkpoint selected on val, for train.seed in {{{seeds}}} "
        f"(the seed fixes initialisation and batch order); mnist5k split, {section['backbone']} "
        f"{section.get('backbone_params')} from scratch, each loss at its committed settings, every model in "
        "a fresh process. sd is the sample standard deviation over seeds."
    )
    print(markdown_table(headers, rows))
    append_table(
        f"Loss zoo seed spread on mnist5k: baseline-{BITS} vs {args.variant}"
        + (f" (nested lengths {section['lengths']})" if args.lengths else "")
        + f", seeds {seeds} (bench/loss_zoo.py)",
        headers,
        rows,
        notes=notes,
        path=args.report,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.manifest / "manifest.csv").is_file():
        print(f"loss_zoo: {args.manifest} has no manifest.csv; run `dvc repro validate` first", file=sys.stderr)
        return 2

    import yaml

    from nhl.losses import list_losses

    params = yaml.safe_load(args.params.read_text())
    section = dict(params["train"])
    if args.lengths:
        section["lengths"] = sorted(set(args.lengths))
    if BITS not in section["lengths"]:
        print(f"loss_zoo: lengths {section['lengths']} lack {BITS}", file=sys.stderr)
        return 2
    losses = args.losses or list_losses()
    if args.compose:
        return compose(args, params, losses)
    settings = {loss: {} if args.released else dict((params.get("losses") or {}).get(loss) or {}) for loss in losses}
    seeds = args.seeds or [None]
    jobs = [
        (loss, variant, seed) for loss in losses for variant in (f"baseline-{BITS}", args.variant) for seed in seeds
    ]
    with ProcessPoolExecutor(max_workers=args.jobs, max_tasks_per_child=1) as pool:  # a fresh process per model
        futures = {
            job: pool.submit(train_and_score, str(args.manifest), section, job[0], job[1], settings[job[0]], job[2])
            for job in jobs
        }
        results = {}
        for job, future in futures.items():
            results[job] = future.result()
            print(job, {k: round(v, 4) if isinstance(v, float) else v for k, v in results[job].items()}, flush=True)
    if args.seeds:
        return seed_table(args, section, losses, settings, results)
    results = {(loss, variant): value for (loss, variant, _), value in results.items()}

    rows = []
    for loss in losses:
        base, nested = results[(loss, f"baseline-{BITS}")], results[(loss, args.variant)]
        rows.append(
            [
                loss,
                hparams_text(settings[loss]),
                f"{base['lr']:g}",
                str(base["epochs"]),
                f"{base['map']:.3f}",
                f"{nested['map']:.3f}",
                f"{nested['map'] - base['map']:+.3f}",
                f"{base['best_epoch']} / {nested['best_epoch']}",
                "yes" if base["map"] >= TARGET and nested["map"] >= base["map"] - 0.01 else "no",
            ]
        )

    from _report import append_table, markdown_table

    headers = [
        "loss",
        "hyper-parameters",
        "lr",
        "epochs",
        f"baseline-{BITS}",
        f"{args.variant} @{BITS}",
        "diff",
        "best epoch (base / nested)",
        f"base >= {TARGET} and nested within 1 point",
    ]
    which = (
        "every loss at its defaults with the shared `train` settings"
        if args.released
        else "each loss at its committed settings (params.yaml `train` with `losses.<loss>` on top)"
    )
    notes = (
        f"Query-set mAP@ALL at {BITS} bits (500 queries vs the 2,300-image database) of the checkpoint selected "
        f"on val; mnist5k split, {section['backbone']} {section.get('backbone_params')} from scratch, batch "
        f"{section['batch_size']}, centres {section.get('centers')}, seed {section.get('seed')}; {which}. One "
        "seed, so differences of a point or two are within noise."
    )
    title = f"Loss zoo on mnist5k at committed settings: baseline-{BITS} vs {args.variant} (bench/loss_zoo.py)"
    if args.released:
        title = title.replace("committed settings", "released defaults")
    if args.lengths:  # not a committed-settings table: --compose must not pick its rows
        title = title.replace("at committed settings", f"with nested lengths {section['lengths']}")
    print(markdown_table(headers, rows))
    append_table(title, headers, rows, notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
