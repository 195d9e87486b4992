"""`nhl encode SOURCE --model M --out codes.npz`: images -> a packed codes file for `nhl search`.

SOURCE (or `--manifest DIR`) is a split manifest directory (one split, default `database`; ids are
the manifest's `item_id`s; labels, and the image paths of file-based data, are kept), an image
folder (searched recursively, sorted; ids are positions, names the relative paths) or a single
image file. The model encodes in eval mode, so an image gets the same code alone as in a batch.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encode",
        help="encode images (a manifest split, a folder or a file) into a codes file",
        description="Encode images with a trained model into a codes file (.npz: packed codes of the "
        "longest length, ids, model info) for `nhl search`.",
    )
    parser.add_argument(
        "source",
        type=Path,
        nargs="?",
        help="a split manifest directory (manifest.csv + manifest.json), an image folder or an image file",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="the split manifest directory to encode, as in `nhl train` / `nhl evaluate` (instead of SOURCE)",
    )
    parser.add_argument("--model", required=True, help="trained model file (models/<loss>/<model_id>.pt)")
    parser.add_argument("--out", type=Path, required=True, help="codes file to write (.npz)")
    parser.add_argument(
        "--split",
        default="database",
        help="manifest split to encode: train, val, query or database (default: %(default)s)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="manifests only: raw directory with images.npy, or the image root "
        "(default: the location recorded in manifest.json)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="files only: resize every image to SIZE x SIZE (needed for folders of mixed sizes; "
        "default: the model's input size if it has one, else keep the size)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nhl.codes import Codes, save_codes
    from nhl.serving import resolve_model

    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    args.source = source_of(args)
    if not args.source.exists():
        raise FileNotFoundError(f"source {args.source} does not exist")
    model, info = resolve_model(args.model)
    if is_manifest(args.source):
        packed, ids, names, labels = encode_manifest(model, args)
        what = f"split {args.split!r} of {args.source}"
    else:
        packed, ids, names = encode_files(model, args.source, args.size, args.batch_size)
        labels, what = None, str(args.source)
    codes = Codes(packed, ids, info["lengths"][-1], info, names=names, labels=labels)
    save_codes(args.out, codes)
    print(
        f"encode: {len(codes):,} codes of {codes.bits} bits ({info['model_id']}, lengths "
        f"{','.join(map(str, info['lengths']))}) from {what} -> {args.out}"
    )
    return 0


def source_of(args: argparse.Namespace) -> Path:
    """SOURCE or --manifest (exactly one); --manifest must be a manifest directory."""
    if (args.source is None) == (args.manifest is None):
        raise ValueError(
            "source: give an image folder, an image file or a manifest directory, either as SOURCE "
            "or as --manifest DIR (exactly one of them)"
        )
    if args.manifest is not None and not is_manifest(args.manifest):
        raise FileNotFoundError(
            f"--manifest {args.manifest}: expected a split manifest directory (holding manifest.csv and manifest.json)"
        )
    return args.source if args.source is not None else args.manifest


def is_manifest(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.csv").is_file()


def encode_manifest(model, args: argparse.Namespace):
    """(packed codes, item ids, image paths (None for in-memory data), labels) of one split of a manifest."""
    from torch.utils.data import DataLoader

    from nhl.codes import encode_batches
    from nhl.data.dataset import load_split
    from nhl.data.manifest import SPLITS

    if args.split not in SPLITS:
        raise ValueError(f"--split: unknown split {args.split!r}; expected one of {list(SPLITS)}")
    dataset = load_split(args.source, args.split, source=args.images, channels=model.spec.in_channels)
    if len(dataset) == 0:
        raise ValueError(f"manifest {args.source}: split {args.split!r} has no items")
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    packed = encode_batches(model, (images for images, *_ in loader))
    names = None
    if dataset.root is not None:  # file-based data: each item's image file, as a path one can open
        names = [str(dataset.root / path) for path in dataset.frame["path"].astype(str)]
    return packed, dataset.item_ids, names, dataset.labels.numpy()


def encode_files(model, source: Path, size: int | None, batch_size: int):
    """(packed codes, positions, relative names) of an image folder or a single image file."""
    from nhl.codes import encode_batches
    from nhl.images import iter_image_batches, list_images

    files = list_images(source)
    size = size if size is not None else model.spec.input_size
    batches = iter_image_batches(files, model.spec.in_channels, size, batch_size)
    packed = encode_batches(model, batches)
    base = source if source.is_dir() else source.parent
    names = [str(path.relative_to(base)) for path in files]
    return packed, list(range(len(files))), names
