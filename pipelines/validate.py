"""Stage `validate`: the Great Expectations gate over the split manifest.

File sources have every image decoded; each result is cached by content hash in --cache, so a
rerun decodes only changed images. Always writes result.json and audit.md to the output directory
(replaced atomically) when there is a manifest to judge; exits 1 naming the failed checks when any
fails, 2 on bad input.

    python pipelines/validate.py --params params.yaml --manifest data/splits --out reports/validation
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _params import read_section  # pipelines/ is sys.path[0] when a stage script runs

from nhl.data.audit import write_report
from nhl.data.validation import validate_manifest
from nhl.orchestration import stage_error


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file with a `data` section")
    parser.add_argument(
        "--manifest", type=Path, default=Path("data/splits"), help="manifest directory (default: %(default)s)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("reports/validation"), help="report directory (default: %(default)s)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("data/cache/image_checks.json"),
        help="per-image check results by content hash, for file sources (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = read_section(args.params, "data")
        sample, seed = params.get("validate_sample", 16), params.get("seed", 0)
        for key, value in (("validate_sample", sample), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"data.{key}: expected a non-negative integer, got {value!r}")
        result = validate_manifest(args.manifest, sample=sample, seed=seed, cache_file=args.cache)
        write_report(result, args.out)
    except (ValueError, OSError) as err:  # OSError: unreadable input, unwritable output
        print(stage_error("validate", err), file=sys.stderr)
        return 2
    if not result.success:
        print(f"validate: {result.message()}; see {args.out / 'audit.md'}", file=sys.stderr)
        return 1
    print(f"validate: {result.message()} -> {args.out}")
    return 0


if __name__ == "__main__":
    from nhl.timing import phase  # where the stage's time goes: bench/pipeline_cost.py

    with phase("data"):
        sys.exit(main())
