"""Source `imagefolder`: one sub-folder per class, the layout of torchvision's `ImageFolder`.

    root/cat/0001.jpg
    root/dog/photos/0002.png

Class names are the sub-folder names, sorted; class index = position in that order (recorded
in the manifest's `class_names`). Files are matched by extension (`nhl.images.IMAGE_SUFFIXES`),
searched recursively inside each class folder; hidden files and folders (a leading dot) are
ignored. Images are read as RGB and resized to `size x size` for the model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nhl.data.filesource import DEFAULT_SIZE, check_files, check_size, files_hash
from nhl.data.paths import inside_root
from nhl.data.sources import SourceData, one_hot, register_source


@register_source("imagefolder")
def imagefolder(root: str | Path | None = None, allow_missing: bool = False, size: int = DEFAULT_SIZE) -> SourceData:
    """Images under `root/<class>/`; an empty class folder is an error naming it."""
    from nhl.images import IMAGE_SUFFIXES  # nhl.images imports torch: only when this source is used

    if root is None:
        raise ValueError("dataset 'imagefolder' needs root=<folder with one sub-folder per class>")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image root {root} not found")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"image root {root}: no class folders; expected root/<class>/<image>")
    paths: list[str] = []
    targets: list[int] = []
    for index, name in enumerate(classes):
        found = _images_in(root, name)
        if not found:
            raise ValueError(f"class folder {root / name} has no image files ({', '.join(IMAGE_SUFFIXES)})")
        paths += found
        targets += [index] * len(found)
    origins = [f"class folder {root / Path(p).parts[0]}" for p in paths]
    for rel, origin in zip(paths, origins, strict=True):
        inside_root(root, rel, origin)  # a symlink leading out of the root
    keep, skipped = check_files(root, paths, origins, allow_missing)
    kept = [paths[i] for i in keep]
    return SourceData(
        "imagefolder",
        one_hot(np.asarray(targets)[keep], len(classes)),
        tuple(classes),
        paths=tuple(kept),
        root=str(root),
        missing=tuple(skipped),
        channels=3,
        image_size=check_size(size),
        images_hash=files_hash(root, kept),
    )


def _images_in(root: Path, name: str) -> list[str]:
    """Image files inside `root/name`, recursively, sorted, relative to `root` (posix)."""
    from nhl.images import IMAGE_SUFFIXES

    found = []
    for folder, dirs, files in os.walk(root / name):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for file in files:
            if not file.startswith(".") and Path(file).suffix.lower() in IMAGE_SUFFIXES:
                found.append((Path(folder) / file).relative_to(root).as_posix())
    return sorted(found)
