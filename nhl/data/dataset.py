"""A torch Dataset over one split of a manifest.

Each item is `(image float32 [C, H, W], labels float32 multi-hot [num_classes], index)`, where
`index` is the item's position within the split (losses with a memory bank of the training set
index by it). Pixels are scaled to [0, 1], passed through the optional `transform`, then
normalised with the caller's `mean`/`std`. Grey images have one channel unless `channels=3`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from nhl.data.manifest import CSV_NAME, labels_csr_from_strings, read_manifest, split_frame
from nhl.data.paths import inside_root
from nhl.data.raw import read_images
from nhl.images import convert, open_image, resize

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
Transform = Callable[[torch.Tensor], torch.Tensor]


class ManifestDataset(Dataset):
    """Images of one split, from rows of an in-memory array (`images`) or files under `root`.

    `frame` holds the split's manifest rows in order; `channels` (1 or 3) converts every image to
    grey or RGB (needed for file datasets that mix both); `size` resizes every image to
    `size x size` (file datasets of mixed sizes); `mean`/`std` are one value or one per channel.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        num_classes: int,
        images: np.ndarray | None = None,
        root: str | Path | None = None,
        transform: Transform | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        channels: int | None = None,
        size: int | None = None,
    ) -> None:
        if "row" in frame.columns and images is None:
            raise ValueError("a manifest with a 'row' column needs the raw image array (images=...)")
        if "path" in frame.columns and root is None:
            raise ValueError("a manifest with a 'path' column needs the image root (root=...)")
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
        self.frame = frame.reset_index(drop=True)
        self.label_csr = labels_csr_from_strings(self.frame["labels"], num_classes)
        self._dense_labels: torch.Tensor | None = None
        self.item_ids = self.frame["item_id"].to_numpy()
        self.images = images
        self.root = Path(root) if root is not None else None
        self.transform = transform
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
        if self.std is not None and bool((self.std <= 0).any()):
            raise ValueError(f"std must be positive, got {std!r}")
        self.channels = channels
        self.size = size

    @property
    def labels(self) -> torch.Tensor:
        """Float multi-hot `[N, C]` (built on first use; prefer `compact_labels` for many classes)."""
        if self._dense_labels is None:
            self._dense_labels = torch.from_numpy(np.asarray(self.label_csr.toarray(), dtype=np.float32))
        return self._dense_labels

    def compact_labels(self):
        """Class ids `[N]` (int64) when every item has one label, else the CSR matrix (`nhl.labels`)."""
        from nhl.labels import compact

        return compact(self.label_csr)

    def _label_row(self, index: int) -> torch.Tensor:
        row = torch.zeros(self.label_csr.shape[1])
        start, stop = self.label_csr.indptr[index], self.label_csr.indptr[index + 1]
        row[torch.from_numpy(self.label_csr.indices[start:stop].astype(np.int64))] = 1.0
        return row

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        pixels = self._pixels(index)
        image = torch.from_numpy(np.array(pixels, dtype=np.float32)).div_(255.0)  # a writable copy
        image = image.unsqueeze(0) if image.ndim == 2 else image.permute(2, 0, 1)
        if self.size is not None and tuple(image.shape[-2:]) != (self.size, self.size):
            image = resize(image, self.size)
        if self.transform is not None:
            image = self.transform(image)
        if self.mean is not None:
            image = image - self.mean
        if self.std is not None:
            image = image / self.std
        return image, self._label_row(index), index

    def _pixels(self, index: int) -> np.ndarray:
        """uint8 `[H, W]` or `[H, W, C]` pixels of the item at `index`, converted to `channels`."""
        if self.images is not None:
            pixels = np.asarray(self.images[int(self.frame.at[index, "row"])])
            if self.channels is None or (pixels.ndim == 2) == (self.channels == 1):
                return pixels
            return np.asarray(_pil().fromarray(pixels).convert("L" if self.channels == 1 else "RGB"))
        assert self.root is not None, "items not in `images` are files: __init__ requires a root for 'path' rows"
        path = self.root / self.frame.at[index, "path"]
        try:
            path = inside_root(self.root, self.frame.at[index, "path"], "manifest entry")
            with open_image(path) as image:
                mode = {1: "L", 3: "RGB"}.get(self.channels or 0) or ("L" if image.mode in GREY_MODES else "RGB")
                try:
                    return np.asarray(convert(image, mode))
                except (OSError, SyntaxError) as err:
                    raise ValueError(f"image {path}: cannot be decoded ({err})") from None
        except ValueError as err:  # "image <path>: why" -> "image <path> (item <id>) why"
            text, head = str(err), f"image {path}: "
            item = f"(item {self.item_ids[index]})"
            raise ValueError(
                f"image {path} {item} {text[len(head) :]}" if text.startswith(head) else f"{text} {item}"
            ) from None


def _pil():
    from PIL import Image

    return Image


def load_split(
    manifest: str | Path | pd.DataFrame,
    split: str,
    source: str | os.PathLike[str] | np.ndarray | None = None,
    transform: Transform | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    num_classes: int | None = None,
    channels: int | None = None,
) -> ManifestDataset:
    """The `split` of a manifest (a directory with manifest.csv + manifest.json, or a frame).

    `source` is the raw directory (or the image array itself) for manifests with `row`, the image
    root for manifests with `path`; by default the `raw_dir` / `root` recorded in manifest.json.
    `num_classes` is read from manifest.json and required when a frame is given.
    """
    meta: dict = {}
    if isinstance(manifest, pd.DataFrame):
        frame = manifest
    else:
        frame, meta = read_manifest(manifest)
    num_classes = num_classes if num_classes is not None else meta.get("num_classes")
    channels = channels if channels is not None else meta.get("channels")  # own images: always RGB
    size = meta.get("resize")  # own images: any size
    if num_classes is None:
        raise ValueError("num_classes is required when the manifest is given as a DataFrame")
    rows = split_frame(frame, split)
    in_memory = "row" in frame.columns
    source = source if source is not None else meta.get("raw_dir" if in_memory else "root")
    if source is None:
        what = "the raw directory with images.npy" if in_memory else "the image root"
        raise ValueError(f"source ({what}) is required for this manifest")
    if in_memory:
        location: dict[str, Any] = {"images": source if isinstance(source, np.ndarray) else read_images(source)}
    else:
        location = {"root": source}
    try:
        return ManifestDataset(
            rows, num_classes, transform=transform, mean=mean, std=std, channels=channels, size=size, **location
        )
    except ValueError as err:
        if isinstance(manifest, pd.DataFrame):
            raise
        raise ValueError(f"manifest {Path(manifest) / CSV_NAME} ({split} split): {err}") from None
