"""Semantic hash centres (the first two stages of SHC; the third is `nhl.losses.shc`).

(a) Class similarity `[C, C]` (values in [0, 1], 1 on the diagonal) from a classifier trained on
    the training split: `class_similarity_from_features` fits a multinomial logistic regression
    on given features and uses out-of-fold predicted probabilities (in-sample ones would be almost
    one-hot on the training split and show no confusion); `class_similarity_from_probabilities`
    turns any classifier's probabilities into a similarity: P[a, b] = mean probability of class b
    over the items of class a, symmetrised, off-diagonal scaled so the most confused pair is 1.
    A label hierarchy gives one too (`nhl.hierarchy.Hierarchy.similarity`).
(b) `semantic_centers`: +-1 centres whose pairwise Hamming distances follow the similarity while
    no two centres come closer than a minimum distance, at every code length at once. For length
    k with minimum distance d_k the target distance of classes a, b is
        T_k(a, b) = d_k + (k/2 - d_k) * (1 - S[a, b])
    (related classes as close as allowed, unrelated ones at least at k/2, the distance of random
    or Hadamard centres), and the centres minimise
        sum_k sum_{a<b} cost(H_k(a, b) - T_k(a, b)) / k^2,  cost(g) = g^2 if g < 0 else S[a, b] * g^2
    subject to H_k(a, b) >= d_k for every length k, where H_k is the distance of the k-bit
    prefixes: a pair closer than its target always costs, a pair farther than it costs in
    proportion to how related the classes are (unrelated classes may stay far apart; with no
    similarity at all the well-spread initial centres are already optimal). The search starts from
    `prefix_consistent_centers` (feasible by construction: d_k is capped at what they reach) and
    makes single-bit flips, each the best feasible improving flip of one centre, until a full sweep
    improves nothing. One table serves every length, so the
    centres are prefix-consistent: nested training optimises all lengths jointly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from nhl.losses.centers import center_distance_stats, pairwise_hamming, prefix_consistent_centers
from nhl.models.head import check_lengths

# ---------------------------------------------------------------- (a) class similarity


def class_similarity_from_probabilities(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`[C, C]` similarity from predicted class probabilities `[N, C]` of items with multi-hot labels."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != labels.shape:
        raise ValueError(
            f"probs / labels: expected two [N, C] matrices of the same shape, got {probs.shape} and {labels.shape}"
        )
    counts = labels.sum(axis=0)
    confusion = (labels.T @ probs) / np.maximum(counts, 1)[:, None]  # row a: mean prediction on class a
    sim = (confusion + confusion.T) / 2
    np.fill_diagonal(sim, 0.0)
    top = sim.max()
    if top > 0:
        sim = sim / top
    np.fill_diagonal(sim, 1.0)
    return sim


def class_similarity_from_features(
    features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0, max_iter: int = 2000
) -> np.ndarray:
    """Stage (a) on given features of the training split (single-label): a logistic-regression
    classifier's out-of-fold probabilities through `class_similarity_from_probabilities`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
    if labels.ndim != 2 or features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"features / labels: expected [N, d] and [N, C], got {features.shape} and {labels.shape}")
    if not np.all(labels.sum(axis=1) == 1):
        raise ValueError("labels: class_similarity_from_features needs single-label (one-hot) items")
    target = labels.argmax(axis=1)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = np.zeros(labels.shape)
    present = np.unique(target)
    probs[:, present] = cross_val_predict(model, features, target, cv=splitter, method="predict_proba")
    return class_similarity_from_probabilities(probs, labels)


def resolve_class_similarity(source: Any, num_classes: int) -> np.ndarray:
    """A `[C, C]` similarity from a matrix (array, tensor, nested list; symmetric, in [0, 1]), a
    hierarchy (name, path, `Hierarchy`), or None: all classes equally dissimilar (0 off the diagonal)."""
    from nhl.hierarchy import class_similarity

    return np.eye(num_classes) if source is None else class_similarity(source, num_classes)


# ---------------------------------------------------------------- (b) centre optimisation


def default_min_distances(lengths: Sequence[int], fraction: float = 0.25) -> list[int]:
    """ceil(fraction * k) for each length (CSQ's bits/4 separation by default), at least 1."""
    if not 0 < fraction <= 0.5:
        raise ValueError(f"min_distance_fraction: expected a number in (0, 0.5], got {fraction!r}")
    return [max(1, math.ceil(fraction * k)) for k in lengths]


def semantic_centers(
    class_similarity: np.ndarray | torch.Tensor,
    lengths: Sequence[int],
    seed: int = 0,
    min_distance_fraction: float = 0.25,
    max_sweeps: int = 200,
) -> torch.Tensor:
    """`[C, max(lengths)]` +-1 centres for stage (b); see the module docstring."""
    lengths = check_lengths(list(lengths))
    if class_similarity is None or np.ndim(class_similarity) != 2:
        raise ValueError("class_similarity: semantic_centers needs a [C, C] matrix (see resolve_class_similarity)")
    sim = resolve_class_similarity(class_similarity, len(class_similarity))
    c = sim.shape[0]
    codes = prefix_consistent_centers(c, lengths, seed=seed).numpy().astype(np.int64)
    if c < 2:
        return torch.from_numpy(codes.astype(np.float32))
    floors = [
        min(want, int(pairwise_hamming(codes[:, :k])[np.triu_indices(c, 1)].min()))
        for want, k in zip(default_min_distances(lengths, min_distance_fraction), lengths, strict=True)
    ]
    targets = [d + max(k / 2 - d, 0.0) * (1 - sim) for d, k in zip(floors, lengths, strict=True)]
    codes = _flip_search(codes, lengths, floors, targets, sim, np.random.default_rng([seed, 23]), max_sweeps)
    return torch.from_numpy(codes.astype(np.float32))


def _pair_cost(gap: np.ndarray, above_weight: np.ndarray) -> np.ndarray:
    """g^2 below the target, above_weight * g^2 above it."""
    return np.where(gap < 0, 1.0, above_weight) * gap**2


def _flip_search(
    codes: np.ndarray,
    lengths: list[int],
    floors: list[int],
    targets: list[np.ndarray],
    sim: np.ndarray,
    rng: np.random.Generator,
    max_sweeps: int,
) -> np.ndarray:
    """Best-improvement single-bit flips per centre under the per-length minimum distances."""
    c, width = codes.shape
    dists = [pairwise_hamming(codes[:, :k]).astype(np.float64) for k in lengths]
    active = [np.arange(width) < k for k in lengths]  # bit b counts at length k
    for _ in range(max_sweeps):
        moved = False
        for r in rng.permutation(c):
            change = np.where(codes == codes[r], 1.0, -1.0)  # [C, width]: new - old distance
            change[r] = 0.0
            delta = np.zeros(width)
            feasible = np.ones(width, dtype=bool)
            for k, dist, target, floor, mask in zip(lengths, dists, targets, floors, active, strict=True):
                gap = (dist[r] - target[r])[:, None]
                weight = sim[r][:, None]
                cost = _pair_cost(gap + change, weight) - _pair_cost(gap, weight)  # [C, width]
                cost[r] = 0.0
                delta += np.where(mask, cost.sum(axis=0) / k**2, 0.0)
                after = dist[r][:, None] + change
                after[r] = np.inf
                feasible &= ~mask | (after.min(axis=0) >= floor)
            delta[~feasible] = np.inf
            b = int(np.argmin(delta))
            if delta[b] < -1e-12:
                codes[r, b] = -codes[r, b]
                for dist, mask in zip(dists, active, strict=True):
                    if mask[b]:
                        dist[r] += change[:, b]
                        dist[:, r] += change[:, b]
                moved = True
        if not moved:
            break
    return codes


def center_distance_report(
    centers: torch.Tensor | np.ndarray, lengths: Sequence[int], class_similarity: Any = None
) -> dict[int, dict[str, float]]:
    """Per length: min / mean / max pairwise Hamming distance of the prefixes, pairs at the minimum,
    and with a similarity the Pearson correlation between similarity and distance over class pairs
    (negative: related classes are closer)."""
    table = centers.numpy() if isinstance(centers, torch.Tensor) else np.asarray(centers)
    sim = None if class_similarity is None else resolve_class_similarity(class_similarity, table.shape[0])
    out = {}
    for k in check_lengths(list(lengths)):
        stats: dict[str, float] = dict(center_distance_stats(table[:, :k]))
        if sim is not None:
            upper = np.triu_indices(table.shape[0], 1)
            d, s = pairwise_hamming(table[:, :k])[upper].astype(float), sim[upper]
            stats["similarity_corr"] = float(np.corrcoef(s, d)[0, 1]) if d.std() > 0 and s.std() > 0 else 0.0
        out[k] = stats
    return out
