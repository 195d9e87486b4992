"""MDSH: softmax over scaled cosines to the class centres, against a per-element loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nhl.losses import build_length_losses, build_loss
from nhl.losses.centers import min_pairwise_distance

CENTERS = torch.tensor([[1.0, 1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, 1.0, 1.0]])


def log_sum_exp(values):
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def reference_mdsh(u, labels, centers, scale, lam):
    """-mean over items and classes of y log p + (1 - y) log(1 - p), p the softmax of scaled
    cosines; log(1 - p_c) = logsumexp over the other classes - logsumexp over all."""
    total, count = 0.0, 0
    for row, y in zip(u, labels, strict=True):
        z = [scale * float(row @ c) / (np.linalg.norm(row) * np.linalg.norm(c)) for c in centers]
        lse = log_sum_exp(z)
        for c in range(len(z)):
            log_p = z[c] - lse
            log_not_p = log_sum_exp(z[:c] + z[c + 1 :]) - lse
            total += y[c] * log_p + (1 - y[c]) * log_not_p
            count += 1
    quant = np.mean((np.abs(u) - 1) ** 2)
    return -total / count + lam * quant


def test_mdsh_matches_loop_single_and_multi_label():
    loss = build_loss("mdsh", bits=4, num_classes=3, num_train=10, centers=CENTERS, quant_weight=0.5)
    assert loss.scale == 2.0 and loss.uses_centers and not loss.uses_memory_bank and not loss.pairwise
    u = torch.tensor([[0.3, -1.2, 0.5, 2.0], [-0.7, 0.1, 1.5, -0.4], [1.1, 0.9, -0.2, 0.6]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    value = loss(u, labels, torch.arange(3))
    expected = reference_mdsh(u.numpy(), labels.numpy(), CENTERS.numpy(), 2.0, 0.5)
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_mdsh_stays_finite_when_one_class_dominates():
    loss = build_loss("mdsh", bits=4, num_classes=3, num_train=10, centers=CENTERS, scale=80.0)
    u = (2.0 * CENTERS[:2]).double().requires_grad_(True)  # cosine 1 to its own centre: 1 - p ~ e^-80
    labels = torch.eye(3, dtype=torch.float64)[[0, 1]]
    value = loss(u, labels, torch.arange(2))
    expected = reference_mdsh(u.detach().numpy(), labels.numpy(), CENTERS.numpy(), 80.0, 1e-4)
    assert math.isfinite(value.item()) and value.item() == pytest.approx(expected, rel=1e-9)
    value.backward()
    assert torch.isfinite(u.grad).all()


def test_mdsh_default_centres_are_separated_and_seeded():
    loss = build_loss("mdsh", bits=16, num_classes=10, num_train=10, seed=3)
    assert loss.quant_weight == 1e-4 and loss.scale == 4.0
    assert min_pairwise_distance(loss.centers) >= 8  # Hadamard rows reach 8; we never do worse
    same = build_loss("mdsh", bits=16, num_classes=10, num_train=10, seed=3)
    assert torch.equal(loss.centers, same.centers)


def test_mdsh_nested_prefix_centres_are_prefixes():
    losses = build_length_losses("mdsh", [4, 8, 16], num_classes=5, num_train=10, centers="prefix", seed=1)
    assert all(torch.equal(loss.centers, losses[-1].centers[:, : loss.bits]) for loss in losses)


def test_mdsh_gradient_reaches_u_and_loss_falls_toward_the_centre():
    torch.manual_seed(0)
    loss = build_loss("mdsh", bits=8, num_classes=4, num_train=10)
    labels = torch.eye(4)[[0, 1, 2, 3, 1]]
    ideal = labels @ loss.centers
    start = torch.randn(5, 8)
    values = []
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        u = ((1 - t) * start + t * ideal).requires_grad_(True)
        value = loss(u, labels, torch.arange(5))
        value.backward()
        assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
        values.append(value.item())
    assert values == sorted(values, reverse=True)
