"""DTSH triplet likelihood against a loop over (anchor, positive, negative) triplets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nhl.losses import build_loss


def reference_dtsh(u, labels, margin, lam):
    n = len(u)
    anchors = []
    for i in range(n):
        pos = [p for p in range(n) if float(labels[i] @ labels[p]) > 0]
        neg = [q for q in range(n) if float(labels[i] @ labels[q]) == 0]
        if not pos or not neg:
            continue
        terms = [math.log(1 + math.exp(-(float(u[i] @ u[p]) - float(u[i] @ u[q]) - margin))) for p in pos for q in neg]
        anchors.append(sum(terms) / len(terms))
    triplet = sum(anchors) / len(anchors) if anchors else 0.0
    quant = np.mean([(x - (1.0 if x >= 0 else -1.0)) ** 2 for x in u.ravel()])
    return triplet + lam * quant


def test_dtsh_matches_triplet_loop():
    torch.manual_seed(0)
    loss = build_loss("dtsh", normalise=False, bits=5, num_classes=3, num_train=10)
    assert loss.margin == 5.0 and loss.quant_weight == 1.0 and not loss.uses_memory_bank
    u = torch.randn(5, 5, dtype=torch.float64)
    # item 4 shares a label with everyone: as an anchor it has no negative and is left out
    labels = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64
    )
    value = loss(u, labels, torch.arange(5))
    assert value.item() == pytest.approx(reference_dtsh(u.numpy(), labels.numpy(), 5.0, 1.0), rel=1e-10)


def test_dtsh_without_any_triplet_keeps_only_quantisation():
    loss = build_loss("dtsh", normalise=False, bits=3, num_classes=2, num_train=10, quant_weight=0.5)
    u = torch.tensor([[0.5, -2.0, 0.0], [1.5, 0.2, -0.3]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    value = loss(u, labels, torch.arange(2))
    assert value.item() == pytest.approx(reference_dtsh(u.detach().numpy(), labels.numpy(), 5.0, 0.5))
    value.backward()
    assert torch.isfinite(u.grad).all()


def test_dtsh_gradient_reaches_u_and_loss_falls_toward_ideal_codes():
    torch.manual_seed(2)
    loss = build_loss("dtsh", normalise=False, bits=16, num_classes=2, num_train=10)
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
    assert values[0] > values[1] > values[2] and values[2] < 1e-4
