"""DCH Cauchy loss against a loop over the batch's pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nhl.losses import build_loss


def surrogate(a, b, bits):
    cos = float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-4)
    return (1 - min(cos, 0.99)) * bits / 2


def reference_dch(u, labels, gamma, lam):
    n, bits = u.shape
    s = [[1.0 if float(labels[i] @ labels[j]) > 0 else 0.0 for j in range(n)] for i in range(n)]
    n_sim = sum(map(sum, s))
    total = 0.0
    for i in range(n):
        for j in range(n):
            if 0 < n_sim < n * n:
                w = n * n / n_sim if s[i][j] else n * n / (n * n - n_sim)
            else:
                w = 1.0
            d = surrogate(u[i], u[j], bits)
            total += w * (s[i][j] * math.log(d / gamma) + math.log(1 + gamma / d))
    quant = np.mean([math.log(1 + surrogate(np.abs(row), np.ones(bits), bits) / gamma) for row in u])
    return total / (n * n) + lam * quant


def test_dch_matches_pair_loop_with_class_balance_weights():
    torch.manual_seed(0)
    loss = build_loss("dch", bits=6, num_classes=3, num_train=10)
    assert loss.gamma == 20.0 and loss.quant_weight == 0.1 and not loss.uses_memory_bank
    u = torch.randn(4, 6, dtype=torch.float64)
    u[3] = 2.0 * u[0]  # a similar pair at cosine 1: the 0.99 clamp keeps log(d) finite
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    value = loss(u, labels, torch.arange(4))
    assert value.item() == pytest.approx(reference_dch(u.numpy(), labels.numpy(), 20.0, 0.1), rel=1e-10)


def test_dch_single_kind_batch_uses_unit_weights():
    torch.manual_seed(1)
    loss = build_loss("dch", bits=6, num_classes=2, num_train=10, gamma=5.0, quant_weight=0.3)
    u = torch.randn(3, 6, dtype=torch.float64)
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)  # every pair similar
    value = loss(u, labels, torch.arange(3))
    assert value.item() == pytest.approx(reference_dch(u.numpy(), labels.numpy(), 5.0, 0.3), rel=1e-10)


def test_dch_gradient_reaches_u_and_loss_falls_toward_ideal_codes():
    torch.manual_seed(2)
    loss = build_loss("dch", bits=16, num_classes=2, num_train=10)
    codes = torch.where(torch.rand(1, 16) < 0.5, 1.0, -1.0) * torch.tensor([[1.0], [-1.0]])
    labels = torch.eye(2)[[0, 1, 0, 1, 0, 1]]
    start = torch.randn(6, 16)
    values = []
    for t in (0.0, 0.5, 1.0):
        u = ((1 - t) * start + t * labels @ codes).requires_grad_(True)
        value = loss(u, labels, torch.arange(6))
        value.backward()
        # at t = 1 every cosine is +-1, an extremum (and +1 is clamped): no gradient is left
        assert torch.isfinite(u.grad).all() and (u.grad.abs().sum() > 0 or t == 1.0)
        values.append(value.item())
    assert values[0] > values[1] > values[2]
