"""DSH contrastive loss against a loop over (batch item, partner) pairs, in both pair modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nhl.losses import build_loss


def reference_dsh(u, labels, other_u, other_y, pairs, margin, alpha):
    """Average over the (i, j) in `pairs` of the contrastive term between u[i] and other_u[j], plus
    alpha * mean | |u| - 1 |."""
    terms = []
    for i, j in pairs:
        dist = float(((u[i] - other_u[j]) ** 2).sum())
        similar = float(labels[i] @ other_y[j]) > 0
        terms.append(dist / 2 if similar else max(0.0, margin - dist) / 2)
    quant = float(np.abs(1 - np.abs(u)).mean())
    return (sum(terms) / len(terms) if terms else 0.0) + alpha * quant


def bank_pairs(batch_size, rows):
    return [(i, j) for i in range(batch_size) for j in rows]


def batch_pairs(batch_size):
    return [(i, j) for i in range(batch_size) for j in range(batch_size) if i != j]


# ---------------------------------------------------------------- bank mode (the released code)


def test_dsh_matches_pair_loop_over_seen_bank_rows():
    torch.manual_seed(0)
    loss = build_loss("dsh", normalise=False, bits=4, num_classes=3, num_train=8, pairs="bank")
    assert loss.margin == 8.0 and loss.quant_weight == 0.1 and loss.uses_memory_bank
    u1 = torch.randn(3, 4, dtype=torch.float64)
    y1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    loss(u1, y1, torch.tensor([0, 5, 2]))
    u2 = torch.randn(2, 4, dtype=torch.float64)
    y2 = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    value = loss(u2, y2, torch.tensor([6, 1]))
    bank_u = np.zeros((8, 4))
    bank_y = np.zeros((8, 3))
    bank_u[[0, 5, 2]], bank_y[[0, 5, 2]] = u1.numpy(), y1.numpy()
    bank_u[[6, 1]], bank_y[[6, 1]] = u2.numpy(), y2.numpy()
    expected = reference_dsh(u2.numpy(), y2.numpy(), bank_u, bank_y, bank_pairs(2, [0, 1, 2, 5, 6]), 8.0, 0.1)
    assert value.item() == pytest.approx(expected, rel=1e-6)  # the bank stores float32
    assert np.allclose(loss.bank_codes.numpy(), bank_u) and np.allclose(loss.bank_labels.numpy(), bank_y)


def test_dsh_unmasked_reproduces_the_released_all_rows_average():
    torch.manual_seed(1)
    loss = build_loss(
        "dsh",
        normalise=False,
        bits=4,
        num_classes=3,
        num_train=6,
        pairs="bank",
        mask_unseen=False,
        margin=5.0,
        quant_weight=0.3,
    )
    u = torch.randn(2, 4, dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    value = loss(u, y, torch.tensor([4, 1]))
    bank_u, bank_y = np.zeros((6, 4)), np.zeros((6, 3))
    bank_u[[4, 1]], bank_y[[4, 1]] = u.numpy(), y.numpy()
    expected = reference_dsh(u.numpy(), y.numpy(), bank_u, bank_y, bank_pairs(2, range(6)), 5.0, 0.3)
    assert value.item() == pytest.approx(expected)


def test_dsh_bank_is_idempotent_and_not_written_in_eval_mode():
    torch.manual_seed(2)
    loss = build_loss("dsh", normalise=False, bits=4, num_classes=2, num_train=5, pairs="bank")
    u = torch.randn(2, 4)
    y = torch.eye(2)
    index = torch.tensor([3, 0])
    first = loss(u, y, index)
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    assert loss(u, y, index).item() == first.item()
    assert all(torch.equal(state[k], v) for k, v in loss.state_dict().items())
    loss.eval()
    loss(torch.randn(2, 4), y, torch.tensor([1, 2]))
    assert all(torch.equal(state[k], v) for k, v in loss.state_dict().items())
    loss.train()
    with pytest.raises(ValueError, match="index"):
        loss(u, y, torch.tensor([0, 5]))


def test_dsh_bank_gradient_reaches_u_and_loss_falls_toward_ideal_codes():
    torch.manual_seed(3)
    loss = build_loss("dsh", normalise=False, bits=6, num_classes=2, num_train=10, pairs="bank")
    codes = torch.tensor([[1.0, -1.0, 1.0, 1.0, -1.0, 1.0]]) * torch.tensor([[1.0], [-1.0]])  # class 0, class 1
    labels = torch.eye(2)[[0, 1, 0, 1, 0, 1, 0, 1, 0, 1]]
    loss(labels @ codes, labels, torch.arange(10))  # the bank holds ideal codes
    batch = torch.tensor([2, 3, 4])
    start = torch.randn(3, 6)
    values = []
    for t in (0.0, 0.5, 1.0):
        u = ((1 - t) * start + t * labels[batch] @ codes).requires_grad_(True)
        value = loss(u, labels[batch], batch)
        value.backward()
        assert torch.isfinite(u.grad).all() and (u.grad.abs().sum() > 0 or t == 1.0)
        values.append(value.item())
    assert values[0] > values[1] > values[2] and values[2] == pytest.approx(0.0, abs=1e-5)


# ---------------------------------------------------------------- batch mode (the paper; default)


def test_dsh_batch_mode_is_the_default_and_has_no_bank():
    loss = build_loss("dsh", normalise=False, bits=4, num_classes=3, num_train=8)
    assert loss.pairs == "batch" and not loss.uses_memory_bank and loss.pairwise
    assert dict(loss.state_dict()) == {}
    assert build_loss("dsh", normalise=False, bits=4, num_classes=3, num_train=8, pairs="bank").uses_memory_bank
    with pytest.raises(ValueError, match="pairs: expected one of batch, bank"):
        build_loss("dsh", normalise=False, bits=4, num_classes=3, num_train=8, pairs="memory")


def test_dsh_batch_mode_matches_loop_over_pairs_of_different_items():
    torch.manual_seed(4)
    loss = build_loss("dsh", normalise=False, bits=4, num_classes=3, num_train=8, margin=6.0, quant_weight=0.2)
    u = torch.randn(4, 4, dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    value = loss(u, y, torch.tensor([7, 0, 3, 2]))
    expected = reference_dsh(u.numpy(), y.numpy(), u.numpy(), y.numpy(), batch_pairs(4), 6.0, 0.2)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    # a batch of one has no pair: only the quantisation term is left
    single = loss(u[:1], y[:1], torch.tensor([0]))
    assert single.item() == pytest.approx(0.2 * float(np.abs(1 - np.abs(u[:1].numpy())).mean()))


def test_a_common_drift_lowers_the_bank_loss_but_not_the_batch_loss():
    """The collapse mechanism. After a step moved every live code by a common vector v, the bank
    still holds the old codes; then moving further along v lowers the bank loss (more dissimilar
    pairs inside the margin are pushed apart than similar pairs pulled apart), so descent keeps
    drifting. Between live batch codes a common shift changes no distance: the loss cannot drift."""
    torch.manual_seed(5)
    labels = torch.eye(5)[[0, 1, 2, 3, 4, 0, 1, 2, 3, 4]]
    u = 0.3 * torch.randn(10, 8, dtype=torch.float64)  # every pair well inside the margin 16
    v = torch.randn(1, 8, dtype=torch.float64)
    index = torch.arange(10)

    batch_loss = build_loss("dsh", normalise=False, bits=8, num_classes=5, num_train=10, quant_weight=0.0)
    x = (u + 0.1 * v).requires_grad_(True)
    batch_loss(x, labels, index).backward()
    assert x.grad.abs().sum() > 0 and torch.allclose(x.grad.sum(0), torch.zeros(8, dtype=torch.float64), atol=1e-12)
    assert batch_loss(u + v, labels, index).item() == pytest.approx(batch_loss(u, labels, index).item(), rel=1e-10)

    bank_loss = build_loss("dsh", normalise=False, bits=8, num_classes=5, num_train=10, quant_weight=0.0, pairs="bank")
    bank_loss(u, labels, index)  # the bank holds the codes before the step
    bank_loss.eval()  # and is not rewritten below: its rows are stale
    x = (u + 0.1 * v).requires_grad_(True)
    bank_loss(x, labels, index).backward()
    drift_gradient = x.grad.sum(0)  # d loss / d (common shift of every code)
    assert float(drift_gradient @ v[0]) < 0  # descent moves further along v
    values = [bank_loss(u + t * v, labels, index).item() for t in (0.1, 0.5, 1.0)]
    assert values[0] > values[1] > values[2]


def test_dsh_batch_gradient_reaches_u_and_loss_falls_toward_ideal_codes():
    torch.manual_seed(6)
    loss = build_loss("dsh", normalise=False, bits=6, num_classes=2, num_train=10)
    codes = torch.tensor([[1.0, -1.0, 1.0, 1.0, -1.0, 1.0]]) * torch.tensor([[1.0], [-1.0]])
    labels = torch.eye(2)[[0, 1, 0, 1, 1]]
    start = torch.randn(5, 6)
    values = []
    for t in (0.0, 0.5, 1.0):
        u = ((1 - t) * start + t * labels @ codes).requires_grad_(True)
        value = loss(u, labels, torch.arange(5))
        value.backward()
        assert torch.isfinite(u.grad).all() and (u.grad.abs().sum() > 0 or t == 1.0)
        values.append(value.item())
    assert values[0] > values[1] > values[2] and values[2] == pytest.approx(0.0, abs=1e-6)
