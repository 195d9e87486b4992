"""Stage `scan` (always run): hash every file under params.yaml `data.root`, so `fetch` reruns
when the user's images, list files or CSV change, are added or removed.

The data root lives outside DVC's view (a folder of photos, often outside the repository), so
DVC alone would call a changed folder up to date. This cheap stage runs on every `dvc repro`
(`always_changed`) and writes the content hash to a small file that `fetch` depends on: when the
hash is unchanged, DVC skips `fetch` and everything after it.

    python pipelines/scan.py --params params.yaml --out data/scan.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _params import read_section  # pipelines/ is sys.path[0] when a stage script runs

from nhl import atomic
from nhl.data.filesource import tree_hash


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file with a `data` section")
    parser.add_argument("--out", type=Path, default=Path("data/scan.json"), help="hash file (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        root = read_section(args.params, "data").get("root")
        result = tree_hash(root) if root else {"root": None, "exists": False, "files": 0, "hash": None}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(args.out, json.dumps(result, indent=2) + "\n")
    except (ValueError, OSError) as err:  # OSError: unreadable input, unwritable output
        print(f"scan: error: {err}", file=sys.stderr)
        return 2
    print(f"scan: {result['files']:,} files under {root} [{str(result['hash'])[:19]}] -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
