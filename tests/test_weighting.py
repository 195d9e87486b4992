"""Dominance-aware adaptive weighting: hand-worked examples, the probe, and one training step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nhl.weighting import AdaptiveWeighting, dominance_weights, probe_gradients

T = torch.tensor


def test_two_lengths_hand_worked():
    # lengths [1, 2], d = 2. g_1 (row 0 only) = [1, 0]; g_2 = [[-3, 0], [5, 5]].
    # Shared row 0: d_12 = 1 * -3 + 0 * 0 = -3.  tau_1 = beta * ||g_1||^2 / (n - 1) = 1 * 1 / 1 = 1.
    # -d_12 = 3 > tau_1, so alpha_12 = 1 / 3.  w = [1, 1/3], sum 4/3, normalised to sum 2: [1.5, 0.5].
    g1, g2 = T([1.0, 0.0]), T([-3.0, 0.0, 5.0, 5.0])
    assert torch.allclose(dominance_weights([g1, g2], [1, 2]), T([1.5, 0.5]))
    # beta = 0: any opposing push zeroes the longer weight: w = [1, 0] -> [2, 0]
    assert torch.allclose(dominance_weights([g1, g2], [1, 2], beta=0.0), T([2.0, 0.0]))
    # beta = 3: tau_1 = 3, -d_12 = 3 is not > 3, nothing is reduced
    assert torch.allclose(dominance_weights([g1, g2], [1, 2], beta=3.0), T([1.0, 1.0]))


# lengths [1, 2, 3], d = 1, so each gradient is a vector with one entry per row.
G1, G2, G3 = T([2.0]), T([-3.0, 1.0]), T([-1.0, -4.0, 2.0])


def test_three_lengths_hand_worked_with_the_cap():
    # i = 1: ||g_1||^2 = 4, tau_1 = 4 / 2 = 2.
    #   d_12 = 2 * -3 = -6: 6 > 2, alpha_12 = 2 / 6 = 1/3.
    #   d_13 = 2 * -1 = -2: 2 is not > 2, alpha_13 = 1; the cap makes it min(1, alpha_12) = 1/3.
    # i = 2: ||g_2||^2 = 9 + 1 = 10, tau_2 = 5.  d_23 = -3 * -1 + 1 * -4 = -1: 1 < 5, alpha_23 = 1.
    # w = [1, alpha_12, alpha_13 * alpha_23] = [1, 1/3, 1/3]; sum 5/3; times 3 / (5/3): [1.8, 0.6, 0.6].
    w = dominance_weights([G1, G2, G3], [1, 2, 3])
    assert torch.allclose(w, T([1.8, 0.6, 0.6]))
    assert w.sum().item() == pytest.approx(3.0)


def test_faithful_uses_the_shortest_norm_for_every_length():
    # g_3 = [-1, -6, 2]: d_13 = -2 as before, d_23 = -3 * -1 + 1 * -6 = -3.
    # nhl: tau_2 = ||g_2||^2 / 2 = 5; 3 < 5, alpha_23 = 1 -> w = [1.8, 0.6, 0.6] as above.
    # faithful: tau_2 = ||g_1||^2 / 2 = 2; 3 > 2, alpha_23 = 2/3 -> w = [1, 1/3, 2/9], sum 14/9,
    #   times 3 / (14/9): [27/14, 9/14, 6/14].
    g3 = T([-1.0, -6.0, 2.0])
    assert torch.allclose(dominance_weights([G1, G2, g3], [1, 2, 3]), T([1.8, 0.6, 0.6]))
    assert torch.allclose(dominance_weights([G1, G2, g3], [1, 2, 3], faithful=True), T([27, 9, 6]) / 14)


def test_both_gradient_layouts_are_accepted():
    full = [T([2.0, 0.0, 0.0]), T([-3.0, 1.0, 0.0]), G3]  # whole k_max x d weight, zeros beyond row k_i
    expected = T([1.8, 0.6, 0.6])
    assert torch.allclose(dominance_weights(full, [1, 2, 3]), expected)
    assert torch.allclose(dominance_weights([full[0], G2, G3], [1, 2, 3]), expected)
    assert torch.allclose(dominance_weights([g.reshape(-1, 1) for g in full], [1, 2, 3]), expected)
    with pytest.raises(ValueError, match=r"grads\[1\]"):
        dominance_weights([G1, T([1.0, 2.0, 3.0, 4.0]), G3], [1, 2, 3])
    with pytest.raises(ValueError, match="one gradient per length"):
        dominance_weights([G1, G2], [1, 2, 3])


def test_no_opposing_gradients_gives_all_ones_and_one_length_gives_one():
    rng = np.random.default_rng(0)
    grads = [torch.from_numpy(rng.random(k * 5)) for k in (2, 4, 8)]  # all entries > 0: every d_ij > 0
    assert torch.equal(dominance_weights(grads, [2, 4, 8]), torch.ones(3))
    assert torch.equal(dominance_weights([T([-1.0, 2.0])], [2]), torch.ones(1))


def test_random_gradients_sum_to_n_and_never_exceed_the_shortest():
    rng = np.random.default_rng(1)
    for _ in range(20):
        grads = [torch.from_numpy(rng.normal(size=k * 3)) for k in (1, 2, 4, 8)]
        w = dominance_weights(grads, [1, 2, 4, 8], beta=float(rng.uniform(0.1, 2.0)))
        assert w.sum().item() == pytest.approx(4.0, rel=1e-6)
        assert (w > 0).all() and w[0] == w.max()
        assert not w.requires_grad


class TinyHead(nn.Module):
    """Stand-in for NestedHashHead: `.linear` and a list of prefixes."""

    def __init__(self, d: int, bits: list[int]) -> None:
        super().__init__()
        self.bits = bits
        self.linear = nn.Linear(d, bits[-1])

    def forward(self, x):
        full = self.linear(x)
        return [full[:, :k] for k in self.bits]


def test_probe_gradients_match_closed_form_and_leave_no_grad():
    torch.manual_seed(0)
    backbone, head = nn.Linear(3, 4), TinyHead(4, [2, 4])
    x = torch.randn(5, 3)
    outputs = head(backbone(x).detach())
    objectives = [o.pow(2).sum() for o in outputs]
    grads = probe_gradients(head.linear.weight, objectives)
    f = backbone(x).detach().numpy()
    u = head.linear(backbone(x)).detach().numpy()
    for g, k in zip(grads, [2, 4], strict=True):
        expected = np.zeros((4, 4))
        expected[:k] = 2 * u[:, :k].T @ f  # d/dW of sum (f W^T + b)[:, :k]^2
        assert np.allclose(g.numpy(), expected.reshape(-1), atol=1e-5)
    assert all(p.grad is None for p in [*backbone.parameters(), *head.parameters()])


def reference_weights(grads: list[np.ndarray], lengths: list[int], d: int, beta: float) -> np.ndarray:
    """The weighting rule in plain loops (grads[i] as [k_i, d] arrays)."""
    n = len(lengths)
    alpha = np.ones((n, n))
    for i in range(n - 1):
        tau = beta * float((grads[i] ** 2).sum()) / (n - 1)
        for j in range(i + 1, n):
            dot = float((grads[i] * grads[j][: lengths[i]]).sum())
            if dot < 0 and -dot > tau:
                alpha[i, j] = tau / -dot
        for j in range(i + 2, n):
            alpha[i, j] = min(alpha[i, j], alpha[i, i + 1])
    w = np.array([np.prod([alpha[i, j] for i in range(j)]) for j in range(n)])
    return n * w / w.sum()


def test_one_training_step_matches_a_manual_update():
    torch.manual_seed(1)
    lengths, d, batch, lr = [2, 4, 6], 4, 5, 0.1
    backbone, head = nn.Linear(3, d), TinyHead(d, lengths)
    x = torch.randn(batch, 3)
    # targets that disagree on the shared bits: the longest code pulls bits 0-1 the other way, hard
    targets = [
        torch.ones(batch, 2),
        torch.ones(batch, 4),
        torch.cat([-8 * torch.ones(batch, 2), torch.ones(batch, 4)], 1),
    ]
    A, a = backbone.weight.detach().numpy().copy(), backbone.bias.detach().numpy().copy()
    W, b = head.linear.weight.detach().numpy().copy(), head.linear.bias.detach().numpy().copy()

    def objective_fn(outputs):
        return [(u - t).pow(2).mean() for u, t in zip(outputs, targets, strict=True)]

    weighting = AdaptiveWeighting(beta=1.0)
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=lr)
    features = backbone(x)
    w = weighting.compute(head, features.detach(), objective_fn)
    assert all(p.grad is None for p in [*backbone.parameters(), *head.parameters()])
    loss = sum(wi * obj for wi, obj in zip(w, objective_fn(head(features)), strict=True))
    loss.backward()
    optimizer.step()

    # manual: obj_i = mean((u_i - t_i)^2) over B x k_i, so dobj_i/du_i = 2 (u_i - t_i) / (B k_i)
    xn = x.numpy()
    f = xn @ A.T + a
    u = f @ W.T + b
    grads_u = [2 * (u[:, :k] - t.numpy()) / (batch * k) for k, t in zip(lengths, targets, strict=True)]
    grads_w = [gu.T @ f for gu in grads_u]  # [k_i, d]
    expected_w = reference_weights(grads_w, lengths, d, 1.0)
    assert np.allclose(w.numpy(), expected_w, atol=1e-5)
    assert not np.allclose(expected_w, 1.0)  # the example does exercise the reduction
    dW, db, df = np.zeros_like(W), np.zeros_like(b), np.zeros_like(f)
    for wi, gu, gw, k in zip(expected_w, grads_u, grads_w, lengths, strict=True):
        dW[:k] += wi * gw
        db[:k] += wi * gu.sum(0)
        df += wi * gu @ W[:k]
    dA, da = df.T @ xn, df.sum(0)
    assert np.allclose(head.linear.weight.detach().numpy(), W - lr * dW, atol=1e-6)
    assert np.allclose(head.linear.bias.detach().numpy(), b - lr * db, atol=1e-6)
    assert np.allclose(backbone.weight.detach().numpy(), A - lr * dA, atol=1e-6)
    assert np.allclose(backbone.bias.detach().numpy(), a - lr * da, atol=1e-6)


def test_running_stats_summary_and_reset():
    head = TinyHead(2, [1, 2])
    with torch.no_grad():
        head.linear.weight.copy_(T([[1.0, 0.0], [0.0, 1.0]]))
        head.linear.bias.zero_()
    x = T([[1.0, 0.0]])
    weighting = AdaptiveWeighting()
    # opposing objectives: u_1 = x W_0 = 1 pulled down, u_2's bit 0 pulled up hard -> reduced
    opposed = weighting.compute(head, x, lambda out: [out[0].sum(), -10 * out[1][:, 0].sum()])
    agreeing = weighting.compute(head, x, lambda out: [out[0].sum(), out[1].sum()])
    assert torch.equal(agreeing, torch.ones(2)) and opposed[1] < 1
    summary = weighting.epoch_summary()
    assert summary["steps"] == 2 and summary["reduced_fraction"] == 0.5
    assert summary["mean_weights"] == pytest.approx(((opposed + agreeing) / 2).tolist())
    weighting.reset()
    empty = weighting.epoch_summary()
    assert empty["steps"] == 0 and empty["mean_weights"] == [] and np.isnan(empty["reduced_fraction"])


def test_objective_count_must_match():
    head = TinyHead(2, [1, 2])
    with pytest.raises(ValueError, match="expected 2 objectives"):
        AdaptiveWeighting().compute(head, torch.ones(1, 2), lambda out: [out[0].sum()])
