"""DBDH: likelihood on clamped codes plus bit balance, against a loop over pairs, both pair modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nhl.losses import build_loss


def reference_dbdh(u, labels, other_h, other_y, pairs, alpha, p):
    """h = clip(u, -1, 1); mean over (i, j) in `pairs` of log(1 + e^t) - s t with t = h_i . v_j / 2,
    plus alpha * mean_i |mean_b h_ib|^p."""
    h = np.clip(u, -1, 1)
    terms = []
    for i, j in pairs:
        t = float(h[i] @ other_h[j]) / 2
        s = 1.0 if float(labels[i] @ other_y[j]) > 0 else 0.0
        terms.append(math.log(1 + math.exp(t)) - s * t)
    balance = np.mean([abs(sum(row) / len(row)) ** p for row in h])
    return (sum(terms) / len(terms) if terms else 0.0) + alpha * balance


LABELS_1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
LABELS_2 = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)


@pytest.mark.parametrize("power", [1, 2])
def test_dbdh_bank_matches_pair_loop_and_stores_clamped_codes(power):
    torch.manual_seed(0)
    loss = build_loss("dbdh", normalise=False, bits=4, num_classes=3, num_train=8, pairs="bank", power=power)
    assert loss.balance_weight == 0.1 and loss.uses_memory_bank
    u1, u2 = 1.5 * torch.randn(3, 4, dtype=torch.float64), 1.5 * torch.randn(2, 4, dtype=torch.float64)
    assert (u1.abs() > 1).any() and (u2.abs() > 1).any()  # the clamp matters here
    loss(u1, LABELS_1, torch.tensor([0, 5, 2]))
    value = loss(u2, LABELS_2, torch.tensor([6, 1]))
    bank_h, bank_y = np.zeros((8, 4)), np.zeros((8, 3))
    bank_h[[0, 5, 2]], bank_y[[0, 5, 2]] = np.clip(u1.numpy(), -1, 1), LABELS_1.numpy()
    bank_h[[6, 1]], bank_y[[6, 1]] = np.clip(u2.numpy(), -1, 1), LABELS_2.numpy()
    pairs = [(i, j) for i in range(2) for j in [0, 1, 2, 5, 6]]
    expected = reference_dbdh(u2.numpy(), LABELS_2.numpy(), bank_h, bank_y, pairs, 0.1, power)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert np.allclose(loss.bank_codes.numpy(), bank_h)


def test_dbdh_batch_mode_matches_loop_over_pairs_of_different_items():
    torch.manual_seed(1)
    loss = build_loss("dbdh", normalise=False, bits=4, num_classes=3, num_train=8, pairs="batch", balance_weight=0.4)
    u = 1.5 * torch.randn(3, 4, dtype=torch.float64)
    value = loss(u, LABELS_1, torch.tensor([4, 0, 7]))
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    expected = reference_dbdh(u.numpy(), LABELS_1.numpy(), np.clip(u.numpy(), -1, 1), LABELS_1.numpy(), pairs, 0.4, 2)
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_dbdh_rejects_other_powers():
    with pytest.raises(ValueError, match="power"):
        build_loss("dbdh", normalise=False, bits=4, num_classes=3, num_train=8, power=3)


@pytest.mark.parametrize("pairs", ["bank", "batch"])
def test_dbdh_gradient_reaches_u_and_loss_falls_toward_ideal_codes(pairs):
    torch.manual_seed(2)
    loss = build_loss("dbdh", normalise=False, bits=16, num_classes=2, num_train=10, pairs=pairs)
    balanced = torch.tensor([[1.0] * 8 + [-1.0] * 8])[:, torch.randperm(16)]
    codes = balanced * torch.tensor([[1.0], [-1.0]])  # two balanced, opposite class codes
    labels = torch.eye(2)[[0, 1, 0, 1, 0, 1, 0, 1, 0, 1]]
    if pairs == "bank":
        loss(labels @ codes, labels, torch.arange(10))  # the bank holds ideal codes
    start = 0.5 * torch.randn(10, 16)
    values = []
    for t in (0.0, 0.5, 1.0):
        u = ((1 - t) * start + t * labels @ codes).requires_grad_(True)
        value = loss(u, labels, torch.arange(10)) if pairs == "batch" else loss(u[2:5], labels[2:5], torch.arange(2, 5))
        value.backward()
        # at t = 1 every entry sits on the clamp's bound, where the released hard clamp passes no gradient
        assert torch.isfinite(u.grad).all() and (u.grad.abs().sum() > 0 or t == 1.0)
        values.append(value.item())
    assert values[0] > values[1] > values[2] and values[2] < 1e-3
