"""Search speed and recall on 1,000,000 codes of a trained nested model: exact flat vs funnel vs hash.

Data: the mnist5k images that are not in the manifest's query split are augmented (random
rotation +-15 deg, scale 0.9-1.1, shift +-2 px, Gaussian pixel noise sd 0.05) until there are
`--n-database` of them, and encoded with the trained nested model (default
models/csq/csq-nhl-full.pt, lengths 8..128). Queries: the manifest's held-out query images and
augmented copies of them (500 + 500 for mnist5k), so no query or any variant of it is in the
database. The encoded codes are cached as nhl codes files (`--cache-dir`), keyed by the model's
hash and the data settings, so a rerun only searches.

Methods (1,000 queries, k = 100):
- flat-<k>: exact FAISS `IndexBinaryFlat` on the k-bit prefix (flat-128 is the exact search);
- funnel: `nhl.index.FunnelIndex` (bucket table on the 16-bit prefix, then re-ranking on longer
  prefixes: 32, 64, 128 bits, or 64, 128, or 128 only), for several pool sizes;
- hash / multihash: FAISS `IndexBinaryHash` (buckets on the first b bits, `nflip` probes) and
  `IndexBinaryMultiHash`, which rank every candidate by its full 128-bit distance.

recall@100 is tie-aware against exact 128-bit search: a returned item counts as correct when its
128-bit distance is <= the exact top-100's 100th distance (so any valid tie-break scores 1.0).
Speed: queries per second of one batched `search` call over all queries; the median of `--repeats`
rounds, each timing every method once in turn (other jobs share the cores: interleaving spreads
their bursts over all methods).
Memory: FAISS indexes by their serialized size, the funnel by its arrays.

Run: python bench/search.py --sweep [--n-database 1000000] [--no-report]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import append_table, machine

from nhl.atomic import write_text
from nhl.codes import Codes, encode_batches, load_codes, save_codes
from nhl.index import FunnelIndex, HashIndex
from nhl.serving import resolve_model

ROOT = Path(__file__).resolve().parents[1]
K = 100
FLAT_LENGTHS = (16, 32, 64, 128)
# (stages, pools): pools are the candidates kept after each stage but the last; the first
# stage (a 16-bit bucket table) keeps whole Hamming shells of buckets until it has >= pools[0]
FUNNELS = (
    ((16, 32, 64, 128), (2000, 1000, 300)),
    ((16, 32, 64, 128), (10000, 3000, 1000)),
    ((16, 32, 64, 128), (30000, 10000, 2000)),
    ((16, 64, 128), (2000, 1000)),
    ((16, 64, 128), (5000, 2000)),
    ((16, 128), (2000,)),
    ((16, 128), (5000,)),
    ((16, 128), (20000,)),
)
HASH_SETTINGS = ({"b": 16, "nflip": 0}, {"b": 16, "nflip": 1}, {"b": 16, "nflip": 2})
MULTIHASH_SETTINGS = ({"nhash": 2, "b": 16, "nflip": 0},)


# --------------------------------------------------------------------------- data


def augment(images, generator):
    """Random affine (rotation, scale, shift) + Gaussian noise of a batch of [0, 1] images."""
    import torch
    import torch.nn.functional as F

    n = images.shape[0]
    u = torch.rand(n, 5, generator=generator)
    angle = (u[:, 0] * 2 - 1) * math.radians(15)
    scale = 0.9 + 0.2 * u[:, 1]
    shift = (u[:, 2:4] * 2 - 1) * (2 / (images.shape[-1] / 2))  # +-2 px in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out += 0.05 * torch.randn(out.shape, generator=generator)
    return out.clamp_(0, 1)


def augmented_batches(pixels: np.ndarray, n: int, batch_size: int, seed: int, progress: str = ""):
    """`n` augmented images cycling through `pixels` (uint8 [M, H, W]), batch by batch; each
    batch has its own seed, so the stream does not depend on how it is consumed."""
    import torch

    start_time, step = time.perf_counter(), max(1, 50_000 // batch_size)
    for b, start in enumerate(range(0, n, batch_size)):
        rows = np.arange(start, min(start + batch_size, n)) % len(pixels)
        x = torch.from_numpy(pixels[rows].astype(np.float32) / 255.0).unsqueeze(1)
        x = augment(x, torch.Generator().manual_seed(seed * 1_000_003 + b))
        yield x.contiguous(memory_format=torch.channels_last)
        if progress and (b + 1) % step == 0:
            done, elapsed = start + len(rows), time.perf_counter() - start_time
            print(
                f"  {progress}: {done:,}/{n:,} images, {done / elapsed:,.0f}/s, "
                f"eta {(n - done) * elapsed / done:,.0f} s",
                file=sys.stderr,
                flush=True,
            )


def split_pixels(raw: Path, manifest: Path) -> tuple[np.ndarray, np.ndarray]:
    """(database pool, query images) as uint8 arrays: the query split vs everything else."""
    from nhl.data.manifest import read_manifest, split_frame
    from nhl.data.raw import read_images

    frame, _ = read_manifest(manifest)
    images = np.asarray(read_images(raw))
    query_rows = split_frame(frame, "query")["row"].to_numpy()
    pool_rows = np.setdiff1d(np.arange(len(images)), query_rows)
    return images[pool_rows], images[query_rows]


def encode_data(args, model, info) -> tuple[Codes, Codes, float]:
    """Database and query codes, from the cache when it matches; returns encode images/s too."""
    import torch

    settings = {
        "n_database": args.n_database,
        "n_queries": args.n_queries,
        "seed": args.seed,
        "model_sha256": info["sha256"],
        "augment": "rot15-scale0.1-shift2-noise0.05",
    }
    db_path = args.cache_dir / "search-database.npz"
    q_path = args.cache_dir / "search-queries.npz"
    if db_path.is_file() and q_path.is_file():
        db, queries = load_codes(db_path), load_codes(q_path)
        if db.model.get("bench") == settings and queries.model.get("bench") == settings:
            print(
                f"codes from the cache {db_path} ({db.model['encode_images_per_second']:.0f} images/s when encoded)",
                flush=True,
            )
            return db, queries, db.model["encode_images_per_second"]
    pool, query_pixels = split_pixels(args.raw, args.manifest)
    model = model.to(memory_format=torch.channels_last)
    start = time.perf_counter()
    packed = encode_batches(model, augmented_batches(pool, args.n_database, args.batch_size, args.seed, "database"))
    seconds = time.perf_counter() - start
    rate = args.n_database / seconds
    print(f"encoded {args.n_database:,} database images in {seconds:.0f} s ({rate:.0f} images/s)", flush=True)
    meta = dict(info, bench=settings, encode_images_per_second=rate)
    db = Codes(packed, np.arange(len(packed)), info["lengths"][-1], meta)
    originals = torch.from_numpy(query_pixels.astype(np.float32) / 255.0).unsqueeze(1)
    extra = args.n_queries - len(originals)
    batches = [originals[: args.n_queries].contiguous(memory_format=torch.channels_last)]
    if extra > 0:
        batches += list(augmented_batches(query_pixels, extra, args.batch_size, args.seed + 1))
    q_packed = encode_batches(model, batches)
    queries = Codes(q_packed, np.arange(len(q_packed)), db.bits, meta)
    save_codes(db_path, db)
    save_codes(q_path, queries)
    return db, queries, rate


# --------------------------------------------------------------------------- measuring


def hamming(q_packed: np.ndarray, db_packed: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """128-bit (full) distances between each query and its returned ids (-1 -> large)."""
    rows = db_packed[np.clip(ids, 0, None)]  # [Q, k, bytes]
    xor = np.bitwise_xor(rows, q_packed[:, None, :])
    d = np.unpackbits(xor, axis=2).sum(axis=2).astype(np.int64)
    return np.where(ids >= 0, d, np.iinfo(np.int64).max)


def recall_at_k(q_packed, db_packed, ids, kth_distance) -> float:
    """Tie-aware recall: share of returned items within the exact k-th 128-bit distance."""
    correct = hamming(q_packed, db_packed, ids) <= kth_distance[:, None]
    return float(correct.sum(axis=1).mean() / ids.shape[1])


def time_round_robin(searches: list[tuple], repeats: int) -> list[tuple[np.ndarray, float]]:
    """(ids, queries per second) of each `(index, queries)`: the median over `repeats` rounds,
    each round timing every method once in turn, so a burst of load from other jobs hits all
    methods alike instead of one. One untimed warm-up call each (JIT, caches)."""
    for index, queries in searches:
        index.search(queries[:8], K)
    times: list[list[float]] = [[] for _ in searches]
    ids: list[np.ndarray] = [np.empty(0)] * len(searches)
    for _ in range(repeats):
        for n, (index, queries) in enumerate(searches):
            start = time.perf_counter()
            _, ids[n] = index.search(queries, K)
            times[n].append(time.perf_counter() - start)
    return [(ids[n], len(searches[n][1]) / statistics.median(times[n])) for n in range(len(searches))]


def faiss_mb(index: HashIndex) -> float:
    import faiss

    return len(faiss.serialize_index_binary(index._index)) / 1e6


def funnel_mb(index: FunnelIndex) -> float:
    return (index._words.nbytes + index._order.nbytes + index._offsets.nbytes) / 1e6


def run_methods(args, db: Codes, queries: Codes) -> tuple[list[dict], str]:
    codes, q_codes = db.codes(), queries.codes()
    exact = HashIndex(db.bits, "flat").add(codes)
    exact_d, _ = exact.search(q_codes, K)
    kth = exact_d[:, K - 1].astype(np.int64)
    ties = (
        f"exact 128-bit 100th distance per query: median {np.median(kth):.0f}, max {kth.max()}; "
        f"{np.mean(kth == 0):.0%} of the queries have >= 100 database codes identical to theirs"
    )
    print(ties, flush=True)
    built = []  # (method, bits, index, MB, params)
    for bits in FLAT_LENGTHS:
        index = exact if bits == db.bits else HashIndex(bits, "flat").add(codes[:, :bits])
        built.append((f"flat-{bits}", bits, index, faiss_mb(index), None))
    for stages, pools in FUNNELS:
        index = FunnelIndex(codes, stages, pools)
        built.append(("funnel", stages[-1], index, funnel_mb(index), {"stages": list(stages), "pools": list(pools)}))
    for kind, settings in [("hash", s) for s in HASH_SETTINGS] + [("multihash", s) for s in MULTIHASH_SETTINGS]:
        index = HashIndex(db.bits, kind, **settings).add(codes)
        built.append((kind, db.bits, index, faiss_mb(index), dict(settings)))
    timed = time_round_robin([(index, q_codes[:, :bits]) for _, bits, index, _, _ in built], args.repeats)
    rows = []
    for (method, bits, _, mb, params), (ids, qps) in zip(built, timed, strict=True):
        row = {
            "method": method,
            "bits": bits,
            "queries_per_second": round(qps, 1),
            "recall_at_100": round(recall_at_k(queries.packed, db.packed, ids, kth), 4),
            "index_mb": round(mb, 2),
        }
        if params:
            row["params"] = params
        rows.append(row)
        print(
            f"  {method:10s} {bits:4d} bits {json.dumps(params or {}):60s} {qps:9.1f} q/s  "
            f"recall@100 {row['recall_at_100']:.4f}  {mb:7.1f} MB",
            flush=True,
        )
    return rows, ties


def bucket_summary(db: Codes, bits: int = 16) -> str:
    """How the database fills the 2**bits buckets of its `bits`-bit prefixes."""
    keys = db.packed[:, 0].astype(np.int64) | (db.packed[:, 1].astype(np.int64) << 8)
    keys &= (1 << bits) - 1
    counts = np.sort(np.bincount(keys, minlength=1 << bits))[::-1]
    used = int(np.count_nonzero(counts))
    return (
        f"{bits}-bit prefixes fill {used:,} of {1 << bits:,} buckets; the 10 largest hold "
        f"{counts[:10].sum() / len(db):.1%} of the database (largest {counts[0]:,})"
    )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models/csq/csq-nhl-full.pt"), help="trained nested model")
    parser.add_argument("--raw", type=Path, default=ROOT / "data" / "raw" / "mnist5k", help="raw mnist5k directory")
    parser.add_argument("--manifest", type=Path, default=ROOT / "data" / "splits", help="split manifest directory")
    parser.add_argument("--n-database", type=int, default=1_000_000)
    parser.add_argument("--n-queries", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2, help="torch, FAISS and numba threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds over all methods (median)")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "data" / "bench", help="encoded codes cache")
    parser.add_argument("--json-out", type=Path, default=ROOT / "reports" / "benchmarks" / "search.json")
    parser.add_argument("--encode-only", action="store_true", help="encode (fill the cache) and stop")
    parser.add_argument("--no-report", action="store_true", help="print only")
    args = parser.parse_args(argv)

    import faiss
    import numba
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    host, load = machine(), os.getloadavg()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    model, info = resolve_model(args.model)
    if info["lengths"][-1] != 128 or not set(FLAT_LENGTHS) <= set(info["lengths"]):
        raise SystemExit(
            f"--model {args.model}: needs a nested model with lengths including {list(FLAT_LENGTHS)} "
            f"(the longest 128), got {info['lengths']}"
        )
    db, queries, rate = encode_data(args, model, info)
    if args.encode_only:
        return 0
    print(bucket_summary(db), flush=True)
    rows, ties = run_methods(args, db, queries)
    load_end = os.getloadavg()

    flat = next(r for r in rows if r["method"] == "flat-128")
    good = [r for r in rows if r["method"] == "funnel" and r["recall_at_100"] >= 0.95]
    best = max(good, key=lambda r: r["queries_per_second"], default=None)
    verdict = (
        f"best funnel at recall@100 >= 0.95: {best['queries_per_second'] / flat['queries_per_second']:.1f}x "
        f"the q/s of exact 128-bit flat (stages {best['params']['stages']}, pools {best['params']['pools']})"
        if best
        else "no funnel setting reached recall@100 >= 0.95"
    )
    print(verdict)
    record = {
        "rows": rows,
        "machine": host,
        "date": date,
        "load_average": [round(v, 2) for v in load],
        "load_average_end": [round(v, 2) for v in load_end],
        "n_database": len(db),
        "n_queries": len(queries),
        "k": K,
        "model": info["model_id"],
        "model_lengths": info["lengths"],
        "encode_images_per_second": round(rate, 1),
        "threads": args.threads,
        "command": "python " + " ".join(sys.argv),
    }
    table_rows = [
        [
            r["method"],
            r["bits"],
            json.dumps(r.get("params", "")).replace('"', "") or "",
            f"{r['queries_per_second']:,.0f}",
            f"{r['recall_at_100']:.4f}",
            f"{r['index_mb']:.1f}",
        ]
        for r in rows
    ]
    notes = (
        f"{len(db):,} database codes of `{info['model_id']}` (lengths {info['lengths']}) from augmented "
        f"mnist5k images (encoded at {rate:,.0f} images/s), {len(queries):,} held-out queries, k = {K}. "
        f"Threads: {args.threads} (torch, FAISS, numba). Load average {', '.join(f'{v:.1f}' for v in load)} "
        f"at the start, {', '.join(f'{v:.1f}' for v in load_end)} at the end (other jobs share the cores). "
        f"q/s: one batched search of all queries, median of {args.repeats} rounds that time every method in turn. "
        "recall@100 is tie-aware "
        f"against exact 128-bit search (an item counts when its 128-bit distance is <= the exact 100th). "
        f"{bucket_summary(db)}; {ties}. {verdict}."
    )
    if not args.no_report:
        write_text(args.json_out, json.dumps(record, indent=2) + "\n")
        path = append_table(
            "Search: exact flat vs nested funnel vs hash, 1M trained codes (bench/search.py)",
            ["method", "bits", "params", "queries/s", "recall@100", "index MB"],
            table_rows,
            notes=notes,
            machine_info=host,
        )
        print(f"appended to {path}; wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
