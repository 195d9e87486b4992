"""Stage `split`: split the fetched dataset by the protocol in params.yaml `data`.

Writes manifest.csv + manifest.json (protocol, seed, content hash) to the output directory,
replaced atomically. Counts given in params (`query`, `train`, `val`, `train_in_database`, `per_class`)
override the registered protocol's; the meta lists which ones differ.

    python pipelines/split.py --params params.yaml --raw data/raw/mnist5k --out data/splits
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _params import read_section  # pipelines/ is sys.path[0] when a stage script runs

from nhl import atomic
from nhl.data.manifest import write_manifest
from nhl.data.raw import load_source
from nhl.data.splits import get_protocol, make_split
from nhl.orchestration import stage_error

OVERRIDES = ("query", "train", "val", "train_in_database", "per_class")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file with a `data` section")
    parser.add_argument("--raw", type=Path, required=True, help="raw directory written by the fetch stage")
    parser.add_argument(
        "--out", type=Path, default=Path("data/splits"), help="manifest directory (default: %(default)s)"
    )
    return parser.parse_args(argv)


def check_overrides(overrides: dict) -> None:
    """Counts must be positive integers and `train_in_database` a boolean (one-line error naming the key)."""
    for key, value in overrides.items():
        if key in ("train_in_database", "per_class"):
            if not isinstance(value, bool):
                raise ValueError(f"data.{key} must be true, false or null, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"data.{key} must be a positive integer or null (the protocol's own), got {value!r}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = read_section(args.params, "data")
        source = load_source(args.raw, mmap=True)  # splitting reads labels only
        if params.get("dataset") not in (None, source.name):
            raise ValueError(
                f"{args.raw} holds dataset {source.name!r} but params say {params['dataset']!r}: rerun fetch"
            )
        registered = get_protocol(params.get("protocol"))
        overrides = {key: params[key] for key in OVERRIDES if params.get(key) is not None}
        check_overrides(overrides)
        protocol = registered.with_counts(**overrides)
        seed = params.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"data.seed must be an integer, got {seed!r}")
        frame, meta = make_split(source, protocol, seed)
        meta["raw_dir"] = str(args.raw)
        meta["customised"] = sorted(k for k, v in overrides.items() if getattr(registered, k) != v)
        with atomic.directory(args.out) as tmp:
            meta = write_manifest(tmp, frame, meta)
    except (ValueError, OSError) as err:  # OSError: unreadable input, unwritable output
        print(stage_error("split", err), file=sys.stderr)
        return 2
    sizes = ", ".join(f"{k} {v:,}" for k, v in meta["sizes"].items())
    print(f"split: {source.name} by {protocol.name} (seed {seed}): {sizes} -> {args.out} [{meta['content_hash'][:19]}]")
    return 0


if __name__ == "__main__":
    from nhl.timing import phase  # where the stage's time goes: bench/pipeline_cost.py

    with phase("data"):
        sys.exit(main())
