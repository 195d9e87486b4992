"""CSQ loss against a per-element re-computation of its formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from nhl.losses import build_loss

CENTERS = torch.tensor([[1.0, 1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, 1.0, 1.0]])


def reference_csq(u: np.ndarray, targets: np.ndarray, lam: float) -> float:
    """mean over items and bits of BCE((tanh u + 1)/2, (t + 1)/2) + lam * mean((|tanh u| - 1)^2)."""
    bce, quant, count = 0.0, 0.0, 0
    for row, t_row in zip(u, targets, strict=True):
        for x, t in zip(row, t_row, strict=True):
            p, q = (math.tanh(x) + 1) / 2, (t + 1) / 2
            bce += -(q * math.log(p) + (1 - q) * math.log(1 - p))
            quant += (abs(math.tanh(x)) - 1) ** 2
            count += 1
    return bce / count + lam * quant / count


def test_csq_matches_formula_single_and_multi_label():
    loss = build_loss("csq", bits=4, num_classes=3, num_train=10, centers=CENTERS, quant_weight=0.5)
    u = torch.tensor([[0.3, -1.2, 0.5, 2.0], [-0.7, 0.1, 1.5, -0.4], [1.1, 0.9, -0.2, 0.6]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    # item 2 votes (1, 1, 1, -1): no tie, so its target is (1, 1, 1, -1)
    targets = np.array([[1, 1, -1, -1], [-1, 1, 1, 1], [1, 1, 1, -1]], dtype=float)
    value = loss(u, labels, torch.arange(3))
    assert value.item() == pytest.approx(reference_csq(u.numpy(), targets, 0.5), rel=1e-10)


def test_csq_multi_label_ties_use_the_fixed_tie_break_bits():
    loss = build_loss("csq", bits=4, num_classes=3, num_train=10, centers=CENTERS, seed=4)
    u = torch.tensor([[0.2, -0.3, 0.4, -0.5]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)  # votes (2, 0, 0, -2)
    tie = loss.tie_break.numpy()
    assert set(np.unique(tie)) <= {-1.0, 1.0}
    targets = np.array([[1, tie[1], tie[2], -1]])
    assert loss(u, labels, torch.arange(1)).item() == pytest.approx(reference_csq(u.numpy(), targets, 1e-4))


def test_csq_default_centres_follow_the_hadamard_rule():
    loss = build_loss("csq", bits=16, num_classes=10, num_train=10)
    h = scipy.linalg.hadamard(16)
    assert np.array_equal(loss.centers.numpy(), np.concatenate([h, -h])[:10])
    assert loss.quant_weight == 1e-4 and loss.uses_centers and not loss.uses_memory_bank


def test_csq_gradient_reaches_u_and_loss_falls_toward_the_centre():
    torch.manual_seed(0)
    loss = build_loss("csq", bits=8, num_classes=4, num_train=10)
    labels = torch.eye(4)[[0, 1, 2, 3, 1]]
    ideal = 3.0 * labels @ loss.centers
    start = torch.randn(5, 8)
    values = []
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        u = ((1 - t) * start + t * ideal).requires_grad_(True)
        value = loss(u, labels, torch.arange(5))
        value.backward()
        assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
        values.append(value.item())
    assert values == sorted(values, reverse=True) and values[-1] < 0.01


def test_csq_rejects_bad_centres_and_shapes():
    with pytest.raises(ValueError, match="centers"):
        build_loss("csq", bits=4, num_classes=3, num_train=10, centers=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="centers"):
        build_loss("csq", bits=8, num_classes=3, num_train=10, centers=CENTERS)
    loss = build_loss("csq", bits=4, num_classes=3, num_train=10)
    with pytest.raises(ValueError, match="u"):
        loss(torch.zeros(2, 5), torch.zeros(2, 3), torch.arange(2))
