"""DHN pairwise likelihood against a loop over (batch item, partner) pairs, in both pair modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nhl.losses import build_loss


def reference_dhn(u, labels, other_u, other_y, pairs, alpha):
    """Mean over (i, j) in `pairs` of log(1 + e^t) - s t with t = u_i . v_j / 2, plus
    alpha * mean log cosh(|u| - 1)."""
    terms = []
    for i, j in pairs:
        t = float(u[i] @ other_u[j]) / 2
        s = 1.0 if float(labels[i] @ other_y[j]) > 0 else 0.0
        terms.append(math.log(1 + math.exp(t)) - s * t)
    quant = np.mean([math.log(math.cosh(abs(x) - 1)) for x in u.ravel()])
    return (sum(terms) / len(terms) if terms else 0.0) + alpha * quant


LABELS_1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
LABELS_2 = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)


@pytest.mark.parametrize("mask_unseen", [True, False])
def test_dhn_bank_matches_pair_loop(mask_unseen):
    torch.manual_seed(0)
    loss = build_loss("dhn", normalise=False, bits=4, num_classes=3, num_train=8, pairs="bank", mask_unseen=mask_unseen)
    assert loss.quant_weight == 0.1 and loss.uses_memory_bank and loss.pairwise
    u1, u2 = torch.randn(3, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    loss(u1, LABELS_1, torch.tensor([0, 5, 2]))
    value = loss(u2, LABELS_2, torch.tensor([6, 1]))
    bank_u, bank_y = np.zeros((8, 4)), np.zeros((8, 3))
    bank_u[[0, 5, 2]], bank_y[[0, 5, 2]] = u1.numpy(), LABELS_1.numpy()
    bank_u[[6, 1]], bank_y[[6, 1]] = u2.numpy(), LABELS_2.numpy()
    rows = [0, 1, 2, 5, 6] if mask_unseen else range(8)
    pairs = [(i, j) for i in range(2) for j in rows]
    expected = reference_dhn(u2.numpy(), LABELS_2.numpy(), bank_u, bank_y, pairs, 0.1)
    assert value.item() == pytest.approx(expected, rel=1e-6)  # the bank stores float32


def test_dhn_batch_mode_matches_loop_over_pairs_of_different_items():
    torch.manual_seed(1)
    loss = build_loss("dhn", normalise=False, bits=4, num_classes=3, num_train=8, pairs="batch", quant_weight=0.5)
    assert not loss.uses_memory_bank and dict(loss.state_dict()) == {}
    u = torch.randn(3, 4, dtype=torch.float64)
    value = loss(u, LABELS_1, torch.tensor([4, 0, 7]))
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    expected = reference_dhn(u.numpy(), LABELS_1.numpy(), u.numpy(), LABELS_1.numpy(), pairs, 0.5)
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_dhn_bank_is_written_only_in_training_mode():
    loss = build_loss("dhn", normalise=False, bits=4, num_classes=3, num_train=8, pairs="bank")
    loss.eval()
    loss(torch.randn(3, 4), LABELS_1.float(), torch.tensor([0, 1, 2]))
    assert not loss.bank_seen.any() and loss.bank_codes.abs().sum() == 0


@pytest.mark.parametrize("pairs", ["bank", "batch"])
def test_dhn_gradient_reaches_u_and_loss_falls_toward_ideal_codes(pairs):
    torch.manual_seed(2)
    loss = build_loss("dhn", normalise=False, bits=16, num_classes=2, num_train=10, pairs=pairs)
    codes = torch.where(torch.rand(1, 16) < 0.5, 1.0, -1.0) * torch.tensor([[1.0], [-1.0]])
    labels = torch.eye(2)[[0, 1, 0, 1, 0, 1, 0, 1, 0, 1]]
    if pairs == "bank":
        loss(labels @ codes, labels, torch.arange(10))  # the bank holds ideal codes
    start = torch.randn(10, 16)
    values = []
    for t in (0.0, 0.5, 1.0):
        u = ((1 - t) * start + t * labels @ codes).requires_grad_(True)
        value = loss(u, labels, torch.arange(10)) if pairs == "batch" else loss(u[2:5], labels[2:5], torch.arange(2, 5))
        value.backward()
        assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
        values.append(value.item())
    assert values[0] > values[1] > values[2] and values[2] < 1e-3
