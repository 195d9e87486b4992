"""Retrieval metrics for ±1 hash codes: mAP@k, P@N, P@Hamming-radius, PR curve, per-length tables.

Conventions (shared by every function):

- codes are {-1, +1} matrices [N, bits]; labels are multi-hot {0, 1} matrices [N, C], class ids
  [N] (single-label) or scipy sparse [N, C] (see `nhl.labels`); an item is relevant to a query
  when they share at least one label (equal ids); numpy arrays or torch tensors.
- distance is Hamming, ``(bits - q . x) / 2``, computed as popcount(q XOR x) on packed bits.
- ranking: by distance; ``ties="stable"`` breaks ties by database order (as a stable sort
  would), ``ties="expected"`` averages the metric over every order of equal-distance items.
- `topk` / `n` larger than the database mean the whole database.

How it is fast without sorting: distances are integers 0..bits, so a query's ranking is fixed
by per-distance counts (how many items, how many relevant, at each distance) plus, for stable
ties, running per-distance counters taken in database order. Per query, the numba kernel
computes popcount distances and label overlaps in vectorised loops (the database words are
stored transposed), makes one branch-free pass to count items per distance and note, for each
relevant item, how many items were seen at its distance so far, then one pass over the
relevant items only. Parallel over queries; O(bits) memory per query and O(N) per thread, so
10k x 1M stays bounded. Tie-aware ("expected") metrics need only the per-distance counts.
Torch tensors on a GPU use a chunked torch path (matmul distances + stable sort) instead;
``backend=`` forces either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from nhl.hierarchy import mean_average_hierarchical_precision  # noqa: F401 - re-export: every retrieval metric importable here
from nhl.index import pack_bits, popcount64
from nhl.labels import label_form, to_csr
from nhl.retrieval_inputs import check_inputs
from nhl.retrieval_inputs import is_torch as _is_torch
from nhl.retrieval_inputs import to_numpy as _to_numpy
from nhl.threads import kernel_threads, within_torch_threads

TIES = ("stable", "expected")
BACKENDS = ("numba", "torch")
METRIC_KEYS = ("map", "p_at_100", "p_at_r2")
_TORCH_CHUNK_ELEMENTS = 1 << 25  # query rows x database items per torch chunk


# --------------------------------------------------------------------------- inputs


def _check_choice(value: Any, name: str, known: tuple[str, ...]) -> None:
    if value not in known:
        raise ValueError(f"{name}: {value!r} unknown; known: {list(known)}")


def _resolve_backend(backend: str | None, *arrays: Any) -> str:
    if backend is None:
        on_gpu = any(_is_torch(a) and a.device.type != "cpu" for a in arrays)
        return "torch" if on_gpu else "numba"
    _check_choice(backend, "backend", BACKENDS)
    return backend


def _clip(k: int | None, n_db: int, name: str) -> int:
    if k is None:
        return n_db
    if int(k) <= 0:
        raise ValueError(f"{name}: expected a positive integer or None, got {k}")
    return min(int(k), n_db)


def hamming_distance(query_codes: Any, db_codes: Any) -> np.ndarray:
    """Hamming distances [Q, N] (int64) between ±1 codes, ``(bits - q . x) / 2``."""
    q = _to_numpy(query_codes).astype(np.float64)
    x = _to_numpy(db_codes).astype(np.float64)
    distances: np.ndarray = np.rint((q.shape[1] - q @ x.T) / 2).astype(np.int64)
    return distances


# --------------------------------------------------------------------------- kernels


@dataclass
class _Stats:
    """Per-query sufficient statistics of a ranking."""

    hist: np.ndarray  # [Q, bits+1] items at each distance
    hrel: np.ndarray  # [Q, bits+1] relevant items at each distance
    ap: np.ndarray  # [Q] AP@topk with stable ties (zeros if not computed)
    rel_at_n: np.ndarray  # [Q] relevant items among the first n, stable ties


class _Relevance:
    """Query/database labels prepared once for the kernels: relevance = a shared label.

    mode 0 (both dense): packed multi-hot words, relevance = any common bit;
    mode 1 (both class ids): relevance = equal ids (no label matrix at all);
    mode 2 (otherwise, e.g. CSR): each query's labels as CSR rows and the database as posting
    lists (CSC: label -> items), so a query marks only the items that share one of its labels.
    """

    def __init__(self, query_labels: Any, db_labels: Any) -> None:
        forms = (label_form(query_labels), label_form(db_labels))
        self.raw = (query_labels, db_labels)
        empty_w, empty_i = np.zeros((0, 0), np.uint64), np.zeros(0, np.int64)
        self.words = (empty_w, empty_w)
        self.ids = (empty_i, empty_i)
        self.postings = (empty_i, empty_i, empty_i, empty_i)
        if forms == ("dense", "dense"):
            self.mode = 0
            self.words = (
                pack_bits(_to_numpy(query_labels) > 0, 8),
                np.ascontiguousarray(pack_bits(_to_numpy(db_labels) > 0, 8).T),
            )
        elif forms == ("ids", "ids"):
            self.mode = 1
            self.ids = (_to_numpy(query_labels).astype(np.int64), _to_numpy(db_labels).astype(np.int64))
        else:
            self.mode = 2
            width = max(_width(query_labels), _width(db_labels))
            q, d = to_csr(query_labels, width), to_csr(db_labels, width).tocsc()
            self.postings = (
                q.indptr.astype(np.int64),
                q.indices.astype(np.int64),
                d.indptr.astype(np.int64),
                d.indices.astype(np.int64),
            )

    def numba_args(
        self,
    ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`_stats_kernel`'s relevance arguments: mode, words (2), ids (2), postings (4)."""
        return (self.mode, *self.words, *self.ids, *self.postings)

    def torch_chunk(self, start: int, end: int, device: Any) -> Any:
        """Relevance `[end - start, N]` (bool tensor) of a block of queries."""
        import torch

        q, d = self.raw
        if self.mode == 0:
            ql = torch.as_tensor(_to_numpy(q[start:end]) if not _is_torch(q) else q[start:end])
            dl = torch.as_tensor(d) if not _is_torch(d) else d
            return (ql.to(device, torch.float32) @ dl.to(device, torch.float32).T) > 0
        if self.mode == 1:
            qi = torch.as_tensor(self.ids[0][start:end], device=device)
            di = torch.as_tensor(self.ids[1], device=device)
            return qi[:, None] == di[None, :]
        width = max(_width(q), _width(d))
        block = (to_csr(q, width)[start:end] @ to_csr(d, width).T).toarray() > 0
        return torch.as_tensor(block, device=device)


def _width(labels: Any) -> int:
    """Number of classes a label array implies (ids: the largest id + 1)."""
    if label_form(labels) == "ids":
        ids = _to_numpy(labels)
        return int(ids.max()) + 1 if ids.size else 0
    return int(labels.shape[1])


@within_torch_threads
@numba.njit(parallel=True, cache=True)
def _stats_kernel(
    qw: np.ndarray,
    dwt: np.ndarray,
    mode: int,
    qlw: np.ndarray,
    dlt: np.ndarray,
    qid: np.ndarray,
    did: np.ndarray,
    qptr: np.ndarray,
    qidx: np.ndarray,
    dptr: np.ndarray,
    didx: np.ndarray,
    nbits: int,
    topk: int,
    n_at: int,
    stable: bool,
    dist: np.ndarray,
    relf: np.ndarray,
    rel_seen: np.ndarray,
    hist: np.ndarray,
    hrel: np.ndarray,
    ap: np.ndarray,
    rel_at: np.ndarray,
) -> None:
    """Per-query statistics; `dwt` / `dlt` are the database words transposed ([words, N]).

    Relevance by `mode` (see `_Relevance`). dist, relf, rel_seen are per-thread scratch rows
    [threads, N]; thread t takes queries t, t + threads, ... (every query costs the same).
    """
    threads = dist.shape[0]
    for t in numba.prange(threads):
        for q in range(t, qw.shape[0], threads):
            rf = relf[t]
            if mode == 0:
                _relevance_words(qlw[q], dlt, rf)
            elif mode == 1:
                _relevance_ids(qid[q], did, rf)
            else:
                _relevance_postings(qidx[qptr[q] : qptr[q + 1]], dptr, didx, rf)
            _query_stats(
                qw[q], dwt, nbits, topk, n_at, stable, dist[t], rf, rel_seen[t], hist[q], hrel[q], ap, rel_at, q
            )


@numba.njit(cache=True)
def _relevance_words(qlv: np.ndarray, dlt: np.ndarray, rf: np.ndarray) -> None:
    nd = dlt.shape[1]
    for i in range(nd):
        rf[i] = (qlv[0] & dlt[0, i]) != 0
    for w in range(1, dlt.shape[0]):
        for i in range(nd):
            rf[i] |= np.uint8((qlv[w] & dlt[w, i]) != 0)


@numba.njit(cache=True)
def _relevance_ids(qid: np.int64, did: np.ndarray, rf: np.ndarray) -> None:
    for i in range(did.shape[0]):
        rf[i] = did[i] == qid


@numba.njit(cache=True)
def _relevance_postings(qlabels: np.ndarray, dptr: np.ndarray, didx: np.ndarray, rf: np.ndarray) -> None:
    rf[:] = 0
    for label in qlabels:
        if label + 1 < dptr.shape[0]:
            for j in range(dptr[label], dptr[label + 1]):
                rf[didx[j]] = 1


@numba.njit(cache=True)
def _query_stats(
    qv: np.ndarray,
    dwt: np.ndarray,
    nbits: int,
    topk: int,
    n_at: int,
    stable: bool,
    dst: np.ndarray,
    rf: np.ndarray,
    r_seen: np.ndarray,
    h: np.ndarray,
    hr: np.ndarray,
    ap: np.ndarray,
    rel_at: np.ndarray,
    q: int,
) -> None:
    nd = dwt.shape[1]
    # vectorised: distances by popcount (relevance `rf` is already filled)
    for i in range(nd):
        dst[i] = popcount64(qv[0] ^ dwt[0, i])
    for w in range(1, dwt.shape[0]):
        for i in range(nd):
            dst[i] += popcount64(qv[w] ^ dwt[w, i])
    # counts per distance; for stable ties also, per relevant item in database order, its
    # distance and the number of items seen so far at that distance (itself included), packed
    # as seen << 16 | distance (a branch-free store; the slot is kept if the item is relevant)
    h[:] = 0
    hr[:] = 0
    if not stable:
        for i in range(nd):
            d = dst[i]
            h[d] += 1
            hr[d] += rf[i]
        return
    nrel = 0
    for i in range(nd):
        d = dst[i]
        r = rf[i]
        c = h[d] + 1
        h[d] = c
        hr[d] += r
        r_seen[nrel] = (c << 16) | d
        nrel += r
    # rank = items at smaller distances + items seen so far at this distance;
    # relevant so far = relevant items at smaller distances + a running count at this distance
    before = np.empty(nbits + 1, np.int64)
    rbefore = np.empty(nbits + 1, np.int64)
    acc = 0
    racc = 0
    for d in range(nbits + 1):
        before[d] = acc
        rbefore[d] = racc
        acc += h[d]
        racc += hr[d]
    total = 0.0
    found = 0
    at_n = 0
    for j in range(nrel):
        d = r_seen[j] & 0xFFFF
        rank = before[d] + (r_seen[j] >> 16)
        rbefore[d] += 1
        if rank <= topk:
            total += rbefore[d] / rank
            found += 1
        if rank <= n_at:
            at_n += 1
    ap[q] = total / found if found > 0 else 0.0
    rel_at[q] = at_n


@numba.njit(cache=True)
def _partial_group_ap(total: float, rb: int, n: int, m: int, length: int, t1: float, t2: float) -> float:
    """E[AP] when only the first `length` of a tie group (n items, m relevant) are retrieved.

    X, the relevant items among them, is hypergeometric; given X = x the group adds
    x/L (rb+1) T1 + x(x-1)/(L(L-1)) T2 to the precision sum and x to the relevant count.
    """
    lo = max(0, length - (n - m))
    hi = min(m, length)
    logw = np.zeros(hi - lo + 1)
    for x in range(lo, hi):  # P(x+1)/P(x) = (m-x)(L-x) / ((x+1)(n-m-L+x+1))
        ratio = ((m - x) * 1.0 * (length - x)) / ((x + 1) * 1.0 * (n - m - length + x + 1))
        logw[x - lo + 1] = logw[x - lo] + math.log(ratio)
    top = logw.max()
    wsum = 0.0
    acc = 0.0
    for x in range(lo, hi + 1):
        w = math.exp(logw[x - lo] - top)
        wsum += w
        if rb + x > 0:
            part = x / length * (rb + 1) * t1
            if length > 1:
                part += x * (x - 1.0) / (length * (length - 1.0)) * t2
            acc += w * (total + part) / (rb + x)
    return acc / wsum


@numba.njit(cache=True)
def _harmonic_diff(s: int, length: int) -> float:
    """sum_{p=1..length} 1/(s+p) = H(s+length) - H(s), to about 1e-16 relative.

    Direct sum for short runs; otherwise sum directly up to base 64, then the asymptotic
    expansion of H written as differences (log1p and paired inverse powers) so nothing cancels.
    """
    total = 0.0
    if length <= 64:
        for p in range(1, length + 1):
            total += 1.0 / (s + p)
        return total
    head = max(0, 64 - s)
    for p in range(1, head + 1):
        total += 1.0 / (s + p)
    a = float(s + head)
    b = float(s + length)
    a2, b2 = 1.0 / (a * a), 1.0 / (b * b)
    total += math.log1p((b - a) / a) + (a - b) / (2.0 * a * b)
    total += (a2 - b2) / 12.0 - (a2 * a2 - b2 * b2) / 120.0 + (a2**3 - b2**3) / 252.0
    return total


@numba.njit(cache=True)
def _expected_ap_row(h: np.ndarray, hr: np.ndarray, topk: int) -> float:
    """Tie-aware AP@topk of one query from its per-distance counts (see mean_average_precision)."""
    start = 0
    rb = 0
    total = 0.0
    for d in range(h.shape[0]):
        n = h[d]
        if n == 0:
            continue
        if start >= topk:
            break
        m = hr[d]
        length = min(n, topk - start)
        if m > 0:
            # T1 = sum_p 1/(s+p), T2 = sum_p (p-1)/(s+p) = L - (s+1) T1 over the retrieved positions
            t1 = _harmonic_diff(start, length)
            t2 = max(0.0, length - (start + 1.0) * t1)
            if length < n:
                return _partial_group_ap(total, rb, n, m, length, t1, t2)
            total += m / n * (rb + 1) * t1
            if n > 1:
                total += m * (m - 1.0) / (n * (n - 1.0)) * t2
            rb += m
        start += n
    return total / rb if rb > 0 else 0.0


@within_torch_threads
@numba.njit(parallel=True, cache=True)
def _expected_ap_kernel(hist: np.ndarray, hrel: np.ndarray, topk: int, out: np.ndarray) -> None:
    for q in numba.prange(hist.shape[0]):
        out[q] = _expected_ap_row(hist[q], hrel[q], topk)


def _stats_numba(qc: Any, rel: _Relevance, dc: Any, bits: int, topk: int, n_at: int, stable: bool) -> _Stats:
    def words(x: Any) -> np.ndarray:  # ±1 codes, or already packed words
        return x if x.dtype == np.uint64 else pack_bits(_to_numpy(x) > 0, 8)

    qw = words(qc)
    dwt = np.ascontiguousarray(words(dc).T)
    nq, nd = qw.shape[0], dwt.shape[1]
    threads = max(1, min(nq, kernel_threads()))
    if bits >= 1 << 16:
        raise ValueError(f"codes: at most {(1 << 16) - 1} bits are supported, got {bits}")
    dist = np.empty((threads, nd), np.uint8 if bits < 256 else np.uint16)
    hist = np.zeros((nq, bits + 1), np.int64)
    hrel = np.zeros((nq, bits + 1), np.int64)
    ap = np.zeros(nq)
    rel_at = np.zeros(nq, np.int64)
    _stats_kernel(
        qw,
        dwt,
        *rel.numba_args(),
        bits,
        topk,
        n_at,
        stable,
        dist,
        np.empty((threads, nd), np.uint8),
        np.empty((threads, nd if stable else 0), np.int64),
        hist,
        hrel,
        ap,
        rel_at,
    )
    return _Stats(hist, hrel, ap, rel_at)


def _stats_torch(qc: Any, rel: _Relevance, dc: Any, bits: int, topk: int, n_at: int, stable: bool) -> _Stats:
    import torch

    device = next(
        (a.device for a in (qc, dc, *rel.raw) if _is_torch(a) and a.device.type != "cpu"), torch.device("cpu")
    )

    def tensor(x: Any) -> Any:
        return torch.as_tensor(x).to(device=device, dtype=torch.float32)

    qc, dc = tensor(qc), tensor(dc)
    nq, nd = qc.shape[0], dc.shape[0]
    hist = torch.zeros(nq, bits + 1, dtype=torch.int64, device=device)
    hrel = torch.zeros_like(hist)
    ap = torch.zeros(nq, dtype=torch.float64, device=device)
    rel_at = torch.zeros(nq, dtype=torch.int64, device=device)
    ranks = torch.arange(1, topk + 1, dtype=torch.float64, device=device)
    chunk = max(1, _TORCH_CHUNK_ELEMENTS // max(nd, 1))
    for s in range(0, nq, chunk):
        e = min(nq, s + chunk)
        dist = torch.round((bits - qc[s:e] @ dc.T) / 2).long()  # exact: small integers
        relevant = rel.torch_chunk(s, e, device)
        hist[s:e].scatter_add_(1, dist, torch.ones_like(dist))
        hrel[s:e].scatter_add_(1, dist, relevant.long())
        if stable:
            order = torch.sort(dist, dim=1, stable=True).indices[:, : max(topk, n_at)]
            ranked = relevant.gather(1, order).double()
            top = ranked[:, :topk]
            found = top.sum(1)
            ap[s:e] = (top.cumsum(1) / ranks * top).sum(1) / found.clamp(min=1)
            rel_at[s:e] = ranked[:, :n_at].sum(1).long()
    return _Stats(hist.cpu().numpy(), hrel.cpu().numpy(), ap.cpu().numpy(), rel_at.cpu().numpy())


_STATS_BY_BACKEND = {"numba": _stats_numba, "torch": _stats_torch}
assert tuple(_STATS_BY_BACKEND) == BACKENDS


def _stats(qc: Any, rel: _Relevance, dc: Any, bits: int, topk: int, n_at: int, stable: bool, backend: str) -> _Stats:
    nq, nd = qc.shape[0], dc.shape[0]
    if nd == 0:
        zeros = np.zeros((nq, bits + 1), np.int64)
        return _Stats(zeros, zeros.copy(), np.zeros(nq), np.zeros(nq, np.int64))
    return _STATS_BY_BACKEND[backend](qc, rel, dc, bits, topk, n_at, stable)


# --------------------------------------------------------------------------- from statistics


def _ap_from(stats: _Stats, topk: int, ties: str) -> np.ndarray:
    if ties == "stable":
        return stats.ap
    out = np.zeros(stats.hist.shape[0])
    if topk > 0:
        _expected_ap_kernel(stats.hist, stats.hrel, topk, out)
    return out


def _precision_at_n_from(stats: _Stats, n_at: int, ties: str) -> np.ndarray:
    if n_at == 0:
        return np.zeros(stats.hist.shape[0])
    if ties == "stable":
        return stats.rel_at_n / n_at
    start = np.cumsum(stats.hist, axis=1) - stats.hist  # items before each distance
    taken = np.clip(n_at - start, 0, stats.hist)  # retrieved from each group
    share = np.divide(taken, stats.hist, out=np.zeros(taken.shape), where=stats.hist > 0)
    precision: np.ndarray = (share * stats.hrel).sum(axis=1) / n_at  # expected relevant / n
    return precision


def _precision_at_radius_from(stats: _Stats, r: int) -> np.ndarray:
    retrieved = stats.hist[:, : r + 1].sum(axis=1)
    relevant = stats.hrel[:, : r + 1].sum(axis=1)
    precision: np.ndarray = np.divide(relevant, retrieved, out=np.zeros(len(retrieved)), where=retrieved > 0)
    return precision


# --------------------------------------------------------------------------- public API


def mean_average_precision(
    query_codes: Any,
    query_labels: Any,
    db_codes: Any,
    db_labels: Any,
    topk: int | None = None,
    ties: str = "stable",
    backend: str | None = None,
) -> float:
    """mAP@topk of Hamming ranking (`topk=None`: the whole database, i.e. mAP@ALL).

    A query's AP averages precision@rank over the relevant items inside the top-k and divides
    by the number of relevant items retrieved there (the field's convention); a query with no
    relevant item in its top-k scores 0 and still counts in the mean.

    ties="stable" (default): equal-distance items are ranked in database order; the top-k is
    the first k in that order (what a stable sort, e.g. ``np.argsort(kind="stable")``, gives).

    ties="expected": the exact expectation of AP over all orders of equal-distance items, each
    order equally likely (tie-aware AP, McSherry & Najork 2008). For a tie group of n items, m
    relevant, s items and r relevant ranked before it, position p of the group is relevant with
    probability m/n and then has (p-1)(m-1)/(n-1) relevant items ahead of it in the group on
    average, so the group adds sum_p m/n (r + 1 + (p-1)(m-1)/(n-1)) / (s + p) to the precision
    sum. With a top-k that cuts a group after L of its items, the retrieved part of the group is
    a uniformly random L-subset: the number x of relevant items in it is hypergeometric, and AP
    is averaged over x exactly (the group counts fractionally, weighted by P(x)), so the result
    equals the mean of AP over all permutations of every tie group.

    backend: None picks "torch" when any input is a torch tensor on a GPU, else "numba"
    (CPU, parallel over queries). Raises ValueError on wrong shapes or non-±1 codes.
    """
    _check_choice(ties, "ties", TIES)
    bits = check_inputs(query_codes, query_labels, db_codes, db_labels)
    backend = _resolve_backend(backend, query_codes, query_labels, db_codes, db_labels)
    k = _clip(topk, db_codes.shape[0], "topk")
    stats = _stats(query_codes, _Relevance(query_labels, db_labels), db_codes, bits, k, 0, ties == "stable", backend)
    return float(_ap_from(stats, k, ties).mean())


def precision_at_k(
    query_codes: Any,
    query_labels: Any,
    db_codes: Any,
    db_labels: Any,
    k: int = 100,
    ties: str = "stable",
    backend: str | None = None,
) -> float:
    """P@k: the mean share of relevant items among each query's first k (k > database: all).

    ties as in `mean_average_precision`; with "expected", a tie group cut by k counts its
    relevant items in proportion to the share of the group retrieved.
    """
    _check_choice(ties, "ties", TIES)
    bits = check_inputs(query_codes, query_labels, db_codes, db_labels)
    backend = _resolve_backend(backend, query_codes, query_labels, db_codes, db_labels)
    n_at = _clip(k, db_codes.shape[0], "k")
    stats = _stats(query_codes, _Relevance(query_labels, db_labels), db_codes, bits, 0, n_at, ties == "stable", backend)
    return float(_precision_at_n_from(stats, n_at, ties).mean())


def precision_at_radius(
    query_codes: Any, query_labels: Any, db_codes: Any, db_labels: Any, r: int = 2, backend: str | None = None
) -> float:
    """Hash-lookup precision: the mean share of relevant items within Hamming radius r.

    A query that retrieves nothing within the radius has precision 0 and still counts in the
    mean (the usual P@r<=2 protocol; it penalises codes too long to collide).
    """
    bits = check_inputs(query_codes, query_labels, db_codes, db_labels)
    if not 0 <= int(r) <= bits:
        raise ValueError(f"r: expected a radius in 0..{bits}, got {r}")
    backend = _resolve_backend(backend, query_codes, query_labels, db_codes, db_labels)
    stats = _stats(query_codes, _Relevance(query_labels, db_labels), db_codes, bits, 0, 0, False, backend)
    return float(_precision_at_radius_from(stats, int(r)).mean())


def precision_recall_curve(
    query_codes: Any, query_labels: Any, db_codes: Any, db_labels: Any, backend: str | None = None
) -> dict[str, np.ndarray]:
    """Precision and recall of hash lookup at every Hamming radius 0..bits.

    Returns {"radius": [bits+1], "precision": [bits+1], "recall": [bits+1]} averaged over queries.
    A query retrieving nothing has precision 0 at that radius (as in `precision_at_radius`);
    a query with no relevant item in the database has recall 0.
    """
    bits = check_inputs(query_codes, query_labels, db_codes, db_labels)
    backend = _resolve_backend(backend, query_codes, query_labels, db_codes, db_labels)
    stats = _stats(query_codes, _Relevance(query_labels, db_labels), db_codes, bits, 0, 0, False, backend)
    retrieved = np.cumsum(stats.hist, axis=1)
    relevant = np.cumsum(stats.hrel, axis=1)
    total = relevant[:, -1:]
    precision = np.divide(relevant, retrieved, out=np.zeros(retrieved.shape), where=retrieved > 0)
    recall = np.divide(relevant, np.broadcast_to(total, relevant.shape), out=np.zeros(relevant.shape), where=total > 0)
    return {"radius": np.arange(bits + 1), "precision": precision.mean(axis=0), "recall": recall.mean(axis=0)}


def evaluate_nested(
    query_codes: Any,
    query_labels: Any,
    db_codes: Any,
    db_labels: Any,
    lengths: list[int],
    topk: int | None = None,
    ties: str = "stable",
    n: int = 100,
    radius: int = 2,
    backend: str | None = None,
) -> dict[int, dict[str, float]]:
    """Metrics of every nested length from one longest code, using prefixes ``codes[:, :k]``.

    Returns {k: {"map": mAP@topk, "p_at_100": P@n, "p_at_r2": P@radius}} for k in `lengths`
    (the key names are fixed; `n` and `radius` default to 100 and 2).
    """
    _check_choice(ties, "ties", TIES)
    bits = check_inputs(query_codes, query_labels, db_codes, db_labels)
    lengths = [int(k) for k in lengths]
    if not lengths or any(not 0 < k <= bits for k in lengths):
        raise ValueError(f"lengths: expected prefix lengths in 1..{bits}, got {lengths}")
    backend = _resolve_backend(backend, query_codes, query_labels, db_codes, db_labels)
    nd = db_codes.shape[0]
    k_top, n_at = _clip(topk, nd, "topk"), _clip(n, nd, "n")
    if backend == "numba":  # pack once; a k-bit prefix is the low k bits of the words
        query_codes = pack_bits(_to_numpy(query_codes) > 0, 8)
        db_codes = pack_bits(_to_numpy(db_codes) > 0, 8)
    results: dict[int, dict[str, float]] = {}
    rel = _Relevance(query_labels, db_labels)  # prepared once for every length
    for k in lengths:
        qk, dk = _prefix(query_codes, k), _prefix(db_codes, k)
        stats = _stats(qk, rel, dk, k, k_top, n_at, ties == "stable", backend)
        values = (
            _ap_from(stats, k_top, ties),
            _precision_at_n_from(stats, n_at, ties),
            _precision_at_radius_from(stats, min(int(radius), k)),
        )
        results[k] = {key: float(v.mean()) for key, v in zip(METRIC_KEYS, values, strict=True)}
    return results


def _prefix(codes: Any, k: int) -> Any:
    """The k-bit prefix: a column slice of ±1 codes, or masked uint64 words."""
    if isinstance(codes, np.ndarray) and codes.dtype == np.uint64:
        words = codes[:, : -(-k // 64)].copy()
        if k % 64:
            words[:, -1] &= np.uint64((1 << (k % 64)) - 1)
        return words
    return codes[:, :k]
