"""`nhl validate <manifest-dir>`: run the data validation gate on a split manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a split manifest with the Great Expectations gate",
        description="Validate manifest.csv + manifest.json in MANIFEST_DIR (schema, label range, every "
        "class present, split sizes as the protocol says, no query leakage, unique ids, images "
        "exist and decode). Always writes result.json and audit.md to --out; exits 1 when a "
        "check fails.",
    )
    parser.add_argument("manifest_dir", type=Path, help="directory holding manifest.csv and manifest.json")
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="raw directory with images.npy, or the image root for path manifests "
        "(default: the location recorded in manifest.json)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("reports/validation"), help="report directory (default: %(default)s)"
    )
    parser.add_argument("--sample", type=int, default=16, help="images to decode (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the decoded sample (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nhl.data.audit import AUDIT_NAME, write_report
    from nhl.data.validation import validate_manifest

    if args.sample < 0:
        raise ValueError(f"--sample: expected a count >= 0, got {args.sample}")
    result = validate_manifest(args.manifest_dir, images=args.images, sample=args.sample, seed=args.seed)
    write_report(result, args.out)
    stream = sys.stdout if result.success else sys.stderr
    print(result.message(), file=stream)
    print(f"audit: {args.out / AUDIT_NAME}", file=stream)
    return 0 if result.success else 1
