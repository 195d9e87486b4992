"""Codes files: packed binary codes of a database, their ids and the model that made them.

A codes file is one `.npz` (no pickles) holding

- `packed`: uint8 `[N, ceil(bits / 8)]`, the bit order of `nhl.index.pack_codes`;
- `ids`: int64 `[N]`, the items' ids (manifest `item_id`, or positions for image folders);
- `bits`: the code length (a nested model stores its longest code; the k-bit code is the prefix);
- `model`: JSON of where the codes came from (`model_id`, `path`, `lengths`, `in_channels`,
  `sha256` of the model file), so a search can encode queries with the same model and refuse
  codes of another width;
- optional `names` (image paths, str `[N]`) and `labels` (float32 multi-hot `[N, C]`, or int64
  class ids `[N]` for single-label data: `nhl.labels`).

It is written atomically (a reader sees the old file or the whole new one). This layer takes a
model and returns codes; `model_from_file` loads a model file, and `nhl.serving.resolve_model`
(above this layer and the registry) also resolves registry names such as `champion`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nhl.atomic import write_bytes
from nhl.index import check_codes, pack_codes

CODES_FORMAT = "nhl-codes/1"


@dataclass
class Codes:
    """The content of a codes file (see the module doc)."""

    packed: np.ndarray
    ids: np.ndarray
    bits: int
    model: dict[str, Any]
    names: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.bits = int(self.bits)
        if self.bits <= 0:
            raise ValueError(f"bits: expected a positive code length, got {self.bits}")
        width = -(-self.bits // 8)
        self.packed = np.asarray(self.packed)
        if self.packed.dtype != np.uint8 or self.packed.ndim != 2 or self.packed.shape[1] != width:
            raise ValueError(
                f"packed: expected uint8 [N, {width}] for {self.bits}-bit codes, "
                f"got {self.packed.dtype} {tuple(self.packed.shape)}"
            )
        n = self.packed.shape[0]
        self.ids = np.asarray(self.ids)
        if self.ids.shape != (n,) or not np.issubdtype(self.ids.dtype, np.integer):
            raise ValueError(f"ids: expected {n} integer ids, got {self.ids.dtype} {tuple(self.ids.shape)}")
        self.ids = self.ids.astype(np.int64, copy=False)
        if self.names is not None:
            self.names = np.asarray(self.names, dtype=str)
            if self.names.shape != (n,):
                raise ValueError(f"names: expected {n} names, got shape {tuple(self.names.shape)}")
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.ndim == 1 and labels.shape[0] == n and np.issubdtype(labels.dtype, np.integer):
                self.labels = labels.astype(np.int64, copy=False)  # class ids (nhl.labels)
            else:
                self.labels = labels.astype(np.float32, copy=False)
                if self.labels.ndim != 2 or self.labels.shape[0] != n:
                    raise ValueError(
                        f"labels: expected class ids [{n}] or a multi-hot matrix [{n}, C], "
                        f"got shape {tuple(self.labels.shape)}"
                    )
        self.model = dict(self.model)

    def __len__(self) -> int:
        return int(self.packed.shape[0])

    @property
    def lengths(self) -> list[int]:
        """The nested lengths of the model that made the codes (all prefixes if unknown)."""
        return [int(k) for k in self.model.get("lengths") or [self.bits]]

    def codes(self, k: int | None = None) -> np.ndarray:
        """±1 codes int8 `[N, k]`: the k-bit prefixes (default: the whole codes)."""
        k = self.bits if k is None else int(k)
        if not 0 < k <= self.bits:
            raise ValueError(f"bits: expected a prefix length in 1..{self.bits}, got {k}")
        bits01 = np.unpackbits(self.packed, axis=1, count=k, bitorder="little")  # the bit order of pack_codes
        return (bits01.view(np.int8) * np.int8(2) - np.int8(1)).astype(np.int8, copy=False)

    @classmethod
    def from_codes(
        cls,
        codes: Any,
        ids: Any | None = None,
        model: dict[str, Any] | None = None,
        names: Any | None = None,
        labels: Any | None = None,
    ) -> Codes:
        """Pack ±1 codes `[N, bits]`; `ids` default to positions 0..N-1."""
        arr = check_codes(codes)
        ids = np.arange(arr.shape[0]) if ids is None else ids
        return cls(pack_codes(arr), ids, arr.shape[1], model or {}, names, labels)


def save_codes(path: str | os.PathLike[str], codes: Codes) -> None:
    """Write `codes` to `path` (.npz) atomically."""
    arrays: dict[str, Any] = {
        "format": np.array(CODES_FORMAT),
        "packed": codes.packed,
        "ids": codes.ids,
        "bits": np.array(codes.bits),
        "model": np.array(json.dumps(codes.model, sort_keys=True)),
    }
    if codes.names is not None:
        arrays["names"] = codes.names
    if codes.labels is not None:
        arrays["labels"] = codes.labels
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())


def load_codes(path: str | os.PathLike[str]) -> Codes:
    """Read a codes file; a missing file, another format or a bad field is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"codes file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as err:  # noqa: BLE001 - any failure (not a zip, truncated) becomes the one-line error
        raise ValueError(f"codes file {path}: cannot be read as an .npz codes file ({type(err).__name__})") from None
    if str(arrays.get("format", "")) != CODES_FORMAT:
        raise ValueError(f"codes file {path}: format field is {arrays.get('format')!r}, expected {CODES_FORMAT!r}")
    missing = [key for key in ("packed", "ids", "bits", "model") if key not in arrays]
    if missing:
        raise ValueError(f"codes file {path}: missing field(s) {missing}")
    try:
        model = json.loads(str(arrays["model"]))
        return Codes(
            arrays["packed"], arrays["ids"], int(arrays["bits"]), model, arrays.get("names"), arrays.get("labels")
        )
    except (ValueError, TypeError) as err:
        raise ValueError(f"codes file {path}: {err}") from None


# --------------------------------------------------------------------------- models


def resolve_model_path(spec: str | os.PathLike[str]) -> Path:
    """The model file a `--model` value names (registry aliases are handled by `nhl.serving.resolve_model`)."""
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    return path


def model_from_file(path: str | os.PathLike[str], map_location: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Load a model file (`load_hasher`: tensors and plain values only): (Hasher in eval mode, model
    info for codes files). Registry names (`champion`, `models:/...`) are resolved above this
    layer, by `nhl.serving.resolve_model`."""
    from nhl.models.hasher import load_hasher

    path = resolve_model_path(path)
    model, extra = load_hasher(path, map_location=map_location)
    info = {
        "spec": str(path),
        "path": str(path.resolve()),
        "model_id": extra.get("model_id") or path.stem,
        "lengths": model.lengths,
        "in_channels": model.spec.in_channels,
        "input_size": model.spec.input_size,
        "sha256": file_sha256(path),
    }
    return model, info


def file_sha256(path: str | os.PathLike[str]) -> str:
    """`sha256:<hex>` of a file's bytes (identifies the exact model that made a codes file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def encode_batches(model: Any, batches: Iterable[Any]) -> np.ndarray:
    """Encode batches of [0, 1] images `[B, C, H, W]` with `model.encode` (eval mode, no
    gradients) and pack each batch at once, so only packed codes are kept: uint8 `[N, bytes]`."""
    import torch

    packed = []
    with torch.inference_mode():
        for images in batches:
            packed.append(pack_codes(model.encode(images).cpu().numpy()))
    if not packed:
        raise ValueError("encode: no images to encode")
    return np.concatenate(packed)
