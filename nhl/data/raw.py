"""Save a loaded source to a directory (the fetch stage's output) and read it back.

In-memory sources: `images.npy` (uint8), `labels.npy` (float32 multi-hot), `groups.npy` (when the
source has groups) and `source.json`. File sources: `items.csv` (`path`, `labels`, `group`) and
`source.json`, which records the image root and any listed images that were missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nhl.data.manifest import labels_from_strings
from nhl.data.sources import SourceData

SOURCE_META = "source.json"


def save_source(data: SourceData, directory: str | Path) -> dict:
    """Write `data` into `directory` (use a fresh temporary one, see `nhl.atomic.directory`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": data.name,
        "kind": data.kind,
        "num_items": len(data),
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "group_sizes": data.group_sizes(),
        "root": data.root,
        "missing": list(data.missing),
        "channels": data.channels,
        "image_size": data.image_size,
        "images_hash": data.images_hash,
    }
    if data.kind == "memory":
        assert data.images is not None  # a memory source holds its images
        np.save(directory / "images.npy", data.images)
        np.save(directory / "labels.npy", data.labels)
        if data.groups is not None:
            np.save(directory / "groups.npy", np.asarray(data.groups, dtype=str))
        meta["image_shape"] = list(data.images.shape[1:])
    else:
        data.frame().to_csv(directory / "items.csv", index=False, lineterminator="\n")
    (directory / SOURCE_META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def load_source(directory: str | Path, mmap: bool = False) -> SourceData:
    """Read a directory written by `save_source`; `mmap` maps the image array instead of reading it."""
    directory = Path(directory)
    meta_path = directory / SOURCE_META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: run the fetch stage first")
    meta = json.loads(meta_path.read_text())
    common: dict[str, Any] = dict(
        class_names=tuple(meta["class_names"]),
        missing=tuple(meta.get("missing", ())),
        channels=meta.get("channels"),
        image_size=meta.get("image_size"),
        images_hash=meta.get("images_hash"),
    )
    if meta["kind"] == "memory":
        groups_path = directory / "groups.npy"
        return SourceData(
            meta["name"],
            np.load(directory / "labels.npy"),
            images=np.load(directory / "images.npy", mmap_mode="r" if mmap else None),
            groups=np.load(groups_path) if groups_path.is_file() else None,
            **common,
        )
    items = pd.read_csv(directory / "items.csv", dtype={"path": str, "labels": str, "group": str})
    return SourceData(
        meta["name"],
        labels_from_strings(items["labels"], meta["num_classes"]),
        paths=tuple(items["path"]),
        root=meta["root"],
        groups=items["group"].to_numpy(dtype=str),
        **common,
    )


def read_images(directory: str | os.PathLike[str]) -> np.ndarray:
    """The raw image array of an in-memory source, memory-mapped (rows are copied on access)."""
    path = Path(directory) / "images.npy"
    if not path.is_file():
        raise FileNotFoundError(f"raw image array {path} not found: run the fetch stage first")
    return np.load(path, mmap_mode="r")
