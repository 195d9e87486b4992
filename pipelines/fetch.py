"""Stage `fetch`: load the dataset named in params.yaml `data` and save it to a raw directory.

In-memory sources (mnist5k, digits, cifar10) become images.npy + labels.npy (+ groups.npy);
file sources (imagelist) become items.csv. The output directory is replaced atomically, so a
failure leaves the previous output (or none) in place.

    python pipelines/fetch.py --params params.yaml --out data/raw/mnist5k
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _params import read_section  # pipelines/ is sys.path[0] when a stage script runs

from nhl import atomic
from nhl.data.raw import save_source
from nhl.data.sources import load
from nhl.orchestration import stage_error


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file with a `data` section")
    parser.add_argument("--out", type=Path, default=None, help="raw directory (default: data/raw/<dataset>)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = read_section(args.params, "data")
        dataset = params.get("dataset")
        out = args.out or Path("data/raw") / str(dataset)
        data = load(dataset, params.get("root"), **(params.get("options") or {}))
        with atomic.directory(out) as tmp:
            save_source(data, tmp)
    except (ValueError, OSError) as err:  # OSError: unreadable input, unwritable output
        print(stage_error("fetch", err), file=sys.stderr)
        return 2
    skipped = f", {len(data.missing)} missing images skipped" if data.missing else ""
    print(f"fetch: {data.name}: {len(data):,} items, {data.num_classes} classes -> {out}{skipped}")
    return 0


if __name__ == "__main__":
    from nhl.timing import phase  # where the stage's time goes: bench/pipeline_cost.py

    with phase("data"):
        sys.exit(main())
