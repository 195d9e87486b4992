"""Convert a trusted model file written by an older nhl into one that loads safely.

`load_hasher` reads files with `torch.load(weights_only=True)` and refuses any pickled object
other than tensors and plain values. A file from an older nhl may hold numpy scalars in its
metadata; this command, run by someone who trusts the file, reads it with full unpickling once
and writes it back with plain values only:

    python -m nhl.models.convert models/old.pt [--output models/new.pt]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def plain(value: Any) -> Any:
    """`value` with numpy scalars and arrays turned into Python numbers and lists, recursively."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def convert(source: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """Read `source` trusting its pickles, write plain values to `output` (default: in place, atomically)."""
    from nhl.models.hasher import MODEL_FORMAT, load_hasher

    source = Path(source)
    output = Path(output) if output is not None else source
    payload = torch.load(source, map_location="cpu", weights_only=False)  # the caller trusts this file
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"model file {source}: not an nhl model (expected format {MODEL_FORMAT!r})")
    payload = {key: plain(value) if key != "state_dict" else dict(value) for key, value in payload.items()}
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=output.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        load_hasher(tmp)  # the result must load safely before it replaces anything
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nhl.models.convert", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model file you trust (it is unpickled in full)")
    parser.add_argument("--output", help="where to write the converted file (default: in place)")
    args = parser.parse_args(argv)
    try:
        path = convert(args.model, args.output)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
