"""Per-class hash centres (target codes in {-1, +1}) for centre-based losses.

Three constructions:
- `hadamard_centers`: the released CSQ rule (rows of [H; -H], random balanced rows beyond 2k classes);
- `random_balanced_centers`: each centre has half its bits -1 (DPN's random targets);
- `prefix_consistent_centers`: one table `[C, k_max]` whose first k columns are good k-bit centres
  for every length k, so nested codes are never pulled toward contradictory targets (plain
  truncation of Hadamard rows does not do this: at 8 bits truncated 128-bit rows collide).
The search runs in numpy with a seeded generator, so a seed always gives the same table.
"""

from __future__ import annotations

import numpy as np
import torch

from nhl.models.head import check_lengths


def _check_sizes(num_classes: int, bits: int) -> None:
    for field, value in (("num_classes", num_classes), ("bits", bits)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{field}: expected a positive integer, got {value!r}")


def _to_tensor(codes: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32))


def hadamard_matrix(n: int) -> np.ndarray:
    """Sylvester's Hadamard matrix of order n (a power of two), entries +-1, int64."""
    if n <= 0 or n & (n - 1):
        raise ValueError(f"n: expected a power of two, got {n}")
    h = np.ones((1, 1), dtype=np.int64)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def _balanced_rows(rng: np.random.Generator, rows: int, bits: int) -> np.ndarray:
    """Rows of +1 with `bits // 2` positions, chosen uniformly, set to -1."""
    out = np.ones((rows, bits), dtype=np.int64)
    for r in range(rows):
        out[r, rng.permutation(bits)[: bits // 2]] = -1
    return out


def pairwise_hamming(centers: torch.Tensor | np.ndarray) -> np.ndarray:
    """Hamming distances `[C, C]` between +-1 rows (int64)."""
    c = np.asarray(centers.detach().cpu().numpy() if isinstance(centers, torch.Tensor) else centers)
    c = np.where(c > 0, 1, -1).astype(np.int64)
    return (c.shape[1] - c @ c.T) // 2


def min_pairwise_distance(centers: torch.Tensor | np.ndarray) -> int:
    """Smallest Hamming distance between two different centres (needs at least two)."""
    return int(center_distance_stats(centers)["min"])


def center_distance_stats(centers: torch.Tensor | np.ndarray) -> dict[str, float]:
    """min / mean / max pairwise Hamming distance and how many pairs sit at the minimum."""
    d = pairwise_hamming(centers)
    if d.shape[0] < 2:
        raise ValueError(f"centers: expected at least two centres, got {d.shape[0]}")
    pairs = d[np.triu_indices(d.shape[0], 1)]
    low = int(pairs.min())
    return {"min": low, "mean": float(pairs.mean()), "max": int(pairs.max()), "pairs_at_min": int((pairs == low).sum())}


def random_balanced_centers(num_classes: int, bits: int, seed: int = 0) -> torch.Tensor:
    """`[C, bits]` random centres, each with `bits // 2` entries -1 and the rest +1."""
    _check_sizes(num_classes, bits)
    return _to_tensor(_balanced_rows(np.random.default_rng(seed), num_classes, bits))


def hadamard_centers(num_classes: int, bits: int, seed: int = 0, tries: int = 20) -> torch.Tensor:
    """The released CSQ centres: the first C rows of [H; -H] (H of order `bits`).

    When C > 2 * bits the rows beyond 2 * bits are random balanced; as in CSQ up to `tries` draws
    are made, stopping at the first with min distance > bits/4 and mean >= bits/2 (we keep the draw
    with the largest min distance rather than the last). When `bits` is not a power of two (no
    Sylvester matrix; the released code would fail) every centre is random balanced.
    """
    _check_sizes(num_classes, bits)
    rng = np.random.default_rng(seed)
    if bits & (bits - 1):
        fixed = np.zeros((0, bits), dtype=np.int64)
    else:
        h = hadamard_matrix(bits)
        fixed = np.concatenate([h, -h])[:num_classes]
    extra = num_classes - fixed.shape[0]
    if extra == 0:
        return _to_tensor(fixed)
    best: np.ndarray | None = None
    best_min: float = -1
    for _ in range(max(1, tries)):
        cand = np.concatenate([fixed, _balanced_rows(rng, extra, bits)])
        if num_classes < 2:
            return _to_tensor(cand)
        stats = center_distance_stats(cand)
        if stats["min"] > best_min:
            best, best_min = cand, stats["min"]
        if stats["min"] > bits / 4 and stats["mean"] >= bits / 2:
            break
    assert best is not None  # the first try beats -1
    return _to_tensor(best)


# ---------------------------------------------------------------- prefix-consistent centres


def _score(dist: np.ndarray) -> tuple[int, int]:
    """(min distance, -pairs at the min): larger is better. `dist` has a huge diagonal."""
    low = int(dist.min())
    return low, -(int((dist == low).sum()) // 2)


def _local_search(
    prev: np.ndarray, block: np.ndarray, rng: np.random.Generator, gamma: float = 1.0, max_sweeps: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Flip single bits of the new `block` [C, m] to lower sum_{i<j} exp(-gamma * D_ij), where D
    counts the previous prefix distances `prev` plus the block's own; returns (block, D).

    The energy is dominated by the closest pairs, so descending it raises the minimum distance and
    thins the pairs that sit at it. One move changes only row r's distances, so each row's best
    flip is found with one [C, m] array operation.
    """
    c, m = block.shape
    big = 10**9
    dist = prev + (m - block @ block.T) // 2
    np.fill_diagonal(dist, big)
    for _ in range(max_sweeps):
        moved = False
        for r in rng.permutation(c):
            change = np.where(block == block[r], 1, -1)  # change[j, b]: D[r, j] after flipping bit b
            change[r] = 0
            row = dist[r].astype(np.float64)
            row[r] = np.inf
            ref = row.min()
            before = np.exp(-gamma * (row - ref)).sum()
            after = np.exp(-gamma * (row[:, None] + change - ref)).sum(axis=0)
            b = int(np.argmin(after))
            if after[b] < before * (1 - 1e-12):
                block[r, b] = -block[r, b]
                dist[r] += change[:, b]
                dist[:, r] += change[:, b]
                dist[r, r] = big
                moved = True
        if not moved:
            break
    return block, dist


SEARCH_MAX_CLASSES = 128  # beyond this the exact search below (~C^2 per flip) gives way to
# `centers_scalable` (2.9 s at 100 classes, 25 s at 300, > 5 min at 1,000)


def prefix_consistent_centers(
    num_classes: int, lengths: list[int], seed: int = 0, restarts: int = 3, gamma: float = 1.0, method: str = "auto"
) -> torch.Tensor:
    """`[C, max(lengths)]` centres whose first k columns are good k-bit centres for every k.

    method "search" (the default up to `SEARCH_MAX_CLASSES` classes) is described below;
    "scalable" (the default beyond) is `nhl.losses.centers_scalable.scalable_prefix_centers`,
    about linear in C plus a few all-pairs popcount scans.

    Built length by length: each length appends `k_i - k_{i-1}` new bits to every centre, chosen to
    maximise the minimum pairwise Hamming distance of the k_i-bit prefixes (then to minimise the
    number of pairs at that minimum). Candidates for each new block: rows of a Hadamard [H; -H]
    (when the block is a power of two with 2m >= C), a farthest-point greedy over all 2^m words and
    over the even-weight words (small blocks), and `restarts` random draws; each is refined by
    single-bit-flip local search and the best kept. Deterministic for a given seed.
    """
    lengths = check_lengths(lengths)
    _check_sizes(num_classes, lengths[-1])
    if method not in ("auto", "search", "scalable"):
        raise ValueError(f"method: {method!r} unknown; known: ['auto', 'search', 'scalable']")
    if method == "scalable" or (method == "auto" and num_classes > SEARCH_MAX_CLASSES):
        from nhl.losses.centers_scalable import scalable_prefix_centers

        return _to_tensor(scalable_prefix_centers(num_classes, lengths, seed=seed))
    rng = np.random.default_rng(seed)
    c = num_classes
    if c == 1:
        return _to_tensor(np.where(rng.random((1, lengths[-1])) < 0.5, 1, -1))
    prev = np.zeros((c, c), dtype=np.int64)
    blocks, start = [], 0
    for k in lengths:
        m = k - start
        inits = []
        if m & (m - 1) == 0 and c <= 2 * m:
            h = hadamard_matrix(m)
            inits.append(np.concatenate([h, -h])[rng.permutation(2 * m)[:c]])
        if 2**m * c * c <= 2**24:  # the greedy costs about C^2 * 2^m
            inits.append(_greedy_words(prev, m, rng, even=False))
            if m > 1:
                inits.append(_greedy_words(prev, m, rng, even=True))
        inits += [np.where(rng.random((c, m)) < 0.5, 1, -1) for _ in range(restarts)]
        best = None
        for init in inits:
            init = init.astype(np.int64)
            start_dist = prev + (m - init @ init.T) // 2
            np.fill_diagonal(start_dist, 10**9)
            for block, dist in ((init, start_dist), _local_search(prev, init.copy(), rng, gamma)):
                score = _score(dist)
                if best is None or score > best[0]:
                    best = (score, block, dist)
        assert best is not None  # inits is never empty
        _, block, dist = best
        np.fill_diagonal(dist, 0)
        blocks.append(block)
        prev, start = dist, k
    return _to_tensor(np.concatenate(blocks, axis=1))


def _greedy_words(prev: np.ndarray, m: int, rng: np.random.Generator, even: bool) -> np.ndarray:
    """Farthest-point choice over all 2^m words (or only the even-weight ones): classes are placed
    in random order, each taking the word that maximises its min distance (prefix distance + block
    distance) to the classes already placed; ties broken at random."""
    c = prev.shape[0]
    words = ((np.arange(2**m)[:, None] >> np.arange(m)[None, :]) & 1) * 2 - 1
    if even:
        words = words[(words < 0).sum(axis=1) % 2 == 0]
    order = rng.permutation(c)
    chosen = np.zeros((c, m), dtype=np.int64)
    chosen[order[0]] = words[rng.integers(words.shape[0])]
    for pos in range(1, c):
        cls, placed = order[pos], order[:pos]
        to_placed = prev[cls, placed][None, :] + (m - words @ chosen[placed].T) // 2  # [W, placed]
        nearest = to_placed.min(axis=1)
        chosen[cls] = words[rng.choice(np.flatnonzero(nearest == nearest.max()))]
    return chosen


def labels_to_centers(labels: torch.Tensor, centers: torch.Tensor, tie_break: torch.Tensor) -> torch.Tensor:
    """Target code per item: sign of the sum of its labels' centres (= its centre when single-label).

    Bits where the sum is zero (opposite votes, or no label) take the fixed `tie_break` bit, as in
    CSQ/DPN's released multi-label rule.
    """
    votes = labels.to(centers.dtype) @ centers
    return torch.where(votes > 0, 1.0, torch.where(votes < 0, -1.0, tie_break.expand_as(votes))).to(centers.dtype)
