"""mAP@ALL speed: nhl.metrics against the field's per-query loop, on class-structured codes.

The loop reference is written the way the field's evaluation code does it (DeepHash-pytorch's
CalcTopMap: per query, relevance by a label dot product, Hamming distance by a code dot product,
an argsort, then precision at each relevant rank), with two fixes: the sort is stable
(``kind="stable"``, so ties keep database order) and the whole database is ranked (no
``topk=-1`` slice that drops the last item). Both must agree to 1e-9.

Data: `classes` random ±1 class centres; every code is its class centre with each bit flipped
with probability `flip`; labels are one-hot classes. So mAP is meaningful and there are many ties.

Run: python bench/map_speed.py [--sizes 1000x54000x64,5000x100000x64] [--no-report]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import append_table, machine

from nhl import metrics


def make_data(nq: int, nd: int, bits: int, classes: int, flip: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.choice([-1.0, 1.0], size=(classes, bits)).astype(np.float32)

    def sample(n: int):
        y = rng.integers(0, classes, n)
        codes = centres[y] * np.where(rng.random((n, bits)) < flip, -1.0, 1.0).astype(np.float32)
        return codes, np.eye(classes, dtype=np.float32)[y]

    return (*sample(nq), *sample(nd))


def loop_map(q_codes, q_labels, db_codes, db_labels) -> float:
    """The per-query loop reference (stable sort, whole database)."""
    bits = q_codes.shape[1]
    total = 0.0
    for i in range(q_codes.shape[0]):
        gnd = (q_labels[i] @ db_labels.T > 0).astype(np.float32)
        hamm = 0.5 * (bits - q_codes[i] @ db_codes.T)
        gnd = gnd[np.argsort(hamm, kind="stable")]
        tsum = int(gnd.sum())
        if tsum == 0:
            continue
        count = np.linspace(1, tsum, tsum)
        tindex = np.flatnonzero(gnd == 1) + 1.0
        total += float(np.mean(count / tindex))
    return total / q_codes.shape[0]


def timed(fn, repeats: int) -> tuple[float, float]:
    """(result, median wall seconds over `repeats` calls)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000x54000x64,5000x100000x64", help="comma-separated QUERIESxDATABASExBITS")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--flip", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of ours (median)")
    parser.add_argument("--no-report", action="store_true", help="print only")
    args = parser.parse_args(argv)
    host = machine()

    tiny = make_data(4, 50, 8, 3, 0.2, 0)  # numba: compile or load the cache
    start = time.perf_counter()
    for ties in metrics.TIES:
        metrics.mean_average_precision(*tiny, ties=ties)
    warmup = time.perf_counter() - start

    rows = []
    for size in args.sizes.split(","):
        nq, nd, bits = (int(v) for v in size.lower().split("x"))
        data = make_data(nq, nd, bits, args.classes, args.flip, args.seed)
        ours, t_ours = timed(lambda data=data: metrics.mean_average_precision(*data), args.repeats)
        tie_aware, t_expected = timed(
            lambda data=data: metrics.mean_average_precision(*data, ties="expected"), args.repeats
        )
        ref, t_ref = timed(lambda data=data: loop_map(*data), 1)
        diff = abs(ours - ref)
        print(
            f"{nq} x {nd} x {bits}: mAP {ours:.6f} (loop {ref:.6f}, |diff| {diff:.1e}); "
            f"loop {t_ref:.2f} s, ours {t_ours:.3f} s ({t_ref / t_ours:.0f}x), "
            f"tie-aware {t_expected:.3f} s (mAP {tie_aware:.6f})",
            flush=True,
        )
        if diff > 1e-9:
            raise SystemExit(f"mismatch at {size}: ours {ours!r} vs loop {ref!r}")
        rows.append(
            [
                f"{nq:,} x {nd:,} x {bits}",
                f"{ours:.4f}",
                f"{diff:.0e}",
                f"{t_ref:.2f}",
                f"{t_ours:.3f}",
                f"{t_ref / t_ours:.0f}x",
                f"{t_expected:.3f}",
                f"{tie_aware:.4f}",
            ]
        )

    notes = (
        f"mAP@ALL, {args.classes} classes, bit-flip probability {args.flip}, "
        f"seed {args.seed}; "
        f"ours = `nhl.metrics.mean_average_precision` (numba, {numba.get_num_threads()} "
        f"threads; input checks and bit packing included; median of {args.repeats} calls "
        f"after a warm-up of {warmup:.1f} s that compiles or loads the numba cache); "
        "loop = per-query stable argsort, one call. `ties=expected` is the tie-aware mAP "
        "(mean over all orders of equal-distance items), a different number by design."
    )
    if not args.no_report:
        path = append_table(
            "mAP@ALL: nhl.metrics vs the per-query loop (bench/map_speed.py)",
            [
                "queries x database x bits",
                "mAP@ALL",
                "abs diff vs loop",
                "loop (s)",
                "ours (s)",
                "speed-up",
                "ours, ties=expected (s)",
                "tie-aware mAP",
            ],
            rows,
            notes=notes,
            machine_info=host,
        )
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
