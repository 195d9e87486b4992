"""The search scale curve: exact flat 128-bit vs the nested funnel, FAISS hash buckets and IVF over
100k, 1M and 10M codes of a trained nested model (run through `python bench/search.py`).

Data (say how, since 10M real encodings would take hours here): `--n-base` augmented mnist5k
images (bench/search_sweep.py's augmentation: rotation +-15 deg, scale 0.9-1.1, shift +-2 px,
noise sd 0.05; the query split left out) are encoded with the model once (cached). A database of
N codes is the base codes replicated N / n_base times, every copy but the first with each bit
flipped independently with probability `--flip-rate` (default 0.02: ~2.6 of 128 bits), so the
larger databases keep the trained codes' class clusters and bucket skew while holding no exact
duplicates beyond what the model itself produced. Queries: the 500 held-out query images and 500
augmented copies of them, never in the database.

Per size and method: build seconds, index memory (FAISS serialized size; the funnel's arrays),
queries per second (one batched search of all queries, median of `--repeats` rounds that time
every method in turn, so bursts of other jobs' load hit all methods alike) and tie-aware
recall@100 against exact 128-bit search. The headline is the fastest index at recall@100 >= 0.99
as a multiple of exact flat's q/s, measured in the same run.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

K = 100
RECALL_TARGET = 0.99


def replicate(base: np.ndarray, n: int, flip_rate: float, seed: int, chunk: int = 200_000) -> np.ndarray:
    """uint8 packed codes [n, bytes]: `base` repeated, each copy after the first with random bit flips."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.uint8)
    nbits = base.shape[1] * 8
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rows = np.arange(start, stop) % len(base)
        block = base[rows]
        noisy = np.arange(start, stop) >= len(base)  # the first copy is the real encodings
        if noisy.any():
            flips = rng.random((int(noisy.sum()), nbits), dtype=np.float32) < flip_rate
            block[noisy] ^= np.packbits(flips, axis=1, bitorder="little")
        out[start:stop] = block
    return out


def _faiss(kind: str, packed: np.ndarray, **params):
    from nhl.index import HashIndex

    index = HashIndex(packed.shape[1] * 8, kind, **params)
    raw = index._index  # add packed codes directly: 10M x 128 as ±1 int8 would be 1.3 GB
    if kind == "ivf":
        raw.cp.niter, raw.cp.max_points_per_centroid = 5, 32  # bounded k-means (a sample of 32/list)
        raw.train(packed)
    raw.add(packed)
    return index


def _funnel(packed: np.ndarray, stages, pools):
    from nhl.index import FunnelIndex

    index = FunnelIndex.__new__(FunnelIndex)  # from packed words, as FunnelIndex.load does
    index.stages, index.pools, index.max_radius = list(stages), list(pools), stages[0]
    index._words = np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False)
    index._build_table()
    return index


def _mb(index) -> float:
    import faiss

    if hasattr(index, "_words"):
        return (index._words.nbytes + index._order.nbytes + index._offsets.nbytes) / 1e6
    return len(faiss.serialize_index_binary(index._index)) / 1e6


def methods(n: int) -> list[tuple[str, dict, object]]:
    """(method, params, builder(packed) -> index) to try at database size n."""
    nlist = 1 << int(np.clip(round(np.log2(4 * np.sqrt(n))), 8, 11))  # ~4 sqrt(N), capped: 1024 / 2048 / 2048
    out = [
        ("hash", {"b": b, "nflip": f}, lambda p, b=b, f=f: _faiss("hash", p, b=b, nflip=f))
        for b, f in ((16, 1), (16, 2), (20, 2), (24, 2), (24, 3))
    ]
    out += [
        ("funnel", {"stages": [16, 128], "pools": [pool]}, lambda p, pool=pool: _funnel(p, (16, 128), (pool,)))
        for pool in (5000, 20000)
    ]
    out += [
        ("ivf", {"nlist": nlist, "nprobe": probe}, lambda p, probe=probe: _faiss("ivf", p, nlist=nlist, nprobe=probe))
        for probe in (16, 64)
    ]
    return out


def run_size(n: int, base: np.ndarray, q_packed: np.ndarray, args) -> list[dict]:
    """Every method at database size n: all built first, then timed in interleaved rounds."""
    from search_sweep import recall_at_k, time_round_robin

    q_codes = np.unpackbits(q_packed, axis=1, bitorder="little").astype(np.int8) * 2 - 1
    start = time.perf_counter()
    packed = replicate(base, n, args.flip_rate, args.seed + n)
    print(f"{n:,} codes ({n // len(base)}x {len(base):,} base) in {time.perf_counter() - start:.1f} s", flush=True)
    built = []  # (method, params, index, build seconds)
    for method, params, build_index in [("flat", {"bits": 128}, lambda p: _faiss("flat", p))] + methods(n):
        gc.collect()
        start = time.perf_counter()
        built.append((method, params, build_index(packed), time.perf_counter() - start))
    distances, _ = built[0][2].search(q_codes, K)
    kth = distances[:, K - 1].astype(np.int64)
    timed = time_round_robin([(index, q_codes) for _, _, index, _ in built], args.repeats)
    rows = []
    for (method, params, index, build), (ids, qps) in zip(built, timed, strict=True):
        row = {
            "n": n,
            "method": method,
            "params": params,
            "build_seconds": round(build, 2),
            "queries_per_second": round(qps, 1),
            "index_mb": round(_mb(index), 1),
            "recall_at_100": round(recall_at_k(q_packed, packed, ids, kth), 4),
        }
        rows.append(row)
        print(
            f"  {method:7s} {json.dumps(params):45s} build {build:6.1f} s  {qps:9.1f} q/s  "
            f"recall@100 {row['recall_at_100']:.4f}  {row['index_mb']:7.1f} MB",
            flush=True,
        )
    return rows


def best_rows(rows: list[dict]) -> dict[int, dict]:
    """Per size: the fastest method at recall@100 >= RECALL_TARGET (flat excluded), with its speed-up."""
    out = {}
    for n in sorted({r["n"] for r in rows}):
        flat = next(r for r in rows if r["n"] == n and r["method"] == "flat")
        good = [r for r in rows if r["n"] == n and r["method"] != "flat" and r["recall_at_100"] >= RECALL_TARGET]
        if good:
            best = max(good, key=lambda r: r["queries_per_second"])
            out[n] = dict(best, speedup=round(best["queries_per_second"] / flat["queries_per_second"], 1))
    return out


def plot(rows: list[dict], path: Path) -> None:
    """q/s vs database size: exact flat and, per family, its fastest setting at recall >= 0.99."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    sizes = sorted({r["n"] for r in rows})
    for method, style in (("flat", "k-o"), ("hash", "C0-s"), ("funnel", "C1-^"), ("ivf", "C2-D")):
        xs, ys = [], []
        for n in sizes:
            good = [
                r
                for r in rows
                if r["n"] == n and r["method"] == method and (method == "flat" or r["recall_at_100"] >= RECALL_TARGET)
            ]
            if good:
                xs.append(n)
                ys.append(max(r["queries_per_second"] for r in good))
        if xs:
            label = "exact flat 128-bit" if method == "flat" else f"{method} (best at recall@100 >= 0.99)"
            ax.plot(xs, ys, style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("database codes (128 bits)")
    ax.set_ylabel("queries per second (1,000 queries, k = 100)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import datetime as dt

    from _report import append_table, machine
    from search_sweep import ROOT, encode_data

    from nhl.atomic import write_text
    from nhl.serving import resolve_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models/csq/csq-nhl-full.pt"), help="trained nested model")
    parser.add_argument("--raw", type=Path, default=ROOT / "data" / "raw" / "mnist5k", help="raw mnist5k directory")
    parser.add_argument("--manifest", type=Path, default=ROOT / "data" / "splits", help="split manifest directory")
    parser.add_argument("--sizes", default="100000,1000000,10000000", help="database sizes (comma-separated)")
    parser.add_argument("--n-base", type=int, default=50_000, help="augmented images actually encoded")
    parser.add_argument("--flip-rate", type=float, default=0.02, help="bit-flip probability of replicated codes")
    parser.add_argument("--n-queries", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch, FAISS and numba threads (default 1: every method gets the same single core; "
        "on a loaded machine OpenMP's barriers slow multi-threaded FAISS far more than the rest)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed searches per method (median)")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "data" / "bench" / "scale", help="encoded codes cache")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks", help="search-scale.json/.png")
    parser.add_argument("--no-report", action="store_true", help="print only")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.replace(",", " ").split()]

    import faiss
    import numba
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    host, load = machine(), os.getloadavg()
    started, cpu_started = time.perf_counter(), time.process_time()
    model, info = resolve_model(args.model)
    if info["lengths"][-1] != 128 or 16 not in info["lengths"]:
        raise SystemExit(f"--model {args.model}: needs a nested model with 16 and 128 bits, got {info['lengths']}")
    args.n_database = args.n_base  # encode_data's settings
    base, queries, rate = encode_data(args, model, info)
    rows = []
    for n in sizes:
        rows += run_size(n, base.packed, queries.packed, args)
        gc.collect()
    best = best_rows(rows)
    load_end = os.getloadavg()
    minutes = (time.perf_counter() - started) / 60
    cpu_minutes = (time.process_time() - cpu_started) / 60
    verdicts = [
        f"{n:,}: {b['method']} {json.dumps(b['params'])} {b['speedup']}x exact flat at recall@100 "
        f"{b['recall_at_100']:.4f}"
        for n, b in best.items()
    ]
    print("\n".join(verdicts))
    if args.no_report:
        return 0
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    record = {
        "rows": rows,
        "best": {str(n): b for n, b in best.items()},
        "machine": host,
        "date": date,
        "load_average": [round(v, 2) for v in load],
        "load_average_end": [round(v, 2) for v in load_end],
        "n_base": args.n_base,
        "flip_rate": args.flip_rate,
        "n_queries": len(queries),
        "k": K,
        "model": info["model_id"],
        "encode_images_per_second": round(rate, 1),
        "threads": args.threads,
        "minutes": round(minutes, 1),
        "cpu_minutes": round(cpu_minutes, 1),
        "command": "python " + " ".join(sys.argv),
    }
    write_text(args.out / "search-scale.json", json.dumps(record, indent=2) + "\n")
    plot(rows, args.out / "search-scale.png")
    flat = {r["n"]: r["queries_per_second"] for r in rows if r["method"] == "flat"}
    table = [
        [
            f"{r['n']:,}",
            r["method"],
            json.dumps(r["params"]).replace('"', ""),
            f"{r['build_seconds']:.1f}",
            f"{r['index_mb']:.0f}",
            f"{r['queries_per_second']:,.0f}",
            f"{r['queries_per_second'] / flat[r['n']]:.1f}x",
            f"{r['recall_at_100']:.4f}",
        ]
        for r in rows
    ]
    notes = (
        f"Codes of `{info['model_id']}`: {args.n_base:,} augmented mnist5k images encoded ({rate:,.0f} images/s), "
        f"replicated to each size with independent bit flips (p = {args.flip_rate}) on every copy after the "
        f"first; {len(queries):,} held-out queries, k = {K}; {args.threads} threads. **Busy machine**: load "
        f"average {', '.join(f'{v:.1f}' for v in load)} at the start, {', '.join(f'{v:.1f}' for v in load_end)} "
        f"at the end (other engineers' jobs share the 2 cores); ratios within one size are the fair reading. "
        f"Whole run {minutes:.1f} min wall, {cpu_minutes:.1f} min CPU. Best at recall@100 >= {RECALL_TARGET}: "
        + "; ".join(verdicts)
        + ". Plot: `reports/benchmarks/search-scale.png`."
    )
    path = append_table(
        "Search scale curve: flat vs hash vs funnel vs IVF at 100k / 1M / 10M codes (bench/search.py)",
        ["codes", "method", "params", "build s", "MB", "queries/s", "vs flat", "recall@100"],
        table,
        notes=notes,
        machine_info=host,
    )
    print(f"appended to {path}; wrote {args.out / 'search-scale.json'} and search-scale.png")
    return 0
