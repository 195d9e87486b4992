"""LCDSH logistic + similarity-agreement loss against a loop over the batch's pairs."""

from __future__ import annotations

import math

import pytest
import torch

from nhl.losses import build_loss


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def reference_lcdsh(u, labels, lam):
    n = len(u)
    b = [[1.0 if x >= 0 else -1.0 for x in row] for row in u]
    logistic, agreement = 0.0, 0.0
    for i in range(n):
        for j in range(n):
            s = 1.0 if float(labels[i] @ labels[j]) > 0 else -1.0
            theta = float(u[i] @ u[j]) / 2
            phi = sum(x * y for x, y in zip(b[i], b[j], strict=True)) / 2
            logistic += math.log(1 + math.exp(-s * theta))
            agreement += (sigmoid(theta) - sigmoid(phi)) ** 2
    return logistic / n**2 + lam * agreement / n**2


def test_lcdsh_matches_pair_loop():
    torch.manual_seed(0)
    loss = build_loss("lcdsh", normalise=False, bits=5, num_classes=3, num_train=10)
    assert loss.quant_weight == 3.0 and not loss.uses_memory_bank and loss.pairwise
    u = torch.randn(4, 5, dtype=torch.float64)
    u[1, 2] = 0.0  # sign(0) counts as +1
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    value = loss(u, labels, torch.arange(4))
    assert value.item() == pytest.approx(reference_lcdsh(u.numpy(), labels.numpy(), 3.0), rel=1e-10)


def test_lcdsh_gradient_reaches_u_and_loss_falls_toward_ideal_codes():
    torch.manual_seed(2)
    loss = build_loss("lcdsh", normalise=False, bits=16, num_classes=2, num_train=10)
    codes = torch.where(torch.rand(1, 16) < 0.5, 1.0, -1.0) * torch.tensor([[1.0], [-1.0]])
    labels = torch.eye(2)[[0, 1, 0, 1, 0, 1]]
    start = torch.randn(6, 16)
    values = []
    for t in (0.0, 0.5, 1.0):
        u = ((1 - t) * start + t * labels @ codes).requires_grad_(True)
        value = loss(u, labels, torch.arange(6))
        value.backward()
        assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
        values.append(value.item())
    assert values[0] > values[1] > values[2] and values[2] < 1e-3
