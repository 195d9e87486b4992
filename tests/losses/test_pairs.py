"""Pair weighting shared by the pairwise losses, against hand-worked batches."""

from __future__ import annotations

import pytest
import torch

from nhl.losses.pairs import balanced_weight, pair_mean


def _one_similar_pair_in_ten() -> torch.Tensor:
    """5 items, classes 0, 0, 1, 2, 3: of the 10 unordered pairs one is similar (items 0 and 1)."""
    labels = torch.eye(4)[[0, 0, 1, 2, 3]]
    return (labels @ labels.T) > 0


def test_balanced_weight_of_one_similar_pair_in_ten_by_hand():
    similar = _one_similar_pair_in_ten()
    weight = 1.0 - torch.eye(5)  # batch pairs: the 20 ordered pairs i != j
    balanced = balanced_weight(similar, weight)
    # 2 ordered similar pairs share 1/2: 1/4 each; 18 dissimilar pairs share 1/2: 1/36 each; diagonal 0
    expected = torch.full((5, 5), 1 / 36)
    expected[0, 1] = expected[1, 0] = 1 / 4
    expected.fill_diagonal_(0)
    assert torch.allclose(balanced, expected)
    # the unweighted mean gives the similar pairs 2/20 = 10% of the loss; balanced, 50%
    values = similar.float()
    assert pair_mean(values, weight).item() == pytest.approx(0.1)
    assert pair_mean(values, balanced).item() == pytest.approx(0.5)


def test_balanced_weight_keeps_zero_weights_and_one_kind_batches():
    similar = _one_similar_pair_in_ten()
    weight = torch.ones(5, 5)
    weight[:, 4] = 0.0  # e.g. an unseen bank row
    balanced = balanced_weight(similar, weight)
    assert torch.all(balanced[:, 4] == 0)
    assert balanced[similar].sum().item() == pytest.approx(0.5)
    assert balanced[~similar].sum().item() == pytest.approx(0.5)
    all_similar = torch.ones(3, 3, dtype=torch.bool)
    assert torch.equal(balanced_weight(all_similar, torch.ones(3, 3)), torch.ones(3, 3))


def test_rms_normalise_by_hand():
    from nhl.losses.pairs import rms_normalise

    u = torch.tensor([[3.0, -4.0, 0.0, 0.0], [0.5, 0.5, -0.5, 0.5]])
    # row 0: mean square (9 + 16) / 4 = 6.25, rms 2.5; row 1: rms 0.5
    expected = torch.tensor([[1.2, -1.6, 0.0, 0.0], [1.0, 1.0, -1.0, 1.0]])
    assert torch.allclose(rms_normalise(u), expected, atol=1e-4)
    assert torch.allclose(rms_normalise(u).pow(2).sum(1), torch.tensor([4.0, 4.0]), atol=1e-3)


@pytest.mark.parametrize("name", ["dpsh", "dhn", "dbdh"])
def test_likelihood_scale_is_eight_over_bits_on_normalised_codes(name):
    from nhl.losses import build_loss

    for bits in (16, 64):
        assert build_loss(name, bits=bits, num_classes=2, num_train=4).scale == pytest.approx(8 / bits)
        assert build_loss(name, bits=bits, num_classes=2, num_train=4, normalise=False).scale == 0.5
        assert build_loss(name, bits=bits, num_classes=2, num_train=4, scale=0.3).scale == 0.3


def test_dpsh_default_is_the_likelihood_of_normalised_codes_by_hand():
    from nhl.losses import build_loss

    loss = build_loss("dpsh", bits=4, num_classes=2, num_train=3, quant_weight=0.0)
    u = torch.tensor([[2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, -1.0], [-0.5, -0.5, -0.5, -0.5]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    # normalised: n0 = (1,1,1,1), n1 = (1,1,1,-1), n2 = -(1,1,1,1); theta = 8/4 * n_i . n_j
    # pairs (0,1) similar theta 4; (0,2) dissimilar theta -8; (1,2) dissimilar theta -4; each twice (ordered)
    import math

    def nll(theta: float, s: int) -> float:
        return math.log1p(math.exp(theta)) - s * theta

    expected = (2 * nll(4.0, 1) + 2 * nll(-8.0, 0) + 2 * nll(-4.0, 0)) / 6
    assert loss(u, labels, torch.arange(3)).item() == pytest.approx(expected, rel=1e-5)  # eps of the rms


def test_dsh_default_contrasts_normalised_codes_by_hand():
    from nhl.losses import build_loss

    loss = build_loss("dsh", bits=4, num_classes=2, num_train=2, quant_weight=0.0)
    assert loss.margin == 8.0
    u = torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.5, 0.5, 0.5, -0.5]], dtype=torch.float64)
    # normalised (1,1,1,1) and (1,1,1,-1): D = 4; dissimilar: max(0, 8 - 4) / 2 = 2 for both ordered pairs.
    # On the raw codes D = 3 * 4.5^2 + 5.5^2 = 91 > 8: the released loss would be 0 here.
    dissimilar = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert loss(u, dissimilar, torch.arange(2)).item() == pytest.approx(2.0, rel=1e-5)
    raw = build_loss("dsh", bits=4, num_classes=2, num_train=2, quant_weight=0.0, normalise=False)
    assert raw(u, dissimilar, torch.arange(2)).item() == 0.0


def test_dbdh_clamps_only_raw_codes_by_default():
    from nhl.losses import build_loss

    u = torch.tensor([[3.0, 1.0, -1.0, -1.0]], requires_grad=True)
    # normalised: rms sqrt(12 / 4) = sqrt(3); the first entry 3 / sqrt(3) = 1.73 > 1 keeps its gradient
    loss = build_loss("dbdh", bits=4, num_classes=1, num_train=1, balance_weight=1.0, power=1)
    assert loss.clamp is False
    loss(u, torch.ones(1, 1), torch.zeros(1, dtype=torch.long)).backward()
    assert u.grad[0, 0] != 0
    raw = build_loss("dbdh", bits=4, num_classes=1, num_train=1, balance_weight=1.0, power=1, normalise=False)
    assert raw.clamp is True
    v = u.detach().clone().requires_grad_(True)
    raw(v, torch.ones(1, 1), torch.zeros(1, dtype=torch.long)).backward()
    assert v.grad[0, 0] == 0  # clamped at 1: no gradient, as released


def test_shrewd_default_takes_tanh_of_the_normalised_code_by_hand():
    import math

    from nhl.losses import build_loss

    loss = build_loss("shrewd", bits=4, num_classes=2, num_train=2, kl_weight=0.0)
    u = torch.tensor([[0.2, 0.2, 0.2, 0.2], [-4.0, -4.0, -4.0, 4.0]], dtype=torch.float64)
    # normalised: (1,1,1,1) and (-1,-1,-1,1); z = tanh of those; d_z = |z_0 - z_1|_1 / 8 = 6 tanh(1) / 8;
    # different classes of the flat hierarchy: target tanh(1) / 2 on normalised codes (where codes that
    # differ in half their bits can sit); one level, so the loss is |d_z - tanh(1) / 2|
    labels = torch.eye(2, dtype=torch.float64)
    expected = abs(6 * math.tanh(1.0) / 8 - math.tanh(1.0) / 2)
    assert loss(u, labels, torch.arange(2)).item() == pytest.approx(expected, rel=1e-4)  # eps of the rms
    raw = build_loss("shrewd", bits=4, num_classes=2, num_train=2, kl_weight=0.0, normalise=False)
    raw_dz = (3 * (math.tanh(0.2) + math.tanh(4.0)) + abs(math.tanh(0.2) - math.tanh(4.0))) / 8
    assert raw(u, labels, torch.arange(2)).item() == pytest.approx(abs(raw_dz - 0.5))
