"""Paths named by data files (list files, CSVs, manifests) must stay inside their data root.

A list file that names `../../etc/passwd`, an absolute path, or a symlink leading out of the
root would make us read files the user never meant to hand over; `inside_root` refuses all
three with a one-line error naming where the entry came from.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath


def inside_root(root: str | os.PathLike, entry: str | os.PathLike, where: str) -> Path:
    """`root / entry`, or a one-line ValueError when `entry` is absolute or resolves (symlinks
    followed) outside `root`. `where` names the entry's origin, e.g. "list.txt line 7"."""
    root = Path(root)
    text = str(entry)
    if (
        not text
        or PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).is_absolute()
        or PureWindowsPath(text).drive
    ):
        raise ValueError(f"{where}: path {text!r} must be relative to the data root {root}")
    path = root / text
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{where}: path {text!r} leads outside the data root {root}")
    return path
