"""Training cost of one NHL model vs the separate fixed-length baselines, at equal epochs.

Trains, on the mnist5k split (the default `data/splits`, made by `dvc repro validate`), the five
CSQ baselines (8..128 bits) and the nested model plain (no A, no D), with A, with D, and full.
Every model runs in a fresh process (so peak memory is its own), for the same number of epochs
with early stopping off (patience = epochs). Reports training seconds (evaluation excluded),
seconds per epoch, peak RSS, and per-length val mAP of the selected checkpoint; appends the
table to reports/benchmarks.md.

    python bench/train_cost.py --epochs 5 --loss csq
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

LENGTHS = [8, 16, 32, 64, 128]


def train_one(args: tuple) -> dict:
    """Train one model in this (fresh) process and return its cost and val mAP."""
    loss, variant, epochs, manifest, width, seed = args
    import torch

    from nhl.data.dataset import load_split
    from nhl.experiment import build_train_config
    from nhl.training import train_model

    torch.set_num_threads(2)
    section = {
        "backbone": "smallcnn",
        "backbone_params": {"width": width},
        "lengths": LENGTHS,
        "epochs": epochs,
        "patience": epochs,
        "batch_size": 64,
        "lr": 1e-3,
        "seed": seed,
    }
    config = build_train_config(section, loss, variant)
    train_set, val_set = load_split(manifest, "train"), load_split(manifest, "val")
    import tempfile

    with tempfile.TemporaryDirectory() as workdir:
        result = train_model(config, train_set, val_set, train_set, workdir, progress=False)
    best = next(r for r in result.history if r["epoch"] == result.best_epoch)
    return {
        "variant": variant,
        "seconds": result.train_seconds,
        "epochs": result.epochs_run,
        "peak_mb": result.peak_memory_mb,
        "val_map": best["val_map"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", default="csq")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--width", type=int, default=32, help="smallcnn width (params.yaml default: 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="train every model this many times (same seed) and report the median seconds",
    )
    parser.add_argument("--manifest", type=Path, default=ROOT / "data" / "splits")
    parser.add_argument("--no-append", action="store_true", help="print only; do not touch reports/benchmarks.md")
    args = parser.parse_args(argv)
    if not (args.manifest / "manifest.csv").is_file():
        print(f"train_cost: {args.manifest} has no manifest.csv; run `dvc repro validate` first", file=sys.stderr)
        return 2

    variants = [f"baseline-{k}" for k in LENGTHS] + ["nhl-noA-noD", "nhl-A", "nhl-D", "nhl-full"]
    ctx = mp.get_context("spawn")
    results: dict[str, dict] = {}
    for repeat in range(args.repeats):  # interleaved rounds: a slow spell hits every model alike
        for variant in variants:
            with ctx.Pool(1) as pool:
                run = pool.apply(train_one, ((args.loss, variant, args.epochs, args.manifest, args.width, args.seed),))
            results.setdefault(variant, {**run, "all_seconds": []})["all_seconds"].append(run["seconds"])
            print(f"round {repeat + 1} {variant:>14}: {run['seconds']:7.1f} s", flush=True)
    for r in results.values():
        r["seconds"] = float(statistics.median(r["all_seconds"]))
    for variant in variants:
        r = results[variant]
        print(f"{variant:>14}: {r['seconds']:7.1f} s, {r['peak_mb']:6.0f} MiB, val mAP {r['val_map']}", flush=True)

    baseline_total = sum(results[f"baseline-{k}"]["seconds"] for k in LENGTHS)
    plain = results["nhl-noA-noD"]
    rows = []
    for variant in variants:
        r = results[variant]
        per_epoch = r["seconds"] / r["epochs"]
        maps = " / ".join(f"{r['val_map'][str(k)]:.3f}" if str(k) in r["val_map"] else "—" for k in LENGTHS)
        vs = f"{baseline_total / r['seconds']:.2f}x" if not variant.startswith("baseline") else ""
        overhead = (
            f"{100 * (per_epoch / (plain['seconds'] / plain['epochs']) - 1):+.0f}%" if variant.startswith("nhl") else ""
        )
        rows.append(
            [
                f"{args.loss}-{variant}",
                f"{r['seconds']:.1f}",
                f"{per_epoch:.2f}",
                vs,
                overhead,
                f"{r['peak_mb']:.0f}",
                maps,
            ]
        )
    baseline_row = ["5 baselines together", f"{baseline_total:.1f}", "", "1.00x", "", "", ""]
    headers = [
        "model",
        "train s",
        "s/epoch",
        "5 baselines / this",
        "per-epoch vs plain nested",
        "peak RSS MiB",
        "val mAP 8 / 16 / 32 / 64 / 128",
    ]
    notes = (
        f"mnist5k split (2,000 train, 200 val = queries, database = train), smallcnn width {args.width}, "
        f"batch 64, Adam 1e-3, {args.epochs} epochs each with early stopping off, seed {args.seed}; each model "
        f"in a fresh process, trained {args.repeats} times in interleaved rounds, median seconds shown "
        "(same seed: the val mAP is identical across rounds); train seconds exclude the per-epoch val evaluation. "
        "Peak RSS includes the "
        "interpreter and torch (about 1 GB), so memory ratios are dominated by that floor."
    )
    from _report import append_table, markdown_table

    print(markdown_table(headers, rows + [baseline_row]))
    if not args.no_append:
        append_table(
            f"Training cost: one NHL model vs five {args.loss.upper()} baselines (bench/train_cost.py)",
            headers,
            rows + [baseline_row],
            notes=notes,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
