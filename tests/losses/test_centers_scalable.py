"""Prefix-consistent centres for many classes: distances checked by brute force, prefix property."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nhl.losses.centers import prefix_consistent_centers, random_balanced_centers
from nhl.losses.centers_scalable import (
    pair_stats,
    prefix_distance_report,
    scalable_prefix_centers,
)

LENGTHS = [8, 16, 32, 64, 128]


def brute(codes: np.ndarray) -> tuple[int, float, int]:
    """(min, mean, pairs at min) of all pairwise Hamming distances, by an explicit [C, C] matrix."""
    c = codes.astype(np.int64)
    d = (c.shape[1] - c @ c.T) // 2
    pairs = d[np.triu_indices(len(c), 1)]
    return int(pairs.min()), float(pairs.mean()), int((pairs == pairs.min()).sum())


@pytest.fixture(scope="module")
def table():
    return prefix_consistent_centers(300, LENGTHS, seed=1)


def test_a_few_hundred_classes_use_the_scalable_method_and_are_prefix_consistent(table):
    assert table.shape == (300, 128) and set(torch.unique(table).tolist()) == {-1.0, 1.0}
    np.testing.assert_array_equal(table.numpy(), scalable_prefix_centers(300, LENGTHS, seed=1))
    # the table is built block by block: a shorter lengths list gives exactly its prefix
    shorter = scalable_prefix_centers(300, LENGTHS[:3], seed=1)
    np.testing.assert_array_equal(shorter, table.numpy()[:, :32])


def test_reported_distances_are_true_and_beat_random_balanced_at_every_length(table):
    report = prefix_distance_report(table.numpy(), LENGTHS, seed=1)
    for row in report:
        k = row["bits"]
        low, mean, at_min = brute(table.numpy()[:, :k])
        assert (row["min"], row["pairs_at_min"]) == (low, at_min)
        assert row["mean"] == pytest.approx(mean, abs=1e-9)
        r_low, r_mean, _ = brute(random_balanced_centers(300, k, seed=1).numpy())
        assert (row["random_min"], row["random_mean"]) == (r_low, pytest.approx(r_mean, abs=1e-9))
        assert row["min"] >= row["random_min"], row
    # from 32 bits on the repair clearly separates the classes (measured, seed 1: min 9/23/49 at
    # 32/64/128 bits against 4/14/40 for random balanced centres)
    assert all(r["min"] >= r["random_min"] + 4 for r in report[2:]), report


def test_pair_stats_counts_collisions_when_classes_outnumber_words():
    rng = np.random.default_rng(0)
    codes = np.where(rng.random((40, 4)) < 0.5, 1, -1).astype(np.int8)
    low, mean, at_min = brute(codes)
    assert pair_stats(codes) == {"min": low, "mean": pytest.approx(mean), "pairs_at_min": at_min}


def test_small_class_counts_keep_the_exact_search():
    auto = prefix_consistent_centers(20, [8, 16], seed=0)
    search = prefix_consistent_centers(20, [8, 16], seed=0, method="search")
    torch.testing.assert_close(auto, search)
    with pytest.raises(ValueError, match="method: 'fast' unknown"):
        prefix_consistent_centers(20, [8], method="fast")
