"""`nhl serve [--model champion] [--manifest data/splits]`: the retrieval page and JSON API on 127.0.0.1.

Serves the model behind a registry alias (default `champion`) or a model file: the manifest's
database split is encoded once (codes cached under `--cache-dir`, keyed by model version and
manifest hash) into one FAISS flat index per code length, and the query split is offered on the
page. `--codes FILE` serves a codes file as the database instead (e.g. a synthetic 1M-code one for
bench/serve.py). With `--poll S` the server checks every S seconds whether the alias moved and
swaps the new version in when its index is built; `POST /reload` does the same at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve retrieval (web page + JSON API) for the champion or a model file",
        description="Serve image retrieval on 127.0.0.1: page /, GET/POST /search, /health, /metrics.",
    )
    parser.add_argument(
        "--model",
        default="champion",
        help="registry alias (champion), models:/<name>@<alias> or a model file (default: %(default)s)",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=Path("data/splits"),
        help="split manifest: database and query items (default: %(default)s)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="raw directory / image root (default: the location recorded in the manifest)",
    )
    parser.add_argument(
        "--codes",
        type=Path,
        default=None,
        help="serve this codes file (`nhl encode`) as the database instead of encoding the manifest's",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where encoded codes are cached (default: $NHL_SERVE_CACHE or .cache/serve)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument(
        "--poll",
        type=float,
        default=30.0,
        help="seconds between checks that the alias moved; 0 turns polling off (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="FAISS threads per search (default: %(default)s: concurrent requests already run in "
        "parallel threads; OpenMP inside each small search only oversubscribes the cores)",
    )
    parser.add_argument("--max-pixels", type=int, default=None, help="largest upload in pixels (default: 16,000,000)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from nhl.service.app import create_app
    from nhl.service.engine import Engine, Source, default_cache_dir
    from nhl.service.uploads import DEFAULT_MAX_PIXELS

    if not 0 < args.port < 65536:
        raise ValueError(f"--port: expected 1-65535, got {args.port}")
    if args.threads < 1:
        raise ValueError(f"--threads: expected a positive integer, got {args.threads}")
    if args.poll < 0:
        raise ValueError(f"--poll: expected seconds >= 0, got {args.poll}")
    manifest = args.manifest if (args.manifest / "manifest.csv").is_file() else None
    if manifest is None and args.codes is None:
        raise FileNotFoundError(
            f"--manifest: {args.manifest} holds no manifest.csv (run `make run` first, or pass --codes)"
        )
    source = Source(
        spec=str(args.model),
        manifest=manifest,
        codes=args.codes,
        images=args.images,
        cache_dir=args.cache_dir or default_cache_dir(),
    )
    import faiss

    faiss.omp_set_num_threads(args.threads)
    engine = Engine(source, poll_seconds=args.poll)  # an unknown alias or file fails here
    snap = engine.snapshot
    app = create_app(engine, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    who = (
        f"{snap.info.get('registered_model')} v{snap.info.get('version')}"
        if snap.info.get("registered_model")
        else snap.info.get("path")
    )
    print(
        f"serve: {snap.info.get('model_id')} ({who}), {snap.size:,} database codes, lengths "
        f"{','.join(map(str, snap.lengths))}, ready in {snap.build_seconds:.1f} s -> "
        f"http://{args.host}:{args.port}/",
        flush=True,
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        engine.close()
    return 0
