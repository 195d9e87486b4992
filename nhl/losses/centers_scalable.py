"""Prefix-consistent centres for many classes (thousands to 100,000+), and their distance report.

The exact search in `centers.py` keeps a `[C, C]` distance matrix and costs about C^2 per bit
flip: 2.9 s for 100 classes, 25 s for 300 and more than 5 min for 1,000 (issue 22). Here:

1. Generation is linear in C. Length by length, each class receives the next block of
   `m = k_i - k_{i-1}` bits. Classes are grouped by their current prefix (a hash of its packed
   words); the classes of one group are indistinguishable so far, so they get words that are far
   apart in the block: random rows of a Hadamard `[H; -H]` (pairwise >= m/2) when the group fits,
   otherwise words cycled through a random permutation of all 2^m words (equal occupancy:
   the fewest collisions), otherwise (m > 16) random balanced words.
2. Repair. An exact scan over all pairs of packed prefixes (numba, popcount, O(C^2 k / 64) with
   a tiny constant and O(C) memory: about a second at 10,000 classes; it is the only
   super-linear step) finds the minimum distance and the classes sitting at it; each such class
   flips the one block bit that best separates it from its near neighbours (a row-versus-all
   scan, O(C)), never moving a pair down to the minimum. Rounds repeat until the minimum count
   stops falling or `rounds` is spent. Earlier prefixes are never changed, so the table stays
   prefix-consistent by construction.

`prefix_distance_report` measures every length's min/mean distance, and the same for random
balanced centres of that length, without any `[C, C]` matrix (mean from column counts).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from nhl.losses.centers import hadamard_matrix
from nhl.threads import within_torch_threads


@intrinsic
def _popcount(typingctx, x):
    """Set bits of a uint64 (LLVM ctpop, one POPCNT). The same 4-line intrinsic as
    `nhl.index.popcount64`, repeated here because losses sit below the index layer."""

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.int64(types.uint64), codegen


@within_torch_threads
@numba.njit(parallel=True, cache=True)
def _row_minima(words):
    """For each row i: (min distance to rows j > i, how many j sit at it); C for the last row."""
    c, w = words.shape
    low = np.full(c, 1 << 30, np.int64)
    count = np.zeros(c, np.int64)
    for i in numba.prange(c - 1):
        best, n = 1 << 30, 0
        for j in range(i + 1, c):
            d = 0
            for b in range(w):
                d += _popcount(words[i, b] ^ words[j, b])
            if d < best:
                best, n = d, 1
            elif d == best:
                n += 1
        low[i], count[i] = best, n
    return low, count


@within_torch_threads
@numba.njit(parallel=True, cache=True)
def _near_pairs(words, limit, capacity):
    """Row minima as `_row_minima`, plus, per row i, the rows j > i within distance `limit`
    (at most `capacity` kept; `found[i]` counts them all so the caller can detect overflow)."""
    c, w = words.shape
    low = np.full(c, 1 << 30, np.int64)
    count = np.zeros(c, np.int64)
    near = np.zeros((c, capacity), np.int64)
    found = np.zeros(c, np.int64)
    for i in numba.prange(c - 1):
        best, n, f = 1 << 30, 0, 0
        for j in range(i + 1, c):
            d = 0
            for b in range(w):
                d += _popcount(words[i, b] ^ words[j, b])
            if d < best:
                best, n = d, 1
            elif d == best:
                n += 1
            if d <= limit:
                if f < capacity:
                    near[i, f] = j
                f += 1
        low[i], count[i], found[i] = best, n, f
    return low, count, near, found


def _pack(codes: np.ndarray) -> np.ndarray:
    """±1 rows [C, k] as little-endian uint64 words [C, ceil(k/64)] (bit set = +1)."""
    bits = np.packbits(codes > 0, axis=1, bitorder="little")
    pad = (-bits.shape[1]) % 8
    if pad:
        bits = np.concatenate([bits, np.zeros((bits.shape[0], pad), np.uint8)], axis=1)
    return np.ascontiguousarray(bits).view("<u8").astype(np.uint64)


def pair_stats(codes: np.ndarray) -> dict[str, float]:
    """min / mean pairwise Hamming distance and pairs at the min of ±1 rows, with no [C, C] matrix."""
    c, k = codes.shape
    if c < 2:
        raise ValueError(f"centers: expected at least two centres, got {c}")
    plus = (codes > 0).sum(axis=0).astype(np.float64)
    mean = float((plus * (c - plus)).sum() / (c * (c - 1) / 2))
    if c > 2**k:  # pigeonhole: the min is 0; count the colliding pairs without a scan
        _, sizes = np.unique(_pack(codes), axis=0, return_counts=True)
        return {"min": 0, "mean": mean, "pairs_at_min": int((sizes * (sizes - 1) // 2).sum())}
    low, count = _row_minima(_pack(codes))
    m = int(low[:-1].min())
    return {"min": m, "mean": mean, "pairs_at_min": int(count[:-1][low[:-1] == m].sum())}


def _block_words(rng: np.random.Generator, group_size: int, m: int) -> np.ndarray:
    """`group_size` words of m bits (±1) far apart from each other (see the module docstring)."""
    if group_size == 1:
        return _balanced(rng, 1, m)
    if m & (m - 1) == 0 and group_size <= 2 * m:
        h = hadamard_matrix(m)
        rows = np.concatenate([h, -h])[rng.permutation(2 * m)[:group_size]]
        return rows[:, rng.permutation(m)] * np.where(rng.random(m) < 0.5, 1, -1)
    if m <= 16:
        order = rng.permutation(2**m)
        ints = order[np.arange(group_size) % order.size]
        return ((ints[:, None] >> np.arange(m)[None, :]) & 1) * 2 - 1
    return _balanced(rng, group_size, m)


def _balanced(rng: np.random.Generator, rows: int, m: int) -> np.ndarray:
    """Rows with floor(m/2) entries -1 at uniformly random places (vectorised)."""
    keys = rng.random((rows, m))
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    return np.where(ranks < m // 2, -1, 1)


def _assign_block(prefix: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    c = prefix.shape[0]
    if prefix.shape[1] == 0:
        return _block_words(rng, c, m)
    _, group, sizes = np.unique(_pack(prefix), axis=0, return_inverse=True, return_counts=True)
    group = group.ravel()
    block = _balanced(rng, c, m)  # singletons keep a random balanced word
    members = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for g in np.flatnonzero(sizes > 1):
        rows = members[starts[g] : starts[g + 1]]
        block[rows] = _block_words(rng, rows.size, m)
    return block


def _repair(codes: np.ndarray, start: int, rng: np.random.Generator, rounds: int) -> None:
    """Flip bits of columns start: of `codes` (in place) to raise the min distance / thin its pairs.

    Each round: one scan lists every pair within `limit` = (last min + 3); every class in a pair
    at the minimum flips at most one block bit, chosen against its listed neighbours only. Pairs
    not listed were farther than `limit` and move by at most 2 a round (each of their two
    classes flips at most once), so no unlisted pair can fall to the current minimum.
    """
    c, k = codes.shape
    if c * c > 2**k:  # collisions are expected (birthday bound): equal occupancy already did its best
        return
    limit, capacity, last = _expected_min(c, k) + 2, 16, None
    done = 0
    while done < rounds:
        low, count, near, found = _near_pairs(_pack(codes), limit, capacity)
        if found.max() > capacity:  # rare: more listed neighbours than room; widen and rescan
            capacity = int(found.max())
            continue
        m = int(low[:-1].min())
        if not m + 2 <= limit <= m + 3:  # the list must hold every pair within m + 2
            limit = m + 2
            continue
        at_min = int(count[:-1][low[:-1] == m].sum())
        if last is not None and (m, -at_min) <= last:
            break
        last, done = (m, -at_min), done + 1
        rows = np.repeat(np.arange(c), np.minimum(found, capacity))
        cols = near[np.arange(c)[:, None], np.arange(capacity)[None, :]][np.arange(capacity)[None, :] < found[:, None]]
        a_side, b_side = np.concatenate([rows, cols]), np.concatenate([cols, rows])
        order = np.argsort(a_side, kind="stable")
        a_side, b_side = a_side[order], b_side[order]
        bounds = np.searchsorted(a_side, np.arange(c + 1))
        moved = np.zeros(c, bool)
        for r in rng.permutation(np.flatnonzero(low[:-1] == m)):
            nb = b_side[bounds[r] : bounds[r + 1]]
            if nb.size == 0 or moved[r]:
                continue
            agree = codes[nb, :] == codes[r, :]
            dist = k - agree.sum(axis=1)
            after = dist[:, None] + np.where(agree[:, start:], 1, -1)  # [neighbours, block]
            worst = after.min(axis=0)
            ties = (after == worst[None, :]).sum(axis=0)
            now_low = int(dist.min())
            now_ties = int((dist == now_low).sum())
            b = int(np.argmax(worst * (c + 1) - ties))
            if worst[b] > m and (worst[b], -ties[b]) > (now_low, -now_ties):
                codes[r, start + b] *= -1
                moved[r] = True
        if not moved.any():
            break
        limit = m + 3


def _expected_min(c: int, k: int) -> int:
    """The distance d at which C random k-bit words are expected to have their first pair
    (C^2/2 * P(Bin(k, 1/2) <= d) >= 1): where the repair scan starts listing pairs."""
    from math import comb, log2

    pairs_log2, acc = 2 * log2(c) - 1, 0
    for d in range(k + 1):
        acc += comb(k, d)
        if pairs_log2 + log2(acc) - k >= 0:
            return d
    return k


def default_rounds(num_classes: int) -> int:
    """Repair rounds (each one all-pairs scan): 8 up to ~15,000 classes, fewer beyond, so that
    100,000 classes stay within minutes (a scan costs ~C^2/2 popcounts)."""
    return int(min(8, max(2, 2e9 // max(num_classes, 1) ** 2)))


def scalable_prefix_centers(
    num_classes: int, lengths: list[int], seed: int = 0, rounds: int | None = None
) -> np.ndarray:
    """`[C, max(lengths)]` ±1 (int8) centres, prefix-consistent, built in about linear time (plus
    the repair scans); see the module docstring. Deterministic for a given seed."""
    rounds = default_rounds(num_classes) if rounds is None else rounds
    rng = np.random.default_rng(seed)
    codes = np.zeros((num_classes, lengths[-1]), np.int8)
    start = 0
    for k in lengths:
        codes[:, start:k] = _assign_block(codes[:, :start], k - start, rng)
        if num_classes > 1:
            _repair(codes[:, :k], start, rng, rounds)
        start = k
    return codes


def prefix_distance_report(centers: np.ndarray, lengths: list[int], seed: int = 0) -> list[dict[str, float]]:
    """Per length k: min / mean distance and pairs at the min of `centers[:, :k]`, next to random
    balanced centres of the same size (`random_min`, `random_mean`, same seed)."""
    from nhl.losses.centers import random_balanced_centers

    codes = np.asarray(centers)
    out = []
    for k in lengths:
        mine = pair_stats(np.where(codes[:, :k] > 0, 1, -1).astype(np.int8))
        rand = pair_stats(random_balanced_centers(codes.shape[0], k, seed=seed).numpy().astype(np.int8))
        out.append(
            {
                "bits": int(k),
                "min": mine["min"],
                "mean": mine["mean"],
                "pairs_at_min": mine["pairs_at_min"],
                "random_min": rand["min"],
                "random_mean": rand["mean"],
                "random_pairs_at_min": rand["pairs_at_min"],
            }
        )
    return out
