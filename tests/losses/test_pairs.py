"""Pair weighting shared by the pairwise losses, against hand-worked batches."""

from __future__ import annotations

import pytest
import torch

from nhl.losses.pairs import balanced_weight, pair_mean


def _one_similar_pair_in_ten() -> torch.Tensor:
    """5 items, classes 0, 0, 1, 2, 3: of the 10 unordered pairs one is similar (items 0 and 1)."""
    labels = torch.eye(4)[[0, 0, 1, 2, 3]]
    return (labels @ labels.T) > 0


def test_balanced_weight_of_one_similar_pair_in_ten_by_hand():
    similar = _one_similar_pair_in_ten()
    weight = 1.0 - torch.eye(5)                      # batch pairs: the 20 ordered pairs i != j
    balanced = balanced_weight(similar, weight)
    # 2 ordered similar pairs share 1/2: 1/4 each; 18 dissimilar pairs share 1/2: 1/36 each; diagonal 0
    expected = torch.full((5, 5), 1 / 36)
    expected[0, 1] = expected[1, 0] = 1 / 4
    expected.fill_diagonal_(0)
    assert torch.allclose(balanced, expected)
    # the unweighted mean gives the similar pairs 2/20 = 10% of the loss; balanced, 50%
    values = similar.float()
    assert pair_mean(values, weight).item() == pytest.approx(0.1)
    assert pair_mean(values, balanced).item() == pytest.approx(0.5)


def test_balanced_weight_keeps_zero_weights_and_one_kind_batches():
    similar = _one_similar_pair_in_ten()
    weight = torch.ones(5, 5)
    weight[:, 4] = 0.0                               # e.g. an unseen bank row
    balanced = balanced_weight(similar, weight)
    assert torch.all(balanced[:, 4] == 0)
    assert balanced[similar].sum().item() == pytest.approx(0.5)
    assert balanced[~similar].sum().item() == pytest.approx(0.5)
    all_similar = torch.ones(3, 3, dtype=torch.bool)
    assert torch.equal(balanced_weight(all_similar, torch.ones(3, 3)), torch.ones(3, 3))
