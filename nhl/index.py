"""Binary code packing, FAISS Hamming indexes and nested funnel search.

Bit order (the one FAISS uses when it reads "the first b bits" of a code, e.g. in
`IndexBinaryHash`): bit j of a code is bit ``j % 8`` (least significant first) of byte
``j // 8``; +1 -> 1, -1 -> 0; unused high bits of the last byte are 0. Viewed as little-endian
64-bit words (`pack_words`), bit j is bit ``j % 64`` of word ``j // 64``, so the k-bit prefix of
a nested code is the low k bits of the packed words.

Missing results (fewer than k items in reach) are returned as FAISS does: id -1 and distance
``MISSING_DISTANCE`` (the int32 maximum), which keeps every row sorted by distance.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic

from nhl.atomic import write_bytes
from nhl.threads import within_torch_threads

MISSING_DISTANCE = int(np.iinfo(np.int32).max)
MAX_BUCKET_BITS = 24  # the funnel's prefix -> ids table has 2**bits entries
_PACK_CHUNK = 1 << 16  # rows packed at a time (bounds temporary memory)


# --------------------------------------------------------------------------- packing


def _as_numpy(x: Any, name: str) -> np.ndarray:
    """A numpy view of a numpy array or a (possibly CUDA) torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    return x


def check_codes(codes: Any, name: str = "codes", bits: int | None = None) -> np.ndarray:
    """`codes` as a numpy matrix [N, bits] of -1/+1 values, or a one-line ValueError."""
    arr = _as_numpy(codes, name)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix [N, bits], got shape {tuple(arr.shape)}")
    if bits is not None and arr.shape[1] != bits:
        raise ValueError(f"{name}: expected {bits} bits per code, got shape {tuple(arr.shape)}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: codes have 0 bits")
    if arr.size and not bool(((arr == 1) | (arr == -1)).all()):
        raise ValueError(f"{name}: codes must contain only -1 and +1 (map sign(0) to +1 or -1)")
    return arr


def pack_bits(mask: np.ndarray, word_bytes: int = 1) -> np.ndarray:
    """Pack a boolean matrix [N, n] into [N, ceil(n / (8 * word_bytes))] words (LSB-first).

    `word_bytes` 1 gives uint8, 8 gives uint64 (little-endian word order, as in the module doc).
    """
    n, width = mask.shape
    nbytes = -(-width // (8 * word_bytes)) * word_bytes
    out = np.zeros((n, nbytes), dtype=np.uint8)
    for start in range(0, n, _PACK_CHUNK):
        bits = np.asarray(mask[start : start + _PACK_CHUNK]) > 0
        block = np.packbits(bits, axis=1, bitorder="little")
        out[start : start + block.shape[0], : block.shape[1]] = block
    if word_bytes == 1:
        return out
    return np.ascontiguousarray(out.view(f"<u{word_bytes}").astype(f"u{word_bytes}", copy=False))


def pack_codes(codes: Any) -> np.ndarray:
    """±1 codes [N, bits] -> uint8 [N, ceil(bits / 8)], bit order as in the module doc."""
    arr = check_codes(codes)
    return pack_bits(arr > 0, 1)


def pack_words(codes: Any) -> np.ndarray:
    """±1 codes [N, bits] -> uint64 [N, ceil(bits / 64)] (the same bits as `pack_codes`)."""
    arr = check_codes(codes)
    return pack_bits(arr > 0, 8)


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of `pack_codes`: uint8 [N, ceil(bits / 8)] -> float32 ±1 codes [N, bits]."""
    packed = _as_numpy(packed, "packed")
    if packed.ndim != 2 or packed.dtype != np.uint8 or packed.shape[1] != -(-bits // 8):
        raise ValueError(
            f"packed: expected uint8 [N, {-(-bits // 8)}] for {bits} bits, got {packed.dtype} {tuple(packed.shape)}"
        )
    unpacked = np.unpackbits(packed, axis=1, count=bits, bitorder="little")
    return unpacked.astype(np.float32) * 2 - 1


@intrinsic
def _popcount64(typingctx: Any, x: Any) -> tuple[Any, Callable[..., Any]]:
    """Number of set bits of a uint64 as an int64 (LLVM ctpop: one POPCNT instruction).

    Returning a signed int keeps numba from promoting int64 + uint64 sums to float64.
    """
    sig = types.int64(types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.ctpop(args[0])

    return sig, codegen


# jitted code calls an intrinsic without `typingctx`: `popcount64(word)`; the cast says so to mypy
popcount64 = cast(Callable[[Any], int], _popcount64)


# --------------------------------------------------------------------------- FAISS index

INDEX_KINDS: dict[str, Callable[..., Any]] = {}


def register_index(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a builder `f(d, **params) -> faiss.IndexBinary` under `name`."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        INDEX_KINDS[name] = fn
        return fn

    return wrap


@register_index("flat")
def _build_flat(d: int) -> Any:
    """Exact search: a brute-force popcount scan."""
    import faiss

    return faiss.IndexBinaryFlat(d)


@register_index("ivf")
def _build_ivf(d: int, nlist: int = 1024, nprobe: int = 16) -> Any:
    """Inverted lists over binary k-means centroids (trained on the first `add`)."""
    import faiss

    index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(d), d, nlist)
    index.nprobe = nprobe
    return index


@register_index("hash")
def _build_hash(d: int, b: int = 16, nflip: int = 2) -> Any:
    """Buckets on the first `b` bits, probing buckets up to `nflip` flipped bits away."""
    import faiss

    index = faiss.IndexBinaryHash(d, b)
    index.nflip = nflip
    return index


@register_index("multihash")
def _build_multihash(d: int, nhash: int = 4, b: int = 16, nflip: int = 1) -> Any:
    """`nhash` hash tables on consecutive `b`-bit slices (multi-index hashing)."""
    import faiss

    index = faiss.IndexBinaryMultiHash(d, nhash, b)
    index.nflip = nflip
    return index


def _build_index(kind: str, bits: int, params: dict[str, Any]) -> Any:
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind {kind!r} unknown; known: {sorted(INDEX_KINDS)}")
    try:
        return INDEX_KINDS[kind](8 * -(-bits // 8), **params)
    except TypeError as err:
        raise ValueError(f"index kind {kind!r}: bad parameters {params}: {err}") from None


def _npz_bytes(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _load_npz(path: str | os.PathLike[str], fmt: str) -> dict[str, np.ndarray]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such index file")
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    if str(arrays.get("format", "")) != fmt:
        raise ValueError(f"{path}: not a saved {fmt} (format field {arrays.get('format')!r})")
    return arrays


def _empty_result(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.full((nq, k), MISSING_DISTANCE, dtype=np.int32), np.full((nq, k), -1, dtype=np.int64))


class HashIndex:
    """A Hamming-distance index over ±1 codes, backed by a FAISS binary index.

    Kinds (registry `INDEX_KINDS`): "flat" (exact), "ivf" (`nlist`, `nprobe`; trained on the
    first `add`), "hash" (`b`, `nflip`) and "multihash" (`nhash`, `b`, `nflip`). Codes whose
    length is not a multiple of 8 are zero-padded, which leaves distances unchanged.
    """

    def __init__(self, bits: int, kind: str = "flat", **params: Any) -> None:
        if int(bits) <= 0:
            raise ValueError(f"bits: expected a positive number of bits, got {bits}")
        self.bits = int(bits)
        self.kind = kind
        self.params = dict(params)
        self._index = _build_index(kind, self.bits, self.params)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    def add(self, codes: Any) -> HashIndex:
        """Add ±1 codes [N, bits]; their ids continue from the current size."""
        packed = pack_codes(check_codes(codes, "codes", self.bits))
        if not len(packed):
            return self
        if not self._index.is_trained:
            nlist = int(self.params.get("nlist", 1024))
            if len(packed) < nlist:
                raise ValueError(
                    f"codes: kind {self.kind!r} trains on the first add and needs at "
                    f"least nlist={nlist} codes, got {len(packed)}"
                )
            self._index.train(packed)
        self._index.add(packed)
        return self

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest codes of each query: (distances int32 [Q, k], ids int64 [Q, k]).

        Rows are sorted by distance; missing results have id -1 and `MISSING_DISTANCE`.
        """
        if int(k) <= 0:
            raise ValueError(f"k: expected a positive number of neighbours, got {k}")
        packed = pack_codes(check_codes(queries, "queries", self.bits))
        if self.ntotal == 0 or not len(packed):
            return _empty_result(len(packed), int(k))
        distances, ids = self._index.search(packed, int(k))
        return distances.astype(np.int32, copy=False), ids.astype(np.int64, copy=False)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index atomically to one .npz file (FAISS bytes + bits/kind/params)."""
        import faiss

        blob = faiss.serialize_index_binary(self._index)
        write_bytes(
            path,
            _npz_bytes(
                format=np.array("nhl.HashIndex"),
                bits=np.array(self.bits),
                kind=np.array(self.kind),
                params=np.array(json.dumps(self.params)),
                index=np.asarray(blob, dtype=np.uint8),
            ),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HashIndex:
        """Read an index written by `save`."""
        import faiss

        data = _load_npz(path, "nhl.HashIndex")
        self = cls.__new__(cls)
        self.bits, self.kind = int(data["bits"]), str(data["kind"])
        self.params = json.loads(str(data["params"]))
        self._index = faiss.deserialize_index_binary(data["index"])
        for name in ("nprobe", "nflip"):  # search-time settings, set again to be sure
            if name in self.params:
                setattr(self._index, name, int(self.params[name]))
        return self


# --------------------------------------------------------------------------- funnel search


@numba.njit(cache=True)
def _prefix_distance(q: np.ndarray, x: np.ndarray, nfull: int, last_mask: np.uint64) -> int:
    """Hamming distance between the first (64 * nfull + popcount(last_mask)) bits of two codes."""
    d = 0
    for w in range(nfull):
        d += popcount64(q[w] ^ x[w])
    if last_mask:
        d += popcount64((q[nfull] ^ x[nfull]) & last_mask)
    return d


@numba.njit(cache=True)
def _next_combination(m: np.int64) -> np.int64:
    """Gosper's hack: the next larger integer with the same number of set bits."""
    c = m & -m
    r = m + c
    return (((r ^ m) >> 2) // c) | r


@numba.njit(cache=True)
def _gather(
    key: int | np.int64,
    bucket_bits: int | np.int64,
    order: np.ndarray,
    offsets: np.ndarray,
    pool: int,
    max_radius: int | np.int64,
) -> np.ndarray:
    """Ids in buckets within growing Hamming radius of `key` until at least `pool` are found."""
    nbuckets = np.int64(1) << bucket_bits
    total = 0
    radius_used = -1
    for r in range(max_radius + 1):
        m = (np.int64(1) << r) - 1
        while m < nbuckets:
            b = key ^ m
            total += offsets[b + 1] - offsets[b]
            if r == 0:
                break
            m = _next_combination(m)
        radius_used = r
        if total >= pool:
            break
    out = np.empty(total, np.int64)
    n = 0
    for r in range(radius_used + 1):
        m = (np.int64(1) << r) - 1
        while m < nbuckets:
            b = key ^ m
            for j in range(offsets[b], offsets[b + 1]):
                out[n] = order[j]
                n += 1
            if r == 0:
                break
            m = _next_combination(m)
    return out


@numba.njit(cache=True)
def _funnel_one(
    qword: np.ndarray,
    dwords: np.ndarray,
    order: np.ndarray,
    offsets: np.ndarray,
    bucket_bits: int | np.int64,
    nfull: np.ndarray,
    last_masks: np.ndarray,
    keeps: np.ndarray,
    max_radius: int | np.int64,
) -> np.ndarray:
    """One query through the funnel: sorted keys distance * N + id of the final survivors."""
    n_db = np.int64(dwords.shape[0])
    key = np.int64(qword[0] & np.uint64((np.int64(1) << bucket_bits) - 1))
    cands = _gather(key, bucket_bits, order, offsets, keeps[0], max_radius)
    sortkey = np.empty(0, np.int64)
    for s in range(nfull.shape[0]):
        n = cands.shape[0]
        sortkey = np.empty(n, np.int64)
        for j in range(n):
            d = _prefix_distance(qword, dwords[cands[j]], nfull[s], last_masks[s])
            sortkey[j] = d * n_db + cands[j]  # ties broken by database order
        keep = keeps[s + 1]
        if n > keep:
            sortkey = np.partition(sortkey, keep - 1)[:keep]
        cands = sortkey % n_db
    return np.sort(sortkey)


@within_torch_threads
@numba.njit(parallel=True, cache=True)
def _funnel_kernel(
    qwords: np.ndarray,
    dwords: np.ndarray,
    order: np.ndarray,
    offsets: np.ndarray,
    bucket_bits: int | np.int64,
    nfull: np.ndarray,
    last_masks: np.ndarray,
    keeps: np.ndarray,
    max_radius: int | np.int64,
    out_d: np.ndarray,
    out_i: np.ndarray,
) -> None:
    n_db = np.int64(dwords.shape[0])
    for q in numba.prange(qwords.shape[0]):
        # the per-query work lives in its own function: numba's parfor pass must not touch the
        # arrays it reallocates stage by stage
        best = _funnel_one(qwords[q], dwords, order, offsets, bucket_bits, nfull, last_masks, keeps, max_radius)
        for j in range(best.shape[0]):
            out_d[q, j] = best[j] // n_db
            out_i[q, j] = best[j] % n_db


class FunnelIndex:
    """Coarse-to-fine search over nested codes: bucket lookup on a short prefix, then re-ranking.

    Built from ±1 codes [N, k_max] whose k-bit prefixes are the k-bit codes. `stages` are
    increasing prefix lengths (the first at most `MAX_BUCKET_BITS`, the last at most k_max) and
    `pools[i]` is the size of the candidate pool handed from stage i to stage i+1
    (``len(pools) == len(stages) - 1``):

    1. stage 0 looks up the query's `stages[0]`-bit prefix in a prefix -> ids table and widens
       the Hamming radius (0, 1, 2, ... up to `max_radius`) until at least `pools[0]` ids are
       found; whole radius shells are kept, so no tie at stage 0 is cut arbitrarily;
    2. stage i >= 1 computes distances on the `stages[i]`-bit prefix and keeps the `pools[i]`
       nearest (the final stage keeps k), ties broken by database order.

    `search` returns the same structure as exact search: (distances int32 [Q, k] at
    `stages[-1]` bits, ids int64 [Q, k]), rows sorted by (distance, id), missing results padded
    with id -1 and `MISSING_DISTANCE`. With pools as large as the database it equals exact
    search with ties broken by database order.
    """

    def __init__(self, codes: Any, stages: Sequence[int], pools: Sequence[int], max_radius: int | None = None) -> None:
        stages = [int(s) for s in stages]
        pools = [int(p) for p in pools]
        if len(stages) < 2 or any(b <= a for a, b in pairwise(stages)) or stages[0] <= 0:
            raise ValueError(f"stages: expected at least 2 increasing prefix lengths, got {stages}")
        if stages[0] > MAX_BUCKET_BITS:
            raise ValueError(f"stages: the first (bucket) length must be <= {MAX_BUCKET_BITS}, got {stages[0]}")
        if len(pools) != len(stages) - 1 or min(pools) <= 0:
            raise ValueError(
                f"pools: expected {len(stages) - 1} positive sizes (one per stage transition), got {pools}"
            )
        arr = check_codes(codes, "codes")
        if arr.shape[1] < stages[-1]:
            raise ValueError(f"codes: have {arr.shape[1]} bits, stages need {stages[-1]}")
        self.stages, self.pools = stages, pools
        self.max_radius = stages[0] if max_radius is None else int(max_radius)
        if not 0 <= self.max_radius <= stages[0]:
            raise ValueError(f"max_radius: expected 0..{stages[0]}, got {max_radius}")
        self._words = pack_bits(arr[:, : stages[-1]] > 0, 8)
        self._build_table()

    def _build_table(self) -> None:
        bucket_bits = self.stages[0]
        keys = (self._words[:, 0] & np.uint64((1 << bucket_bits) - 1)).astype(np.int64)
        self._order = np.argsort(keys, kind="stable").astype(np.int64)
        counts = np.bincount(keys, minlength=1 << bucket_bits)
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def ntotal(self) -> int:
        return int(self._words.shape[0])

    def __len__(self) -> int:
        return self.ntotal

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest codes by `stages[-1]`-bit distance, found through the funnel."""
        if int(k) <= 0:
            raise ValueError(f"k: expected a positive number of neighbours, got {k}")
        k = int(k)
        arr = check_codes(queries, "queries")
        if arr.shape[1] < self.stages[-1]:
            raise ValueError(f"queries: have {arr.shape[1]} bits, stages need {self.stages[-1]}")
        out_d, out_i = _empty_result(arr.shape[0], k)
        if self.ntotal == 0 or not len(arr):
            return out_d, out_i
        qwords = pack_bits(arr[:, : self.stages[-1]] > 0, 8)
        stage_lens = np.array(self.stages[1:], dtype=np.int64)
        nfull = stage_lens // 64
        last_masks = np.array([(1 << int(s % 64)) - 1 for s in stage_lens], dtype=np.uint64)
        keeps = np.array(self.pools + [k], dtype=np.int64)
        _funnel_kernel(
            qwords,
            self._words,
            self._order,
            self._offsets,
            np.int64(self.stages[0]),
            nfull,
            last_masks,
            keeps,
            np.int64(self.max_radius),
            out_d,
            out_i,
        )
        return out_d, out_i

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index atomically to one .npz file."""
        write_bytes(
            path,
            _npz_bytes(
                format=np.array("nhl.FunnelIndex"),
                words=self._words,
                stages=np.array(self.stages),
                pools=np.array(self.pools),
                max_radius=np.array(self.max_radius),
            ),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FunnelIndex:
        """Read an index written by `save`."""
        data = _load_npz(path, "nhl.FunnelIndex")
        self = cls.__new__(cls)
        self.stages = [int(s) for s in data["stages"]]
        self.pools = [int(p) for p in data["pools"]]
        self.max_radius = int(data["max_radius"])
        self._words = np.ascontiguousarray(data["words"], dtype=np.uint64)
        self._build_table()
        return self
