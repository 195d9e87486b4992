"""Load test of `nhl serve`: N concurrent clients on loopback for a bounded time, per code length.

The server is started as `nhl serve --codes FILE` on a synthetic database: the manifest's
database split encoded with the model (`--model`, default models/csq/csq-nhl-full.pt), then
replicated to `--n-database` codes (default 1,000,000), every copy after the first with each
bit flipped with probability `--flip-rate` (labels copied, so relevance still means something).
Clients are threads with keep-alive sessions sending `GET /search?item=<query item>&bits=&k=10`
for query items of the manifest (their codes are encoded once at start-up, so this measures
search + HTTP, not the CNN). Each length gets `--duration / len(lengths)` seconds of all
clients (at most 60 s in all). Reported per length: requests/s, client-side p50/p99 latency,
server-side search p50 (from the responses), errors (must be 0); and the server's RSS before
and after. The machine is shared: say so with the numbers (the load average is recorded).

    python bench/serve.py [--clients 8] [--duration 50] [--n-database 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(ROOT))


def synthetic_codes(args, out: Path) -> int:
    """Write the replicated database codes file; returns its size."""
    from search_scale import replicate
    from torch.utils.data import DataLoader

    from nhl.codes import Codes, encode_batches, save_codes
    from nhl.data.dataset import load_split
    from nhl.serving import resolve_model

    model, info = resolve_model(args.model)
    dataset = load_split(args.manifest, "database", channels=model.spec.in_channels)
    packed = encode_batches(model, (x for x, *_ in DataLoader(dataset, batch_size=512)))
    n = args.n_database
    big = replicate(packed, n, args.flip_rate, args.seed)
    labels = dataset.labels.numpy()[np.arange(n) % len(dataset)]
    save_codes(out, Codes(big, np.arange(n) + 10_000_000, info["lengths"][-1], info, labels=labels))
    return n


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def load_phase(url: str, items: list[int], bits: int, clients: int, seconds: float) -> dict:
    """All clients on one length for `seconds`: latencies (client side), server search times, errors."""
    import requests

    stop = time.monotonic() + seconds
    lat: list[list[float]] = [[] for _ in range(clients)]
    server: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    def client(c: int) -> None:
        rng = np.random.default_rng(c)
        with requests.Session() as session:
            while time.monotonic() < stop:
                item = int(items[rng.integers(len(items))])
                start = time.perf_counter()
                try:
                    got = session.get(f"{url}/search", params={"item": item, "bits": bits, "k": 10}, timeout=30)
                    ok = got.status_code == 200 and len(got.json()["results"]) == 10
                except requests.RequestException:
                    ok = False
                lat[c].append(time.perf_counter() - start)
                if ok:
                    server[c].append(got.json()["search_ms"])
                else:
                    errors[c] += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - begin
    all_lat = np.array([x for xs in lat for x in xs]) * 1000
    all_server = [x for xs in server for x in xs]
    return {
        "bits": bits,
        "requests": int(all_lat.size),
        "requests_per_second": round(all_lat.size / wall, 1),
        "p50_ms": round(float(np.percentile(all_lat, 50)), 2),
        "p99_ms": round(float(np.percentile(all_lat, 99)), 2),
        "server_search_p50_ms": round(statistics.median(all_server), 3) if all_server else None,
        "errors": int(sum(errors)),
    }


def main(argv: list[str] | None = None) -> int:
    import requests
    from _report import append_table, machine

    from nhl.atomic import write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models/csq/csq-nhl-full.pt"), help="trained nested model")
    parser.add_argument("--manifest", type=Path, default=ROOT / "data" / "splits", help="split manifest")
    parser.add_argument("--n-database", type=int, default=1_000_000, help="synthetic database size")
    parser.add_argument("--flip-rate", type=float, default=0.02, help="bit-flip probability of replicated codes")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=50.0, help="seconds of load in all (at most 60)")
    parser.add_argument("--lengths", default="8,16,32,64,128", help="code lengths to load, one phase each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "data" / "bench" / "serve")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks" / "serve.json")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 60:
        raise SystemExit(f"--duration: expected 0 < seconds <= 60, got {args.duration}")
    lengths = [int(b) for b in args.lengths.split(",")]
    host, load = machine(), os.getloadavg()

    codes = (
        args.cache_dir / f"db-{args.n_database}-{args.flip_rate}-{args.seed}-{Path(args.model).stat().st_mtime_ns}.npz"
    )
    if not codes.is_file():
        start = time.perf_counter()
        synthetic_codes(args, codes)
        print(f"synthetic database {codes} in {time.perf_counter() - start:.0f} s", flush=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nhl.cli",
            "serve",
            "--model",
            args.model,
            "--manifest",
            str(args.manifest),
            "--codes",
            str(codes),
            "--port",
            str(port),
            "--poll",
            "0",
            "--cache-dir",
            str(args.cache_dir / "cache"),
        ],
        env=env,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                health = requests.get(f"{url}/health", timeout=5).json()
                break
            except requests.RequestException:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("nhl serve did not start") from None
                time.sleep(0.5)
        before = rss_mb(server.pid)
        items = requests.get(f"{url}/items", params={"limit": 100_000}, timeout=10).json()["ids"]
        print(
            f"serving {health['database_size']:,} codes ({health['model']}), server RSS {before:.0f} MiB; "
            f"{args.clients} clients, {args.duration / len(lengths):.0f} s per length",
            flush=True,
        )
        rows = []
        for bits in lengths:
            row = load_phase(url, items, bits, args.clients, args.duration / len(lengths))
            rows.append(row)
            print(
                f"  {bits:4d} bits: {row['requests_per_second']:8.1f} req/s  p50 {row['p50_ms']:7.2f} ms  "
                f"p99 {row['p99_ms']:7.2f} ms  server search p50 {row['server_search_p50_ms']} ms  "
                f"errors {row['errors']}",
                flush=True,
            )
        after = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    load_end = os.getloadavg()
    print(f"server RSS {before:.0f} -> {after:.0f} MiB")
    if args.no_report:
        return 0
    record = {
        "rows": rows,
        "rss_mb_before": round(before, 1),
        "rss_mb_after": round(after, 1),
        "n_database": health["database_size"],
        "clients": args.clients,
        "duration_s": args.duration,
        "model": health["model"],
        "machine": host,
        "load_average": [round(v, 2) for v in load],
        "load_average_end": [round(v, 2) for v in load_end],
        "command": "python " + " ".join(sys.argv),
    }
    write_text(args.out, json.dumps(record, indent=2) + "\n")
    table = [
        [
            r["bits"],
            f"{r['requests_per_second']:,.1f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            r["server_search_p50_ms"],
            r["errors"],
        ]
        for r in rows
    ]
    notes = (
        f"`nhl serve --codes` on {health['database_size']:,} synthetic codes of `{health['model']}` (the "
        f"database split encoded, replicated with bit flips p = {args.flip_rate}); {args.clients} client threads "
        f"on loopback, `GET /search?item=&bits=&k=10` on query items, {args.duration / len(lengths):.0f} s per "
        f"length; latencies measured by the clients. Server RSS {before:.0f} MiB before, {after:.0f} MiB after. "
        f"**Busy machine**: load average {', '.join(f'{v:.1f}' for v in load)} at the start, "
        f"{', '.join(f'{v:.1f}' for v in load_end)} at the end; clients and server share the same 2 cores."
    )
    path = append_table(
        f"Serving: {args.clients} clients against `nhl serve` over {health['database_size']:,} codes (bench/serve.py)",
        ["bits", "requests/s", "p50 ms", "p99 ms", "server search p50 ms", "errors"],
        table,
        notes=notes,
        machine_info=host,
    )
    print(f"appended to {path}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
