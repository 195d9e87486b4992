"""Check every image file of a manifest, caching each file's result by its content hash.

For file sources the validation gate decodes every image (not a sample): a corrupt image
anywhere must stop the pipeline at `validate`, before training. Decoding thousands of photos on
each run would be slow, so each result is cached under the SHA-256 of the file's bytes (and the
pixel limit it was judged with); a rerun reads the bytes to hash them but decodes only images
whose content changed.

A result is a `problem` text ("" when the image is fine) plus its width, height and mode.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nhl import atomic
from nhl.data.filesource import file_digest
from nhl.data.paths import inside_root

CACHE_VERSION = 1


@dataclass
class CheckStats:
    """How many images were decoded now and how many results came from the cache."""

    decoded: int = 0
    cached: int = 0


def check_image(path: Path, max_pixels: int | None = None) -> dict:
    """Decode `path` fully to RGB: {"problem", "width", "height", "mode"}; `problem` is "" when the
    image is fine, else why not (without the path, so a cached result can name another copy)."""
    from nhl.images import convert, open_image

    try:
        with open_image(path, max_pixels) as image:
            width, height, mode = image.size[0], image.size[1], image.mode
            try:
                convert(image, "RGB").load()
            except (OSError, SyntaxError, ValueError) as err:
                raise ValueError(f"image {path}: cannot be decoded ({err})") from None
    except ValueError as err:
        text, head = str(err), f"image {path}: "
        return {"problem": text[len(head) :] if text.startswith(head) else text, "width": 0, "height": 0, "mode": ""}
    if width < 1 or height < 1:
        return {"problem": f"empty ({width}x{height})", "width": width, "height": height, "mode": mode}
    return {"problem": "", "width": width, "height": height, "mode": mode}


def check_images(
    root: str | os.PathLike, entries: pd.Series, where: str, cache_file: str | os.PathLike | None = None
) -> tuple[pd.DataFrame, CheckStats]:
    """One row per distinct path of `entries` (a manifest's `path` column, index = CSV row):
    path, exists, problem, width, height, mode. `where` names the manifest CSV for errors.

    A path outside `root` or a missing file is a problem without decoding. With `cache_file`,
    results are read from and written back to it (JSON, replaced atomically).
    """
    from nhl.images import pixel_limit

    root = Path(root)
    limit = pixel_limit()
    known = _read_cache(cache_file, limit)
    cache: dict = {}  # only this manifest's images are kept, so the file does not grow forever
    stats = CheckStats()
    rows = []
    first_line: dict[str, int] = {}
    for index, rel in entries.items():
        first_line.setdefault(rel, int(index) + 2)  # header is line 1
    for rel, line in first_line.items():
        record = {"path": rel, "exists": True, "problem": "", "width": 0, "height": 0, "mode": ""}
        try:
            path = inside_root(root, rel, f"{where} line {line}")
        except ValueError as err:
            rows.append({**record, "problem": str(err)})
            continue
        if not path.is_file():
            rows.append({**record, "exists": False, "problem": f"image {path} not found ({where} line {line})"})
            continue
        digest = file_digest(path)
        if digest in known or digest in cache:
            stats.cached += 1
            cache[digest] = known.get(digest) or cache[digest]
        else:
            stats.decoded += 1
            cache[digest] = check_image(path, limit)
        result = dict(cache[digest])
        if result["problem"]:
            result["problem"] = f"image {path}: {result['problem']}"
        rows.append({**record, **result})
    if cache_file is not None:
        _write_cache(cache_file, limit, cache)
    return pd.DataFrame(rows, columns=["path", "exists", "problem", "width", "height", "mode"]), stats


def _read_cache(cache_file, limit: int) -> dict:
    if cache_file is None or not Path(cache_file).is_file():
        return {}
    try:
        data = json.loads(Path(cache_file).read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # a damaged cache costs a full check, never a wrong verdict
    if data.get("version") != CACHE_VERSION or data.get("max_pixels") != limit:
        return {}
    return dict(data.get("results", {}))


def _write_cache(cache_file, limit: int, cache: dict) -> None:
    path = Path(cache_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps({"version": CACHE_VERSION, "max_pixels": limit, "results": cache}))
