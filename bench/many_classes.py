"""Many classes: mAP at 100,000 classes, prefix-consistent centres up to 100,000, a training step at 10,000.

Three parts (issue 22), each appended to reports/benchmarks.md as its own table:

- `map`: mAP@ALL, 1,000 queries x 1,000,000 database codes x 128 bits, with 100,000 single-label
  classes (labels as class ids) and with a multi-label set of 10,000 labels (CSR, 1-3 labels an
  item), against the same call with 10 classes (ids, and the dense one-hot form bench/load.py
  uses). Working memory is checked against bench/load.py's stated bound for 1M codes.
  Codes: each item's class centre (random +-1) with every bit flipped with probability 0.2;
  a multi-label item takes its first label's centre.
- `centres`: `prefix_consistent_centers` for 1,000 / 10,000 / 100,000 classes at lengths
  8-128: seconds, and per length the min / mean Hamming distance next to random balanced centres.
- `train`: one training epoch (CSQ, prefix centres, smallcnn width 8, 2,000 random 16x16 images,
  batch 64) with 10,000 classes against 10 classes, in one process, alternating, median of 3;
  the centre table is built once at construction and timed apart.

Run: python bench/many_classes.py [--parts map,centres,train] [--no-report]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import append_table, machine
from load import MIB, PeakRSS, bound

LENGTHS = [8, 16, 32, 64, 128]


# --------------------------------------------------------------------------- mAP


def _codes(rng: np.random.Generator, first_label: np.ndarray, centres: np.ndarray, flip: float = 0.2) -> np.ndarray:
    out = np.empty((len(first_label), centres.shape[1]), np.int8)
    for s in range(0, len(first_label), 100_000):
        e = min(len(first_label), s + 100_000)
        flips = np.where(rng.random((e - s, centres.shape[1]), dtype=np.float32) < flip, -1, 1).astype(np.int8)
        out[s:e] = centres[first_label[s:e]] * flips
    return out


def _multi_labels(rng: np.random.Generator, first: np.ndarray, classes: int):
    import scipy.sparse as sp

    n = len(first)
    extra = rng.integers(0, 3, n)  # 0-2 more labels: 1-3 in all
    rows = np.concatenate([np.arange(n), np.repeat(np.arange(n), extra)])
    cols = np.concatenate([first, rng.integers(0, classes, int(extra.sum()))])
    out = sp.csr_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, classes))
    out.data[:] = 1  # duplicates summed to 2: back to 1
    return out


def part_map(n: int, q: int, bits: int, seed: int) -> tuple[list, list, str]:
    from nhl.metrics import mean_average_precision

    limit = bound(n, q, bits)
    cases = []
    for name, classes, form in (
        ("10 classes, dense one-hot", 10, "dense"),
        ("10 classes, ids", 10, "ids"),
        ("100,000 classes, ids", 100_000, "ids"),
        ("10 labels, CSR multi-label", 10, "csr"),
        ("10,000 labels, CSR multi-label", 10_000, "csr"),
    ):
        cases.append((name, classes, form))
    rows, seconds = [], {}
    mean_average_precision(np.ones((2, bits)), np.array([0, 1]), np.ones((3, bits)), np.array([0, 1, 1]))  # compile
    for name, classes, form in cases:
        rng = np.random.default_rng(seed)
        centres = rng.choice(np.array([-1, 1], np.int8), size=(classes, bits))
        yd, yq = rng.integers(0, classes, n), rng.integers(0, classes, q)
        db, qc = _codes(rng, yd, centres), _codes(rng, yq, centres)
        if form == "ids":
            dl, ql = yd, yq
        elif form == "dense":
            dl, ql = np.eye(classes, dtype=np.int8)[yd], np.eye(classes, dtype=np.int8)[yq]
        else:
            dl, ql = _multi_labels(rng, yd, classes), _multi_labels(rng, yq, classes)
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            value = mean_average_precision(qc, ql, db, dl)
            seconds[name] = time.perf_counter() - t0
        work = rss.peak - rss.start
        rows.append(
            [
                name,
                f"{seconds[name]:.2f}",
                f"{value:.4f}",
                f"{work / MIB:,.0f}",
                f"{limit / MIB:,.0f}",
                "yes" if work <= limit else "**no**",
            ]
        )
        print(" | ".join(rows[-1]), flush=True)
        del db, qc, dl, ql
    for row, (name, _, form) in zip(rows, cases, strict=True):
        base = "10 classes, ids" if form != "csr" else "10 labels, CSR multi-label"
        row.insert(2, f"{seconds[name] / seconds[base]:.2f}x")
    headers = [
        "labels",
        "seconds",
        "vs 10 classes, same form",
        "mAP@ALL",
        "working memory (MiB)",
        "bound of bench/load.py (MiB)",
        "within bound",
    ]
    notes = (
        f"N = {n:,} database codes, Q = {q:,} queries, {bits} bits; codes = class centre with each bit flipped "
        "with probability 0.2 (a multi-label item takes its first label's centre); multi-label items have "
        "1-3 labels. One call each (input checks, packing and label preparation included), numba on 2 "
        "threads of a machine shared with other sessions (timings noisy; ratios taken within one run). "
        "Working memory = peak RSS during the call (VmHWM) minus RSS at its start; the bound is bench/load.py's "
        "3 N b + 32 N + 16 Q (b + 1) + 12 Q k bytes + 64 MiB. Ids: relevance is id equality; CSR: "
        "posting lists (label -> items), so no [Q, N] or [N, C] matrix is built."
    )
    return headers, rows, notes


# --------------------------------------------------------------------------- centres


def part_centres(counts: list[int], seed: int) -> tuple[list, list, str]:
    from nhl.losses.centers import prefix_consistent_centers
    from nhl.losses.centers_scalable import prefix_distance_report

    prefix_consistent_centers(200, [8, 16], seed=seed)  # compile the kernels
    rows = []
    for c in counts:
        t0 = time.perf_counter()
        table = prefix_consistent_centers(c, LENGTHS, seed=seed)
        seconds = time.perf_counter() - t0
        report = prefix_distance_report(table.numpy(), LENGTHS, seed=seed)
        cells = [f"{r['min']} / {r['random_min']}" for r in report]
        means = [f"{r['mean']:.2f} / {r['random_mean']:.2f}" for r in report]
        rows.append([f"{c:,}", f"{seconds:.1f}", *cells, " · ".join(means)])
        print(" | ".join(rows[-1]), flush=True)
    headers = [
        "classes",
        "seconds",
        *[f"min d @{k} (ours / random)" for k in LENGTHS],
        "mean d @8 · 16 · 32 · 64 · 128 (ours / random)",
    ]
    notes = (
        "`prefix_consistent_centers(C, [8, 16, 32, 64, 128], seed=0)` (the pipeline default "
        "`train.centers: prefix`; beyond 128 classes `nhl.losses.centers_scalable`); random = "
        "`random_balanced_centers(C, k, seed=0)` drawn at each length k. Distances measured exactly "
        "(all-pairs popcount scan; mean from column counts). Machine shared with other sessions: "
        "seconds are noisy upper bounds."
    )
    return headers, rows, notes


# --------------------------------------------------------------------------- training step


class _Synthetic:
    """2,000 random 1x16x16 images in `classes` classes, one-hot labels built per item."""

    def __init__(self, n: int, classes: int, seed: int) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.classes = classes
        self.y = torch.randint(0, classes, (n,), generator=g)
        self.images = torch.randn(n, 1, 16, 16, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        import torch

        label = torch.zeros(self.classes)
        label[self.y[i]] = 1
        return self.images[i], label, i


def part_train(seed: int, repeats: int = 3) -> tuple[list, list, str]:
    import torch

    from nhl.training import TrainConfig, Trainer

    torch.set_num_threads(2)
    trainers, build = {}, {}
    with tempfile.TemporaryDirectory() as work:
        for classes in (10, 10_000):
            config = TrainConfig(
                loss="csq",
                lengths=(16, 32, 64),
                centers="prefix",
                backbone="smallcnn",
                backbone_params={"width": 8},
                input_size=16,
                epochs=1,
                batch_size=64,
                seed=seed,
                device="cpu",
            )
            data = _Synthetic(2000, classes, seed)
            t0 = time.perf_counter()
            trainers[classes] = Trainer(
                config, data, _Synthetic(50, classes, seed + 1), data, f"{work}/{classes}", progress=False
            )
            build[classes] = time.perf_counter() - t0
        times: dict[int, list[float]] = {10: [], 10_000: []}
        for _ in range(repeats):
            for classes, trainer in trainers.items():
                t0 = time.perf_counter()
                trainer.train_epoch()
                times[classes].append(time.perf_counter() - t0)
    med = {c: statistics.median(v) for c, v in times.items()}
    rows = [
        [
            f"{c:,}",
            f"{build[c]:.1f}",
            f"{med[c]:.2f}",
            " / ".join(f"{t:.2f}" for t in times[c]),
            f"{med[c] / med[10]:.2f}x",
        ]
        for c in (10, 10_000)
    ]
    for row in rows:
        print(" | ".join(row), flush=True)
    headers = ["classes", "trainer build s (incl. prefix centres)", "epoch s (median)", "epochs s", "vs 10 classes"]
    notes = (
        "CSQ, lengths 16/32/64, `centers: prefix`, smallcnn width 8, 2,000 random 1x16x16 images, batch 64, "
        "CPU, 2 torch threads; the two trainers alternate epoch by epoch (median of 3) so a busy spell "
        "hits both. Machine shared with other sessions: timings noisy."
    )
    return headers, rows, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="map,centres,train")
    parser.add_argument("--database", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--bits", type=int, default=128)
    parser.add_argument("--centre-counts", default="1000,10000,100000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-report", action="store_true", help="print only; do not append to reports/benchmarks.md")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    titles = {
        "map": f"Many classes: mAP@ALL at 100,000 classes, {args.queries:,} x {args.database:,} x "
        f"{args.bits} bits (bench/many_classes.py)",
        "centres": "Many classes: prefix-consistent centres, 1k-100k classes (bench/many_classes.py)",
        "train": "Many classes: one training epoch, 10,000 vs 10 classes (bench/many_classes.py)",
    }
    for part in parts:
        info = machine()
        if part == "map":
            table = part_map(args.database, args.queries, args.bits, args.seed)
        elif part == "centres":
            table = part_centres([int(c) for c in args.centre_counts.split(",")], args.seed)
        elif part == "train":
            table = part_train(args.seed)
        else:
            print(f"many_classes: --parts: {part!r} unknown; known: map, centres, train", file=sys.stderr)
            return 2
        if not args.no_report:
            append_table(titles[part], *table[:2], notes=table[2], machine_info=info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
