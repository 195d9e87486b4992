"""Hash centres: Hadamard / random balanced rules, prefix-consistent centres, distance helpers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
import torch

from nhl.losses import build_length_losses
from nhl.losses.centers import (
    center_distance_stats,
    hadamard_centers,
    hadamard_matrix,
    labels_to_centers,
    min_pairwise_distance,
    prefix_consistent_centers,
    random_balanced_centers,
)

LENGTHS = [8, 16, 32, 64, 128]


def brute_min_distance(codes: np.ndarray) -> int:
    """Smallest Hamming distance over all pairs, by counting differing entries pair by pair."""
    return min(int((codes[i] != codes[j]).sum()) for i, j in itertools.combinations(range(len(codes)), 2))


@pytest.mark.parametrize("n", [1, 2, 4, 8, 64])
def test_hadamard_matrix_matches_scipy(n):
    assert np.array_equal(hadamard_matrix(n), scipy.linalg.hadamard(n))


def test_hadamard_matrix_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        hadamard_matrix(12)


def test_hadamard_centers_are_rows_of_h_and_minus_h():
    h = scipy.linalg.hadamard(16)
    expected = np.concatenate([h, -h])[:20]
    assert np.array_equal(hadamard_centers(20, 16).numpy(), expected)
    # rows of [H; -H] are at distance bits/2, except a row and its negation (bits)
    assert brute_min_distance(expected) == 8


def test_hadamard_centers_beyond_2k_classes_add_random_balanced_rows():
    c = hadamard_centers(40, 16, seed=3).numpy()
    h = scipy.linalg.hadamard(16)
    assert np.array_equal(c[:32], np.concatenate([h, -h]))
    assert (c[32:] == -1).sum(axis=1).tolist() == [8] * 8
    assert torch.equal(hadamard_centers(40, 16, seed=3), hadamard_centers(40, 16, seed=3))


def test_hadamard_centers_for_non_power_of_two_bits_are_random_balanced():
    c = hadamard_centers(6, 12, seed=0).numpy()
    assert c.shape == (6, 12) and set(np.unique(c)) == {-1.0, 1.0}
    assert (c == -1).sum(axis=1).tolist() == [6] * 6


@pytest.mark.parametrize("bits", [7, 8, 48])
def test_random_balanced_centers(bits):
    c = random_balanced_centers(30, bits, seed=1).numpy()
    assert c.shape == (30, bits) and set(np.unique(c)) == {-1.0, 1.0}
    assert (c == -1).sum(axis=1).tolist() == [bits // 2] * 30
    assert np.array_equal(c, random_balanced_centers(30, bits, seed=1).numpy())
    assert not np.array_equal(c, random_balanced_centers(30, bits, seed=2).numpy())


def test_distance_helpers_match_brute_force():
    rng = np.random.default_rng(0)
    codes = np.where(rng.random((12, 20)) < 0.5, 1.0, -1.0)
    pairs = [int((codes[i] != codes[j]).sum()) for i, j in itertools.combinations(range(12), 2)]
    stats = center_distance_stats(torch.from_numpy(codes))
    assert min_pairwise_distance(codes) == min(pairs) == stats["min"]
    assert stats["max"] == max(pairs)
    assert stats["mean"] == pytest.approx(np.mean(pairs))
    assert stats["pairs_at_min"] == pairs.count(min(pairs))
    with pytest.raises(ValueError, match="at least two"):
        min_pairwise_distance(codes[:1])


def test_truncated_hadamard_rows_collide_at_8_bits():
    # the pitfall prefix-consistent centres exist for: rows r and r + 8 of H_128 share their first 8 bits
    long = hadamard_centers(10, 128).numpy()
    assert brute_min_distance(long[:, :8]) == 0


def test_independent_centres_are_not_prefixes_of_each_other():
    losses = build_length_losses("csq", [8, 16], num_classes=10, num_train=5, centers="independent")
    short, long = losses[0].centers, losses[1].centers
    assert not torch.equal(short, long[:, :8])


# Measured with seed 0 (the same values for seeds 1 and 2): the construction reaches bits/2 at
# every length for 10 classes (8 bits: 4 is the most any 10 codes of 8 bits can have, A(8,5) = 4),
# and for 100 classes 2 at 8 bits (the most possible: A(8,3) = 20 < 100), 4, 12, 28 and 60.
@pytest.mark.parametrize(
    "num_classes,bounds",
    [
        (10, [4, 8, 17, 34, 70]),
        (100, [2, 4, 12, 28, 60]),
    ],
)
def test_prefix_consistent_centers_min_distance_at_every_length(num_classes, bounds):
    table = prefix_consistent_centers(num_classes, LENGTHS, seed=0).numpy()
    assert table.shape == (num_classes, 128) and set(np.unique(table)) == {-1.0, 1.0}
    for k, bound in zip(LENGTHS, bounds, strict=True):
        assert brute_min_distance(table[:, :k]) >= bound, k


def test_prefix_consistent_centers_beat_truncation_at_8_bits_for_other_seeds():
    for seed in (1, 2):
        table = prefix_consistent_centers(10, LENGTHS, seed=seed).numpy()
        assert [brute_min_distance(table[:, :k]) >= k // 2 for k in LENGTHS] == [True] * 5


def test_prefix_consistent_centers_are_seeded_and_validated():
    a = prefix_consistent_centers(12, [4, 8, 12], seed=5)
    assert torch.equal(a, prefix_consistent_centers(12, [4, 8, 12], seed=5))
    assert not torch.equal(a, prefix_consistent_centers(12, [4, 8, 12], seed=6))
    with pytest.raises(ValueError, match="increasing"):
        prefix_consistent_centers(10, [16, 8])
    assert prefix_consistent_centers(1, [4, 8]).shape == (1, 8)


def test_nested_losses_get_prefixes_of_one_table():
    losses = build_length_losses("csq", LENGTHS, num_classes=10, num_train=5, centers="prefix", seed=0)
    table = prefix_consistent_centers(10, LENGTHS, seed=0)
    for loss, k in zip(losses, LENGTHS, strict=True):
        assert torch.equal(loss.centers, table[:, :k])


def test_labels_to_centers_single_label_and_multi_label_votes():
    centers = torch.tensor([[1.0, 1.0, -1.0, 1.0], [1.0, -1.0, -1.0, -1.0], [-1.0, 1.0, 1.0, -1.0]])
    tie = torch.tensor([-1.0, 1.0, 1.0, -1.0])
    labels = torch.tensor(
        [
            [0.0, 1.0, 0.0],  # single label: its own centre
            [1.0, 1.0, 0.0],  # votes (2, 0, -2, 0): ties at bits 1 and 3
            [1.0, 1.0, 1.0],  # votes (1, 1, -1, -1)
            [0.0, 0.0, 0.0],
        ]
    )  # no label: all ties
    expected = torch.tensor(
        [[1.0, -1.0, -1.0, -1.0], [1.0, 1.0, -1.0, -1.0], [1.0, 1.0, -1.0, -1.0], [-1.0, 1.0, 1.0, -1.0]]
    )
    assert torch.equal(labels_to_centers(labels, centers, tie), expected)
