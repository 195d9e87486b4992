"""Load: evaluation and search over 1,000,000 128-bit codes stay within a stated memory bound.

Evaluating Q queries against N database codes the direct way materialises a Q x N distance (and
ranking) matrix: 8 GB of int64 for 1,000 x 1,000,000, 80 GB for 10,000 queries, more than this
machine has. nhl never builds it: `nhl.metrics` keeps per-query statistics (a histogram over the
bits + 1 distances) and per-thread scratch rows of N entries; `nhl.index` packs codes in row
chunks, FAISS scans packed codes in query blocks, and the funnel re-ranks bounded candidate pools.

The bound checked for each step, on the resident memory (RSS) it adds above what the process
held when the step started ("working memory"), with N database codes of b bits, Q queries, T
threads, k results:

    working memory <= 3 * N * b bytes   (the largest phase: validating the +-1 int8 codes builds
                                         x == 1, x == -1 and their OR; the later phases (bit
                                         packing, transposed words, per-thread scratch rows of
                                         N entries, sort keys) each need less)
                    + 32 * N bytes      (what a step keeps meanwhile: packed words, ids, order)
                    + 16 * Q * (b + 1) + 12 * Q * k bytes   (per-query statistics, results)
                    + 64 MiB            (allocator and library slack)

i.e. O(codes size + N + Q * b), independent of Q * N. The peak is the kernel's high-water mark
of the process RSS (VmHWM, reset before each step), or psutil sampling where that is unavailable.

Data: `classes` random +-1 class centres; each code is its class centre with every bit flipped
with probability 0.2 (int8 +-1), one-hot int8 labels; queries are drawn the same way.

Run: python bench/load.py [--database 1000000] [--queries 1000] [--bits 128] [--no-report]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import append_table, machine

from nhl.index import FunnelIndex, HashIndex
from nhl.metrics import evaluate_nested, mean_average_precision

MIB = 2**20
K = 100
SLACK = 64 * MIB
GEN_CHUNK = 100_000
METHOD = ["VmHWM"]  # how the last step's peak was measured


class PeakRSS:
    """Peak resident memory of this process over a block (bytes).

    On Linux the kernel's own high-water mark: `VmHWM` in /proc/self/status, reset on entry by
    writing 5 to /proc/self/clear_refs, so nothing is missed (numba kernels hold the GIL, which
    would stall a sampling thread). Elsewhere psutil samples RSS every 5 ms in a thread.
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start = self.peak = 0
        self.method = "VmHWM"

    def _rss(self) -> int:
        return self._process.memory_info().rss

    @staticmethod
    def _hwm() -> int:
        with open("/proc/self/status", encoding="ascii") as fh:
            line = next(line for line in fh if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._rss()
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")  # reset the high-water mark to the current RSS
            self._hwm()
        except (OSError, StopIteration):
            self.method = "psutil sampling every 5 ms"
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is None:
            self.peak = max(self._hwm(), self._rss())
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def make_codes(
    n: int, bits: int, centres: np.ndarray, flip: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(+-1 int8 codes [n, bits], one-hot int8 labels [n, C]), generated in row chunks."""
    classes = len(centres)
    codes = np.empty((n, bits), np.int8)
    labels = np.zeros((n, classes), np.int8)
    for start in range(0, n, GEN_CHUNK):
        stop = min(n, start + GEN_CHUNK)
        y = rng.integers(0, classes, stop - start)
        flips = np.where(rng.random((stop - start, bits), dtype=np.float32) < flip, -1, 1).astype(np.int8)
        codes[start:stop] = centres[y] * flips
        labels[np.arange(start, stop), y] = 1
    return codes, labels


def bound(n: int, q: int, bits: int) -> int:
    """The stated working-memory bound in bytes (see the module docstring)."""
    return 3 * n * bits + 32 * n + 16 * q * (bits + 1) + 12 * q * K + SLACK


def measure(name: str, fn: Callable[[], Any], limit: int, rows: list, detail: Callable[[Any, float], str]) -> Any:
    """Run `fn` once under the RSS sampler; add a table row; return its result."""
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
    work = rss.peak - rss.start
    METHOD[0] = rss.method
    rows.append(
        [
            name,
            f"{seconds:.2f}",
            detail(result, seconds),
            f"{rss.peak / MIB:,.0f}",
            f"{work / MIB:,.0f}",
            f"{limit / MIB:,.0f}",
            "yes" if work <= limit else "**no**",
        ]
    )
    print(" | ".join(rows[-1]), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=int, default=1_000_000, help="database codes (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=1_000, help="query codes (default: %(default)s)")
    parser.add_argument("--bits", type=int, default=128, help="code length (default: %(default)s)")
    parser.add_argument("--lengths", default="16,32,64,128", help="nested lengths for evaluate_nested and the funnel")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-report", action="store_true", help="print only; do not append to reports/benchmarks.md")
    args = parser.parse_args(argv)
    n, q, bits = args.database, args.queries, args.bits
    lengths = [int(v) for v in args.lengths.split(",")]
    info = machine()  # load average at the start
    rng = np.random.default_rng(args.seed)
    centres = rng.choice(np.array([-1, 1], np.int8), size=(args.classes, bits))
    rows: list[list[str]] = []
    limit = bound(n, q, bits)

    with PeakRSS() as rss:
        db, db_labels = make_codes(n, bits, centres, 0.2, rng)
        qc, q_labels = make_codes(q, bits, centres, 0.2, rng)
    inputs = db.nbytes + db_labels.nbytes + qc.nbytes + q_labels.nbytes
    rows.append(
        [
            "inputs: generate codes and labels",
            "",
            f"{inputs / MIB:,.0f} MiB of arrays",
            f"{rss.peak / MIB:,.0f}",
            "",
            "",
            "",
        ]
    )

    measure(
        f"mean_average_precision, {bits} bits, mAP@ALL",
        lambda: mean_average_precision(qc, q_labels, db, db_labels),
        limit,
        rows,
        lambda v, s: f"mAP {v:.4f}",
    )
    measure(
        f"evaluate_nested, lengths {lengths}",
        lambda: evaluate_nested(qc, q_labels, db, db_labels, lengths),
        limit,
        rows,
        lambda v, s: "mAP " + ", ".join(f"{k}: {m['map']:.4f}" for k, m in v.items()),
    )
    flat = measure(
        "HashIndex flat: build",
        lambda: HashIndex(bits, "flat").add(db),
        limit,
        rows,
        lambda ix, s: f"{ix.ntotal:,} codes",
    )
    exact_distances, _ = measure(
        f"HashIndex flat: search k={K}",
        lambda ix=flat: ix.search(qc, K),
        limit,
        rows,
        lambda r, s: f"{q / s:,.0f} queries/s",
    )
    del flat
    from nhl.commands.search import funnel_pools  # the CLI's default pools

    stages = [k for k in lengths if k <= bits]
    pools = funnel_pools(len(stages) - 1, K)
    funnel = measure(
        f"FunnelIndex build, stages {stages}",
        lambda: FunnelIndex(db, stages, pools),
        limit,
        rows,
        lambda ix, s: f"pools {pools}",
    )
    distances, _ = measure(
        f"FunnelIndex search k={K}", lambda: funnel.search(qc, K), limit, rows, lambda r, s: f"{q / s:,.0f} queries/s"
    )
    # tie-aware recall@k: a result is right when it is no farther than the exact k-th neighbour
    recall = float(np.mean(distances <= exact_distances[:, K - 1 : K]))

    held = all(row[-1] in ("", "yes") for row in rows)
    naive = q * n * 8
    notes = (
        f"N = {n:,} database codes of {bits} bits (+-1 int8: {db.nbytes / MIB:,.0f} MiB), Q = {q:,} queries, "
        f"k = {K}, {args.classes} classes, bit-flip probability 0.2, seed {args.seed}; one process, steps run "
        f"one after another. Working memory = peak RSS during the step ({METHOD[0]}) minus RSS at its start. "
        f"Bound = 3 N b + 32 N + 16 Q (b + 1) + 12 Q k bytes + 64 MiB = {limit / MIB:,.0f} MiB "
        f"(see bench/load.py); a Q x N int64 distance matrix alone would be {naive / 2**30:,.1f} GiB. "
        f"The bound {'holds for every step' if held else 'is EXCEEDED by a step marked no'}. "
        f"Funnel recall@{K} (tie-aware: results no farther than the exact {K}th neighbour): {recall:.3f}; these "
        f"synthetic codes' short prefixes are no better than random bits, unlike a trained nested model's, so "
        f"see bench/search.py for the funnel's recall on real codes. "
        f"Load average at the end: "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} (1/5/15 min): other jobs share the 2 cores, so times "
        f"are upper bounds."
    )
    print(notes)
    if not args.no_report:
        path = append_table(
            f"Load: evaluation and search on {n:,} x {bits}-bit codes, {q:,} queries (bench/load.py)",
            ["step", "seconds", "result", "peak RSS (MiB)", "working memory (MiB)", "bound (MiB)", "within bound"],
            rows,
            notes=notes,
            machine_info=info,
        )
        print(f"appended to {path}")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
