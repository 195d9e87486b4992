"""DPN polarisation loss against a per-element re-computation of its formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nhl.losses import build_loss

CENTERS = torch.tensor([[1.0, 1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, 1.0, 1.0]])


def reference_dpn(u: np.ndarray, targets: np.ndarray, margin: float) -> float:
    """mean over items and bits of max(0, margin - u * t)."""
    terms = [
        max(0.0, margin - x * t) for row, t_row in zip(u, targets, strict=True) for x, t in zip(row, t_row, strict=True)
    ]
    return sum(terms) / len(terms)


def test_dpn_matches_formula_single_and_multi_label():
    loss = build_loss("dpn", bits=4, num_classes=3, num_train=10, centers=CENTERS, margin=1.5)
    u = torch.tensor([[0.3, -1.2, 0.5, 2.0], [-0.7, 0.1, 1.5, -0.4], [1.1, 0.9, -0.2, 0.6]])
    labels = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    # item 1 votes (0, 2, 0, 0) -> ties at bits 0, 2, 3; item 2 votes (1, 1, 1, -1)
    tie = loss.tie_break.numpy()
    targets = np.array([[1, -1, 1, -1], [tie[0], 1, tie[2], tie[3]], [1, 1, 1, -1]], dtype=float)
    value = loss(u, labels, torch.arange(3))
    assert value.item() == pytest.approx(reference_dpn(u.numpy(), targets, 1.5), rel=1e-6)


def test_dpn_default_targets_are_random_balanced():
    loss = build_loss("dpn", bits=16, num_classes=6, num_train=10, seed=2)
    c = loss.centers.numpy()
    assert (c == -1).sum(axis=1).tolist() == [8] * 6
    assert loss.margin == 1.0 and loss.uses_centers and not loss.pairwise
    assert torch.equal(loss.centers, build_loss("dpn", bits=16, num_classes=6, num_train=10, seed=2).centers)


def test_dpn_gradient_reaches_u_and_loss_falls_toward_the_target():
    torch.manual_seed(0)
    loss = build_loss("dpn", bits=8, num_classes=4, num_train=10)
    labels = torch.eye(4)[[0, 1, 2, 3]]
    ideal = 2.0 * labels @ loss.centers
    start = torch.randn(4, 8)
    values = []
    for t in (0.0, 0.5, 1.0):
        u = ((1 - t) * start + t * ideal).requires_grad_(True)
        value = loss(u, labels, torch.arange(4))
        value.backward()
        assert u.grad.abs().sum() > 0 or t == 1.0
        values.append(value.item())
    assert values[0] > values[1] > values[2] == 0.0
