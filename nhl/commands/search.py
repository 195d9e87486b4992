"""`nhl search CODES QUERY... [--bits k] [--index flat|funnel|hash]`: top-k items by Hamming distance.

`--codes CODES` and `--query QUERY` (repeatable) are the same as options. Queries are image files
or folders (encoded with `--model`, by default the model recorded in the codes file) or a query
codes file (`--query-codes`). `--bits k` searches with the k-bit prefixes of a nested model's
codes (k must be one of its lengths). Index kinds (registry `SEARCHERS`): `flat` (exact FAISS
scan), `funnel` (nested funnel: bucket lookup on a short prefix, re-ranking on longer ones;
approximate) and `hash` (FAISS buckets on the first bits, approximate). Each result shows its id
and distance, and the image path and label indices when the codes file holds them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nhl.cli import int_list

SEARCHERS: dict[str, Callable[..., Any]] = {}


def register_searcher(name: str) -> Callable:
    """Register `f(codes ±1 [N, k], args, lengths) -> index with .search(queries, k)` under `name`."""

    def wrap(fn: Callable) -> Callable:
        SEARCHERS[name] = fn
        return fn

    return wrap


@register_searcher("flat")
def _flat(codes, args: argparse.Namespace, lengths: list[int]):
    from nhl.index import HashIndex

    return HashIndex(codes.shape[1], "flat").add(codes)


@register_searcher("hash")
def _hash(codes, args: argparse.Namespace, lengths: list[int]):
    from nhl.index import HashIndex

    bits = codes.shape[1]
    return HashIndex(bits, "hash", b=min(args.hash_bits, 8 * -(-bits // 8)), nflip=args.nflip).add(codes)


@register_searcher("funnel")
def _funnel(codes, args: argparse.Namespace, lengths: list[int]):
    from nhl.index import FunnelIndex

    bits = codes.shape[1]
    stages = args.stages or funnel_stages(lengths, bits)
    if stages[-1] != bits:
        raise ValueError(f"--stages: the last stage must be the search length {bits}, got {stages}")
    pools = args.pools or funnel_pools(len(stages) - 1, args.k)
    return FunnelIndex(codes, stages, pools)


def funnel_stages(lengths: list[int], bits: int) -> list[int]:
    """[the longest nested length of at most 16 bits that is shorter than `bits`, `bits`].

    Two stages: a bucket lookup on the short prefix, then exact re-ranking of its candidates.
    Intermediate stages are opt-in (`--stages`): they cut tie groups by database order, and on
    1M trained codes (bench/search.py) they cost recall without saving time.
    """
    short = [k for k in lengths if k <= 16 and k < bits]
    if not short:
        raise ValueError(
            f"--index funnel: needs a nested length <= 16 bits shorter than --bits {bits} "
            f"(model lengths {lengths}); pass --stages or use --index flat"
        )
    return [short[-1], bits]


def funnel_pools(transitions: int, k: int) -> list[int]:
    """Default candidate pools: every stage but the last keeps max(5000, 50k) candidates."""
    return [max(5000, 50 * k)] * transitions


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="top-k nearest codes of query images or codes",
        description="Search a codes file (from `nhl encode`) with query images or a query codes file; "
        "prints the top-k database ids with their Hamming distances.",
    )
    parser.add_argument("codes", type=Path, nargs="?", help="database codes file (.npz from `nhl encode`)")
    parser.add_argument("queries", type=Path, nargs="*", help="query image files or folders")
    parser.add_argument(
        "--codes",
        type=Path,
        dest="codes_option",
        metavar="CODES",
        default=None,
        help="the database codes file, as an option (then every positional is a query)",
    )
    parser.add_argument(
        "--query",
        type=Path,
        action="append",
        default=[],
        metavar="QUERY",
        help="a query image file or folder, as an option (repeatable)",
    )
    parser.add_argument("--query-codes", type=Path, default=None, help="a query codes file instead of images")
    parser.add_argument(
        "--model", default=None, help="model that encodes query images (default: the one recorded in the codes file)"
    )
    parser.add_argument("-k", "--k", type=int, default=10, help="results per query (default: %(default)s)")
    parser.add_argument(
        "--bits",
        type=int,
        default=None,
        help="search with the k-bit prefixes (one of the model's nested lengths; default: the longest)",
    )
    parser.add_argument("--index", default="flat", help=f"index kind: {', '.join(SEARCHERS)} (default: %(default)s)")
    parser.add_argument(
        "--stages",
        type=int_list,
        default=None,
        help="funnel: prefix lengths, e.g. 16,64,128 (default: the longest nested length <= 16 bits, then --bits)",
    )
    parser.add_argument(
        "--pools",
        type=int_list,
        default=None,
        help="funnel: candidates kept after each stage but the last (default: max(5000, 50k) each)",
    )
    parser.add_argument("--hash-bits", type=int, default=16, help="hash: bucket key bits (default: %(default)s)")
    parser.add_argument(
        "--nflip",
        type=int,
        default=2,
        help="hash: probe buckets up to this many flipped bits away (default: %(default)s)",
    )
    parser.add_argument("--size", type=int, default=None, help="resize query images to SIZE x SIZE")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nhl.codes import load_codes

    if args.index not in SEARCHERS:
        raise ValueError(f"--index: unknown index kind {args.index!r}; known: {', '.join(SEARCHERS)}")
    if args.k < 1:
        raise ValueError(f"-k: expected a positive number of results, got {args.k}")
    args.codes, args.queries = codes_and_queries(args)
    if bool(args.queries) == (args.query_codes is not None):
        raise ValueError("queries: give query image files/folders or --query-codes (exactly one of them)")
    db = load_codes(args.codes)
    bits = db.bits if args.bits is None else args.bits
    if bits not in db.lengths:
        raise ValueError(
            f"--bits: {bits} is not a length of the model of codes file {args.codes} (lengths {db.lengths})"
        )
    q_codes, q_labels = query_codes(args, db)
    index = SEARCHERS[args.index](db.codes(bits), args, db.lengths)
    distances, rows = index.search(q_codes[:, :bits], args.k)
    results = []
    for label, d_row, i_row in zip(q_labels, distances, rows, strict=True):
        found = [(int(i), int(d)) for i, d in zip(i_row, d_row, strict=True) if i >= 0]
        items: list[dict[str, Any]] = [{"id": int(db.ids[i]), "distance": d} for i, d in found]
        for item, (i, _) in zip(items, found, strict=True):
            if db.names is not None:
                item["name"] = str(db.names[i])  # the image path of file-based data
            if db.labels is not None:
                item["labels"] = [c for c, on in enumerate(db.labels[i]) if on > 0]
        results.append({"query": label, "results": items})
    if args.json:
        print(
            json.dumps(
                {"codes": str(args.codes), "bits": bits, "index": args.index, "k": args.k, "queries": results}, indent=1
            )
        )
    else:
        print_table(results)
    return 0


def codes_and_queries(args: argparse.Namespace) -> tuple[Path, list[Path]]:
    """(codes file, query paths) from the positionals `CODES QUERY...` and/or `--codes` / `--query`."""
    positionals = ([args.codes] if args.codes is not None else []) + list(args.queries)
    if args.codes_option is not None:
        return args.codes_option, positionals + args.query
    if not positionals:
        raise ValueError("codes: give the database codes file (CODES or --codes FILE)")
    return positionals[0], positionals[1:] + args.query


def query_codes(args: argparse.Namespace, db) -> tuple[Any, list[Any]]:
    """(±1 query codes [Q, db bits], a label per query) from images or a query codes file."""
    import numpy as np

    from nhl.codes import Codes, encode_batches, load_codes
    from nhl.images import iter_image_batches, list_images
    from nhl.serving import resolve_model

    if args.query_codes is not None:
        queries = load_codes(args.query_codes)
        if queries.bits != db.bits:
            raise ValueError(
                f"query codes file {args.query_codes}: {queries.bits}-bit codes, but codes file "
                f"{args.codes} has {db.bits}-bit codes (encode both with the same model)"
            )
        _warn_other_model(queries.model, db.model, f"query codes file {args.query_codes}", args.codes)
        labels = list(queries.names) if queries.names is not None else [int(i) for i in queries.ids]
        return queries.codes(), labels
    spec = args.model or db.model.get("path")
    if not spec:
        raise ValueError(f"--model: codes file {args.codes} records no model; pass --model")
    if args.model is None and not Path(spec).is_file():
        raise FileNotFoundError(f"model file {spec} (recorded in codes file {args.codes}) does not exist; pass --model")
    model, info = resolve_model(spec)
    if info["lengths"][-1] != db.bits:
        raise ValueError(
            f"--model {spec}: gives {info['lengths'][-1]}-bit codes, but codes file {args.codes} "
            f"has {db.bits}-bit codes"
        )
    _warn_other_model(info, db.model, f"model {spec}", args.codes)
    files = list_images(args.queries)
    size = args.size if args.size is not None else model.spec.input_size
    packed = encode_batches(model, iter_image_batches(files, model.spec.in_channels, size, batch_size=256))
    return Codes(packed, np.arange(len(files)), db.bits, info).codes(), [str(f) for f in files]


def _warn_other_model(info: dict, db_info: dict, what: str, codes_path: Path) -> None:
    if info.get("sha256") and db_info.get("sha256") and info["sha256"] != db_info["sha256"]:
        print(
            f"nhl search: warning: {what} is not the model that made codes file {codes_path} "
            f"({info.get('model_id')} vs {db_info.get('model_id')})",
            file=sys.stderr,
        )


def print_table(results: list[dict[str, Any]]) -> None:
    """One line per result: query, rank, id, distance, and the image path and labels where known."""
    has_names = any("name" in item for r in results for item in r["results"])
    has_labels = any("labels" in item for r in results for item in r["results"])
    header = ["query", "rank", "id", "distance"] + (["labels"] if has_labels else []) + (["path"] if has_names else [])
    lines = [
        [str(r["query"]), str(rank), str(item["id"]), str(item["distance"])]
        + ([" ".join(map(str, item.get("labels", [])))] if has_labels else [])
        + ([item.get("name", "")] if has_names else [])
        for r in results
        for rank, item in enumerate(r["results"], 1)
    ]
    widths = [max([len(h)] + [len(row[c]) for row in lines]) for c, h in enumerate(header)]
    for row in [header] + lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
