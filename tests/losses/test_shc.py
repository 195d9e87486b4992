"""SHC: class similarity (stage a), semantic centre optimisation (stage b) checked by loops over
class pairs, and the CSQ-style loss (stage c) against its formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nhl.losses import build_loss
from nhl.losses.semantic_centers import (
    center_distance_report,
    class_similarity_from_features,
    class_similarity_from_probabilities,
    semantic_centers,
)
from nhl.losses.shc import SHCLoss

# 8 classes: two groups of four, plus a weaker link between classes 0 and 4
GROUPS = [0, 0, 0, 0, 1, 1, 1, 1]
SIM = np.array([[1.0 if a == b else 0.9 if GROUPS[a] == GROUPS[b] else 0.0 for b in range(8)] for a in range(8)])


def hamming(a, b) -> int:
    return sum(1 for x, y in zip(a, b, strict=True) if x != y)


def pair_distances(codes, k):
    """{(a, b): Hamming distance of the k-bit prefixes} by loops."""
    c = len(codes)
    return {(a, b): hamming(codes[a][:k], codes[b][:k]) for a in range(c) for b in range(a + 1, c)}


def objective(codes, lengths, floors, sim):
    """sum_k sum_{a<b} cost(H_k - T_k) / k^2 with T_k = d_k + (k/2 - d_k)(1 - S) and cost(g) = g^2 below
    the target, S * g^2 above it."""
    total = 0.0
    for k, d in zip(lengths, floors, strict=True):
        for (a, b), h in pair_distances(codes, k).items():
            gap = h - (d + (k / 2 - d) * (1 - sim[a, b]))
            total += (gap**2 if gap < 0 else sim[a, b] * gap**2) / k**2
    return total


def test_related_classes_end_closer_with_the_minimum_distance_at_every_length():
    lengths = [8, 16, 32]
    table = SHCLoss.prefix_centers(8, lengths, seed=0, class_similarity=SIM).numpy()
    assert table.shape == (8, 32) and set(np.unique(table)) == {-1.0, 1.0}
    for k in lengths:
        dist = pair_distances(table, k)
        assert min(dist.values()) >= math.ceil(k / 4)
        intra = np.mean([h for (a, b), h in dist.items() if GROUPS[a] == GROUPS[b]])
        inter = np.mean([h for (a, b), h in dist.items() if GROUPS[a] != GROUPS[b]])
        assert intra < inter, (k, intra, inter)
    # the initial well-spread centres score worse on the objective the search descends
    from nhl.losses.centers import prefix_consistent_centers

    init = prefix_consistent_centers(8, lengths, seed=0).numpy()
    floors = [2, 4, 8]
    assert objective(table, lengths, floors, SIM) < objective(init, lengths, floors, SIM)


def test_nested_centres_are_prefixes_and_the_report_sees_it():
    lengths = [8, 16, 32]
    table = SHCLoss.prefix_centers(8, lengths, seed=3, class_similarity=SIM)
    report = center_distance_report(table, lengths, SIM)
    for k in lengths:
        dist = pair_distances(table.numpy(), k)
        assert report[k]["min"] == min(dist.values())
        assert report[k]["mean"] == pytest.approx(np.mean(list(dist.values())))
        assert report[k]["similarity_corr"] < 0  # similar classes are closer
    # nested losses built from the table see its prefixes; a given table is used as-is
    for k in lengths:
        loss = build_loss("shc", bits=k, num_classes=8, num_train=4, centers=table[:, :k].clone())
        assert torch.equal(loss.centers, table[:, :k])


def test_without_similarity_the_well_spread_initial_centres_are_kept():
    from nhl.losses.centers import prefix_consistent_centers

    loss = build_loss("shc", bits=16, num_classes=10, num_train=4)
    assert torch.equal(loss.centers, prefix_consistent_centers(10, [16], seed=0))
    dist = pair_distances(loss.centers.numpy(), 16)
    assert min(dist.values()) >= 8  # nothing pulls unrelated classes together
    again = build_loss("shc", bits=16, num_classes=10, num_train=4)
    assert torch.equal(again.centers, loss.centers)  # deterministic for a seed


def test_a_hierarchy_name_gives_the_similarity():
    loss = build_loss("shc", bits=32, num_classes=10, num_train=4, class_similarity="digits")
    groups = {0: "l", 6: "l", 8: "l", 9: "l", 1: "s", 4: "s", 7: "s", 2: "c", 3: "c", 5: "c"}
    dist = pair_distances(loss.centers.numpy(), 32)
    intra = np.mean([h for (a, b), h in dist.items() if groups[a] == groups[b]])
    inter = np.mean([h for (a, b), h in dist.items() if groups[a] != groups[b]])
    assert intra < inter and min(dist.values()) >= 8


def test_similarity_from_probabilities_matches_a_hand_computation():
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.3, 0.6, 0.1], [0.0, 0.1, 0.9]])
    labels = np.eye(3)[[0, 0, 1, 2]]
    # mean prediction per class: class 0 -> (0.6, 0.3, 0.1); class 1 -> (0.3, 0.6, 0.1); class 2 -> (0, 0.1, 0.9)
    # symmetrised off-diagonal: (0,1) 0.3, (0,2) 0.05, (1,2) 0.1; scaled by the largest (0.3)
    expected = np.array([[1, 1, 0.05 / 0.3], [1, 1, 0.1 / 0.3], [0.05 / 0.3, 0.1 / 0.3, 1]])
    assert np.allclose(class_similarity_from_probabilities(probs, labels), expected)


def test_similarity_from_features_finds_the_overlapping_classes():
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [0.8, 0.0], [8.0, 8.0]])  # classes 0 and 1 overlap, 2 apart
    target = np.repeat([0, 1, 2], 40)
    features = means[target] + rng.normal(size=(120, 2))
    sim = class_similarity_from_features(features, np.eye(3)[target], folds=4)
    assert sim[0, 1] == pytest.approx(1.0) and sim[0, 2] < 0.1 and sim[1, 2] < 0.1
    with pytest.raises(ValueError, match="single-label"):
        class_similarity_from_features(features, np.ones((120, 3)))


def reference_csq(u, targets, lam):
    bce, quant, count = 0.0, 0.0, 0
    for row, t_row in zip(u, targets, strict=True):
        for x, t in zip(row, t_row, strict=True):
            p, q = (math.tanh(x) + 1) / 2, (t + 1) / 2
            bce += -(q * math.log(p) + (1 - q) * math.log(1 - p))
            quant += (abs(math.tanh(x)) - 1) ** 2
            count += 1
    return bce / count + lam * quant / count


def test_shc_loss_is_csq_toward_its_centres():
    loss = build_loss("shc", bits=8, num_classes=8, num_train=10, class_similarity=SIM, quant_weight=0.2)
    u = torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    labels = torch.eye(8, dtype=torch.float64)[[0, 3, 4, 7, 1]]
    targets = loss.centers.numpy()[[0, 3, 4, 7, 1]].astype(float)
    assert loss(u, labels, torch.arange(5)).item() == pytest.approx(reference_csq(u.numpy(), targets, 0.2), rel=1e-10)
    assert loss.uses_centers and not loss.uses_memory_bank and not loss.pairwise


def test_shc_gradient_reaches_u_and_loss_falls_toward_the_centre():
    loss = build_loss("shc", bits=16, num_classes=8, num_train=10, class_similarity=SIM)
    labels = torch.eye(8)[[0, 1, 5, 6]]
    ideal = 3.0 * labels @ loss.centers
    start = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    values = []
    for t in (0.0, 0.5, 1.0):
        u = ((1 - t) * start + t * ideal).requires_grad_(True)
        value = loss(u, labels, torch.arange(4))
        value.backward()
        assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
        values.append(value.item())
    assert values[0] > values[1] > values[2]


def test_bad_similarities_are_rejected():
    with pytest.raises(ValueError, match="symmetric"):
        build_loss("shc", bits=8, num_classes=2, num_train=4, class_similarity=[[1.0, 0.2], [0.5, 1.0]])
    with pytest.raises(ValueError, match=r"\[3, 3\]"):
        build_loss("shc", bits=8, num_classes=3, num_train=4, class_similarity=np.eye(2))
    with pytest.raises(ValueError, match="min_distance_fraction"):
        semantic_centers(np.eye(3), [8], min_distance_fraction=0.9)


def test_the_search_ends_where_no_single_feasible_flip_improves():
    lengths, floors = [8, 16], [2, 4]
    table = semantic_centers(SIM, lengths, seed=1).numpy()
    assert all(min(pair_distances(table, k).values()) >= d for k, d in zip(lengths, floors, strict=True))
    current = objective(table, lengths, floors, SIM)
    for r in range(8):
        for b in range(16):
            flipped = table.copy()
            flipped[r, b] = -flipped[r, b]
            feasible = all(min(pair_distances(flipped, k).values()) >= d for k, d in zip(lengths, floors, strict=True))
            assert not feasible or objective(flipped, lengths, floors, SIM) >= current - 1e-12, (r, b)


def test_shc_states_its_class_limit_in_one_line():
    from nhl.losses.shc import MAX_CLASSES, SHCLoss

    with pytest.raises(ValueError, match=r"losses.shc: .*10,000 classes is beyond the supported 2,000"):
        build_loss("shc", bits=16, num_classes=10_000, num_train=10)
    with pytest.raises(ValueError, match="beyond the supported"):
        SHCLoss.prefix_centers(MAX_CLASSES + 1, [8, 16])
    # given centres (e.g. from the scalable generator) are used as-is at any class count
    loss = build_loss("shc", bits=8, num_classes=5000, num_train=10, centers=torch.ones(5000, 8))
    assert loss.centers.shape == (5000, 8)
