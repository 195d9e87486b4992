"""Source `imagecsv`: a CSV file with an image path column and a label column.

    path,label
    photos/0001.jpg,cat|outdoor
    photos/0002.jpg,dog

Paths are relative to the data root (and must stay inside it); the CSV file itself is named
relative to the root too. Labels are names; several per image are joined by `separator`
(multi-label). The vocabulary is the sorted set of names, recorded as the manifest's
`class_names`. Images are read as RGB and resized to `size x size` for the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nhl.data.filesource import DEFAULT_SIZE, check_files, check_size, files_hash
from nhl.data.paths import inside_root
from nhl.data.sources import SourceData, register_source


@register_source("imagecsv")
def imagecsv(
    root: str | Path | None = None,
    csv: str | None = None,
    path_column: str = "path",
    label_column: str = "label",
    separator: str = "|",
    allow_missing: bool = False,
    size: int = DEFAULT_SIZE,
) -> SourceData:
    """Images and labels listed in `root/csv`; each bad row is a one-line error naming its line."""
    if root is None or csv is None:
        raise ValueError("dataset 'imagecsv' needs root=<image directory> and csv=<CSV file under root>")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image root {root} not found")
    if not isinstance(separator, str) or not separator:
        raise ValueError(f"data.options.separator: expected a non-empty string, got {separator!r}")
    file = inside_root(root, csv, "data.options.csv")
    if not file.is_file():
        raise FileNotFoundError(f"CSV file {file} not found")
    try:
        table = pd.read_csv(file, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"CSV file {file}: cannot be parsed ({str(err).strip().splitlines()[0]})") from None
    for column in (path_column, label_column):
        if column not in table.columns:
            raise ValueError(f"CSV file {file}: no column {column!r}; columns are {list(table.columns)}")
    if table.empty:
        raise ValueError(f"CSV file {file} has no rows")
    paths: list[str] = []
    names: list[list[str]] = []
    origins: list[str] = []
    seen: dict[str, int] = {}
    for number, (rel, text) in enumerate(zip(table[path_column], table[label_column], strict=True), start=2):
        where = f"{file} line {number}"
        rel = rel.strip()
        inside_root(root, rel, where)
        if rel in seen:
            raise ValueError(f"{where}: image {rel} is listed twice (first on line {seen[rel]})")
        labels = sorted({name.strip() for name in text.split(separator) if name.strip()})
        if not labels:
            raise ValueError(f"{where}: image {rel} has no label")
        seen[rel] = number
        paths.append(rel)
        names.append(labels)
        origins.append(where)
    vocabulary = sorted({name for row in names for name in row})
    index = {name: i for i, name in enumerate(vocabulary)}
    multi_hot = np.zeros((len(paths), len(vocabulary)), dtype=np.float32)
    for row, labels in enumerate(names):
        multi_hot[row, [index[name] for name in labels]] = 1.0
    keep, skipped = check_files(root, paths, origins, allow_missing)
    kept = [paths[i] for i in keep]
    return SourceData(
        "imagecsv",
        multi_hot[keep],
        tuple(vocabulary),
        paths=tuple(kept),
        root=str(root),
        missing=tuple(skipped),
        channels=3,
        image_size=check_size(size),
        images_hash=files_hash(root, kept),
    )
