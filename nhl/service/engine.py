"""The served state: a model, its database codes and indexes, built aside and swapped in whole.

A `Snapshot` is immutable once built: a request takes the engine's current snapshot once and
answers from it alone, so a reload running meanwhile can never hand it half of a new index.
`Engine.reload` builds the next snapshot off to the side (the old one keeps serving) and swaps
it in with a single assignment. The database is encoded once per model: codes are cached on
disk as nhl codes files keyed by the model's identity (registry version and weights hash) and
the manifest's content hash, so a restart on the same champion and data skips encoding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nhl.codes import Codes, encode_batches, load_codes, save_codes
from nhl.index import HashIndex
from nhl.serving import model_version, resolve_model, version_of

log = logging.getLogger("nhl.serve")


class RequestError(ValueError):
    """A bad request: `status` (4xx) and a one-line message naming the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Source:
    """What the service serves (fixed for its lifetime; the model behind `spec` may move)."""

    spec: str
    manifest: Path | None = None  # split manifest: database and query items, labels, thumbnails
    codes: Path | None = None  # a database codes file instead of encoding the manifest's database
    images: Path | None = None  # raw directory / image root (default: as recorded in the manifest)
    cache_dir: Path = Path(".cache/serve")


class ItemTable:
    """Item ids -> rows without a Python dict (a 10M-code database would need ~1 GB for one)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]

    def row(self, item_id: int) -> int | None:
        pos = int(np.searchsorted(self._sorted, item_id))
        if pos < len(self._sorted) and self._sorted[pos] == item_id:
            return int(self._order[pos])
        return None


@dataclass
class Split:
    """Codes of one set of items, their lookup table and (when known) their images."""

    codes: Codes
    table: ItemTable
    images: Any = None  # a ManifestDataset, or None (codes-file database)

    def image(self, row: int) -> np.ndarray:
        """uint8 pixels [H, W] or [H, W, 3] of the item at `row`."""
        pixels = (self.images[row][0].clamp(0, 1) * 255).round().numpy().astype(np.uint8)
        return pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


@dataclass
class Snapshot:
    """Everything one answer needs; never changed after `build_snapshot` returns."""

    model: Any
    info: dict[str, Any]
    version: str
    lengths: list[int]
    database: Split
    queries: Split | None
    indexes: dict[int, HashIndex]
    image_shape: tuple[int, int, int] | None  # [C, H, W] uploads are resized to; None: no uploads
    build_seconds: float
    built_at: float = field(default_factory=time.time)

    @property
    def size(self) -> int:
        return len(self.database.codes)

    def check(self, bits: int, k: int) -> None:
        if bits not in self.lengths:
            raise RequestError(400, f"bits: {bits} is not a code length of this model (lengths {self.lengths})")
        if not 1 <= k <= self.size:
            raise RequestError(400, f"k: expected 1..{self.size} (the database size), got {k}")

    def item(self, item_id: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        """(±1 code [1, k_max], labels or None, split) of a query item, else a database item."""
        for split, name in ((self.queries, "query"), (self.database, "database")):
            if split is None:
                continue
            row = split.table.row(item_id)
            if row is not None:
                labels = None if split.codes.labels is None else split.codes.labels[row]
                return _row_codes(split.codes, row), labels, name
        raise RequestError(404, f"item: no item with id {item_id} in the query split or the database")

    def encode(self, image: Any) -> np.ndarray:
        """The ±1 code [1, k_max] of one image tensor [C, H, W] in [0, 1]."""
        packed = encode_batches(self.model, [image.unsqueeze(0)])
        return Codes(packed, np.zeros(1, np.int64), self.database.codes.bits, {}).codes()

    def search(self, code: np.ndarray, labels: np.ndarray | None, bits: int, k: int) -> dict[str, Any]:
        """Top-k of one query code at `bits`: results with distances and relevance, and the time."""
        self.check(bits, k)
        start = time.perf_counter()
        distances, rows = self.indexes[bits].search(np.ascontiguousarray(code[:, :bits]), k)
        seconds = time.perf_counter() - start
        db = self.database.codes
        results = []
        for rank, (row, dist) in enumerate(zip(rows[0], distances[0], strict=True), 1):
            if row < 0:
                break
            hit: dict[str, Any] = {"rank": rank, "id": int(db.ids[row]), "distance": int(dist)}
            if labels is not None and db.labels is not None:
                hit["relevant"] = bool(float(labels @ db.labels[row]) > 0)
            results.append(hit)
        return {"bits": bits, "k": k, "search_ms": round(seconds * 1000, 3), "results": results}

    def describe(self) -> dict[str, Any]:
        info = self.info
        return {
            "model": info.get("model_id"),
            "registered_model": info.get("registered_model"),
            "version": info.get("version"),
            "model_uri": info.get("path"),
            "sha256": info.get("sha256"),
            "lengths": self.lengths,
            "database_size": self.size,
            "query_items": 0 if self.queries is None else len(self.queries.codes),
            "built_seconds": round(self.build_seconds, 3),
        }


def _row_codes(codes: Codes, row: int) -> np.ndarray:
    """One row's ±1 code without unpacking the whole (possibly 10M-row) matrix."""
    bits01 = np.unpackbits(codes.packed[row : row + 1], axis=1, count=codes.bits, bitorder="little")
    return bits01.astype(np.int8) * 2 - 1


def cache_key(info: dict[str, Any], version: str, manifest_hash: str, split: str) -> str:
    """Hex key of (model identity, manifest content hash, split): one cached codes file each."""
    blob = json.dumps(
        {
            "sha256": info.get("sha256"),
            "version": version,
            "manifest": manifest_hash,
            "split": split,
            "lengths": list(info.get("lengths", [])),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def manifest_split(model: Any, info: dict[str, Any], version: str, source: Source, split: str) -> Split:
    """One split of the manifest, encoded with `model` (or read from the codes cache)."""
    from torch.utils.data import DataLoader

    from nhl.data.dataset import load_split
    from nhl.data.manifest import read_manifest

    assert source.manifest is not None, "build_snapshot encodes manifest splits only for a Source with a manifest"
    _, meta = read_manifest(source.manifest)
    dataset = load_split(source.manifest, split, source=source.images, channels=model.spec.in_channels)
    if len(dataset) == 0:
        raise ValueError(f"manifest {source.manifest}: split {split!r} has no items")
    key = cache_key(info, version, str(meta.get("content_hash")), split)
    path = Path(source.cache_dir) / f"{info.get('model_id', 'model')}-{split}-{key[:16]}.npz"
    codes = None
    if path.is_file():
        try:
            codes = load_codes(path)
            if len(codes) != len(dataset) or not np.array_equal(codes.ids, dataset.item_ids):
                codes = None
        except (ValueError, OSError) as err:
            log.warning("codes cache %s unreadable (%s): encoding again", path, err)
            codes = None
    if codes is None:
        loader = DataLoader(dataset, batch_size=256, shuffle=False)
        packed = encode_batches(model, (images for images, *_ in loader))
        codes = Codes(packed, dataset.item_ids, info["lengths"][-1], info, labels=dataset.labels.numpy())
        save_codes(path, codes)
    return Split(codes, ItemTable(codes.ids), dataset)


def build_snapshot(source: Source) -> Snapshot:
    """Load the model `source.spec` names now, encode (or read) the database, build the indexes."""
    start = time.perf_counter()
    model, info = resolve_model(source.spec)
    version = version_of(info)
    lengths = [int(k) for k in info["lengths"]]
    queries = None
    if source.manifest is not None:
        queries = manifest_split(model, info, version, source, "query")
    if source.codes is not None:
        codes = load_codes(source.codes)
        if codes.bits != lengths[-1]:
            raise ValueError(f"--codes {source.codes}: {codes.bits}-bit codes, but the model gives {lengths[-1]} bits")
        database = Split(codes, ItemTable(codes.ids))
    elif source.manifest is not None:
        database = manifest_split(model, info, version, source, "database")
    else:
        raise ValueError("--manifest: needed to encode the database (or pass --codes)")
    indexes = {k: HashIndex(k, "flat").add(database.codes.codes(k)) for k in lengths}
    shape: tuple[int, int, int] | None = None
    if database.images is not None:
        channels, height, width = (int(s) for s in database.images[0][0].shape)  # an item's image is [C, H, W]
        shape = (channels, height, width)
    elif model.spec.input_size is not None:
        shape = (model.spec.in_channels, model.spec.input_size, model.spec.input_size)
    return Snapshot(model, info, version, lengths, database, queries, indexes, shape, time.perf_counter() - start)


class Engine:
    """Holds the current snapshot; `reload` (or the poller) swaps in a new one when the spec moves."""

    def __init__(self, source: Source, poll_seconds: float = 0.0) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._current = build_snapshot(source)  # a bad spec fails here, at start-up
        self.reloads = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._poller = None
        if poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll, args=(poll_seconds,), daemon=True, name="nhl-serve-poll")
            self._poller.start()

    @property
    def snapshot(self) -> Snapshot:
        return self._current

    def reload(self, force: bool = False) -> bool:
        """Build the model the spec names now, if it changed (or `force`), and swap it in."""
        with self._lock:
            if not force and model_version(self.source.spec) == self._current.version:
                return False
            snapshot = build_snapshot(self.source)  # the old snapshot serves meanwhile
            changed = snapshot.version != self._current.version
            self._current = snapshot  # one assignment: the swap is atomic
            self.reloads += 1
            log.info("serving %s (%s) after a reload", snapshot.info.get("model_id"), snapshot.version)
            return changed or force

    def _poll(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.reload()
                self.last_error = None
            except Exception as err:  # noqa: BLE001  (any failure: keep serving the old model, say why in /health)
                self.last_error = f"{type(err).__name__}: {err}".splitlines()[0]
                log.warning("reload failed, still serving %s: %s", self._current.version, self.last_error)

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)


def default_cache_dir() -> Path:
    return Path(os.environ.get("NHL_SERVE_CACHE", ".cache/serve"))
