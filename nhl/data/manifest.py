"""The split manifest: one pandas row per (item, split), written as CSV with a JSON sidecar.

Columns (see architecture.md): `item_id` (int, the item's position in its source), `row` (index into
the raw image array) or `path` (image file relative to the source root), `labels` (space-separated
label indices, e.g. "3" or "0 7 12"), `split` (train, val, query or database). An item may appear in
train (or val) and database; an item in query appears nowhere else.

`manifest.json` beside `manifest.csv` records how the split was made (dataset, protocol, seed,
class count, sizes) and `content_hash`, the SHA-256 of the CSV bytes (and, for file sources, of the
images' own content hash `images_hash`), so a changed file or image is detected.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

SPLITS: tuple[str, ...] = ("train", "val", "query", "database")
LOCATIONS: tuple[str, ...] = ("row", "path")
CSV_NAME = "manifest.csv"
META_NAME = "manifest.json"


def labels_to_strings(multi_hot: np.ndarray) -> list[str]:
    """Multi-hot `[N, C]` -> N strings of the set label indices, ascending ("0 7 12")."""
    multi_hot = np.asarray(multi_hot)
    if multi_hot.ndim != 2:
        raise ValueError(f"labels must be a 2-D multi-hot matrix [N, C], got shape {multi_hot.shape}")
    return [" ".join(str(i) for i in np.flatnonzero(row)) for row in multi_hot]


def labels_from_strings(strings: Iterable[str], num_classes: int) -> np.ndarray:
    """Space-separated label indices -> float32 multi-hot `[N, num_classes]`.

    Raises ValueError naming the first entry that is empty, not integers, or out of range.
    """
    strings = list(strings)
    out = np.zeros((len(strings), num_classes), dtype=np.float32)
    for n, text in enumerate(strings):
        tokens = str(text).split() if isinstance(text, str) else []
        if not tokens:
            raise ValueError(f"labels entry {n}: {text!r} has no label index")
        for token in tokens:
            if not token.isdigit():
                raise ValueError(f"labels entry {n}: {token!r} in {text!r} is not a label index")
            index = int(token)
            if index >= num_classes:
                raise ValueError(f"labels entry {n}: index {index} is out of range for {num_classes} classes")
            out[n, index] = 1.0
    return out


def labels_csr_from_strings(strings: Iterable[str], num_classes: int):
    """Space-separated label indices -> a scipy CSR matrix `[N, num_classes]` of int8 ones.

    The compact form of `labels_from_strings` (same checks, same messages): 12 bytes a label
    instead of 4 C bytes an item, for splits with many classes.
    """
    import scipy.sparse as sp

    indptr, indices = [0], []
    for n, text in enumerate(strings):
        tokens = str(text).split() if isinstance(text, str) else []
        if not tokens:
            raise ValueError(f"labels entry {n}: {text!r} has no label index")
        row = set()
        for token in tokens:
            if not token.isdigit():
                raise ValueError(f"labels entry {n}: {token!r} in {text!r} is not a label index")
            index = int(token)
            if index >= num_classes:
                raise ValueError(f"labels entry {n}: index {index} is out of range for {num_classes} classes")
            row.add(index)
        indices += sorted(row)
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.ones(len(indices), np.int8), np.asarray(indices, np.int64), np.asarray(indptr)),
        shape=(len(indptr) - 1, num_classes),
    )


def location_column(frame: pd.DataFrame) -> str:
    """'row' or 'path': the column that says where each image is (exactly one must exist)."""
    present = [c for c in LOCATIONS if c in frame.columns]
    if len(present) != 1:
        raise ValueError(f"a manifest needs exactly one of the columns 'row' or 'path', found {present}")
    return present[0]


def check_manifest(frame: pd.DataFrame) -> None:
    """Cheap structural check before writing or reading; the Great Expectations gate does the rest."""
    location = location_column(frame)
    expected = ["item_id", location, "labels", "split"]
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}; expected {expected}")
    for column in expected:
        if frame[column].isna().any():
            raise ValueError(f"manifest column {column!r} has {int(frame[column].isna().sum())} empty values")
    unknown = sorted(set(frame["split"]) - set(SPLITS))
    if unknown:
        raise ValueError(f"manifest column 'split' has unknown values {unknown}; expected {list(SPLITS)}")


def content_hash(data: bytes, images_hash: str | None = None) -> str:
    """'sha256:<hex>' of the manifest CSV bytes, and of the images' content hash when the source
    records one (file sources), so a changed image changes the manifest's hash."""
    if images_hash:
        data = data + b"\nimages " + images_hash.encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """The canonical CSV encoding (the content hash is computed over exactly these bytes)."""
    location = location_column(frame)
    columns = ["item_id", location, "labels", "split"]
    return frame[columns].to_csv(index=False, lineterminator="\n").encode("utf-8")


def write_manifest(directory: str | Path, frame: pd.DataFrame, meta: dict) -> dict:
    """Write `manifest.csv` and `manifest.json` into `directory`; return the meta as written.

    The directory should be a fresh temporary one (`nhl.atomic.directory`) so a failure leaves no
    partial manifest behind. `content_hash` is added to the meta.
    """
    check_manifest(frame)
    data = to_csv_bytes(frame)
    meta = dict(meta, content_hash=content_hash(data, meta.get("images_hash")))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CSV_NAME).write_bytes(data)
    (directory / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV with the column types fixed (labels stay strings: "3", not 3)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest file {path} not found")
    return pd.read_csv(path, dtype={"labels": str, "split": str, "path": str}, keep_default_na=True)


def read_manifest(directory: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict]:
    """Read `manifest.csv` and its `manifest.json` sidecar from `directory` (not checked)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"manifest directory {directory} not found")
    meta_path = directory / META_NAME
    if not meta_path.is_file():
        raise FileNotFoundError(f"manifest meta file {meta_path} not found")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"manifest meta file {meta_path} is not valid JSON: {err}") from None
    return read_csv(directory / CSV_NAME), meta


def split_frame(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one split, in manifest order, index reset (position = index within the split)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    return frame[frame["split"] == split].reset_index(drop=True)


def split_sizes(frame: pd.DataFrame, splits: Sequence[str] = SPLITS) -> dict[str, int]:
    """Number of rows of each split (0 for an absent split)."""
    counts = frame["split"].value_counts()
    return {s: int(counts.get(s, 0)) for s in splits}
