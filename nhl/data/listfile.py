"""List files of the hashing literature (NUS-WIDE, MS-COCO, ImageNet-100).

One image per line: a path relative to the image root, then either a multi-hot vector
(`images/a.jpg 0 1 0 ... 1`) or a single label index (`images/a.jpg 7`). A file uses one form
throughout. Every mistake is reported as one line naming the file and line number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nhl.data.paths import inside_root


def read_list_file(
    path: str | Path, num_classes: int | None = None, root: str | Path | None = None
) -> tuple[list[str], np.ndarray]:
    """Parse a list file into (relative paths, float32 multi-hot labels `[N, C]`).

    `num_classes` is required to match the vector width (multi-hot form) or to bound the indices
    (index form, where it defaults to the largest index + 1). An item needs at least one label.
    With `root`, a path that is absolute or leads outside it (`..`, a symlink) is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file {path} not found")
    paths: list[str] = []
    rows: list[list[int]] = []
    width: int | None = None  # tokens per line after the path, fixed by the first line
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{path} line {number}"
        if len(tokens) < 2:
            raise ValueError(f"{where}: {tokens[0]!r} has no label")
        values = []
        for token in tokens[1:]:
            if not token.isdigit():
                raise ValueError(f"{where}: label {token!r} is not a non-negative integer")
            values.append(int(token))
        if width is None:
            width = len(values)
        elif len(values) != width:
            raise ValueError(f"{where}: {len(values)} label values, expected {width} as on the first line")
        if width > 1 and any(v > 1 for v in values):
            raise ValueError(f"{where}: a multi-hot vector holds only 0 and 1, got {max(values)}")
        if width > 1 and not any(values):
            raise ValueError(f"{where}: no label is set")
        if width == 1 and num_classes is not None and values[0] >= num_classes:
            raise ValueError(f"{where}: label {values[0]} is out of range for {num_classes} classes")
        if root is not None:
            inside_root(root, tokens[0], where)
        paths.append(tokens[0])
        rows.append(values)
    if not paths:
        raise ValueError(f"list file {path} has no entries")
    assert width is not None  # set by the first entry
    return paths, _to_multi_hot(path, rows, width, num_classes)


def _to_multi_hot(path: Path, rows: list[list[int]], width: int, num_classes: int | None) -> np.ndarray:
    values = np.asarray(rows, dtype=np.int64)
    if width > 1:
        if num_classes is not None and width != num_classes:
            raise ValueError(f"list file {path}: {width} label columns, expected num_classes={num_classes}")
        return values.astype(np.float32)
    indices = values[:, 0]
    classes = int(indices.max()) + 1 if num_classes is None else num_classes
    out = np.zeros((len(indices), classes), dtype=np.float32)
    out[np.arange(len(indices)), indices] = 1.0
    return out
