"""Rules shared by the file sources (imagelist, imagefolder, imagecsv).

- Every listed path stays inside the data root (`nhl.data.paths.inside_root`).
- A missing or unreadable image (no file, not an image, a header PIL cannot parse, over the pixel
  limit) is a one-line error naming the file, unless `allow_missing`: then it is skipped and
  recorded in `SourceData.missing`, which the gate's audit lists.
- `files_hash` is a content hash of every kept image, so the manifest's hash covers image bytes
  and not only their paths.

Only image headers are read here; the validation gate decodes every image.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

CHUNK = 1 << 20
DEFAULT_SIZE = 128  # the side own images are resized to before the model (its input_size resizes again)


def check_size(size) -> int:
    """The `size` option of a file source: an integer >= 8 (one-line error otherwise)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"data.options.size: expected an integer >= 8 (the side images are resized to), got {size!r}")
    return size


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of one file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def files_hash(root: str | os.PathLike, paths: Sequence[str]) -> str:
    """'sha256:<hex>' over each (path, content digest) in order: changes when any image's bytes do."""
    digest = hashlib.sha256()
    for rel in paths:
        digest.update(f"{rel}\0{file_digest(Path(root) / rel)}\n".encode())
    return "sha256:" + digest.hexdigest()


def check_files(
    root: str | os.PathLike, paths: Sequence[str], origins: Sequence[str], allow_missing: bool
) -> tuple[list[int], list[str]]:
    """(indices of usable images, paths skipped). `origins[i]` says where `paths[i]` was listed.

    Raises a one-line FileNotFoundError / ValueError naming the first bad file (and how many
    more) unless `allow_missing`.
    """
    from nhl.images import open_image

    root = Path(root)
    keep: list[int] = []
    bad: list[tuple[str, str]] = []
    for i, (rel, origin) in enumerate(zip(paths, origins, strict=True)):
        path = root / rel
        if not path.is_file():
            bad.append((rel, f"image {path} not found ({origin})"))
            continue
        try:
            with open_image(path):
                pass
        except ValueError as err:
            bad.append((rel, f"{err} ({origin})"))
            continue
        keep.append(i)
    if bad and not allow_missing:
        more = f"; {len(bad) - 1} more bad images" if len(bad) > 1 else ""
        raise ValueError(f"{bad[0][1]}{more}; pass allow_missing: true to skip them")
    if not keep:
        raise FileNotFoundError(f"none of the {len(paths)} images under {root} can be read")
    return keep, [rel for rel, _ in bad]


def tree_hash(root: str | os.PathLike) -> dict:
    """Content hash of every non-hidden file under `root` (recursive, symlinks followed), for the
    pipeline's `scan` stage: {"root", "exists", "files", "hash"}. Any image, list or CSV file
    changed, added or removed changes "hash"; an absent root hashes as empty."""
    root = Path(root)
    digest = hashlib.sha256()
    count = 0
    if root.is_dir():
        for folder, dirs, files in os.walk(root, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(f for f in files if not f.startswith(".")):
                path = Path(folder) / name
                if path.is_file():
                    digest.update(f"{path.relative_to(root).as_posix()}\0{file_digest(path)}\n".encode())
                    count += 1
    return {"root": str(root), "exists": root.is_dir(), "files": count, "hash": "sha256:" + digest.hexdigest()}
