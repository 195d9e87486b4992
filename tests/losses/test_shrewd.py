"""SHREWD loss against a loop over item pairs: semantic-distance matching plus the empirical KL term."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from nhl.hierarchy import load_hierarchy
from nhl.losses import build_loss

# 4 classes: a, b under g1; c under g2; d directly under the root (tree height 2)
TOY = "name: toy\nclasses:\n  a: [g1]\n  b: [g1]\n  c: [g2]\n  d: []\n"
TOY_DIST = {("a", "b"): 0.5, ("a", "c"): 1.0, ("a", "d"): 1.0, ("b", "c"): 1.0, ("b", "d"): 1.0, ("c", "d"): 1.0}
NAMES = "abcd"


def class_dist(x: str, y: str) -> float:
    return 0.0 if x == y else TOY_DIST[tuple(sorted((x, y)))]


def reference_shrewd(u, labels, scale, kl_weight, eps, balance):
    """Loops over ordered pairs i != j with labels: |L1(z_i - z_j) / (2k) - scale * d_s|, averaged
    (per semantic-distance level when balanced); KL: log of smoothed nearest-corner over nearest-code distances."""
    z = np.tanh(u)
    n, k = z.shape
    by_level: dict[float, list[float]] = {}
    for i in range(n):
        for j in range(n):
            li = [NAMES[c] for c in np.flatnonzero(labels[i])]
            lj = [NAMES[c] for c in np.flatnonzero(labels[j])]
            if i == j or not li or not lj:
                continue
            sem = min(class_dist(x, y) for x in li for y in lj)
            code = sum(abs(z[i, b] - z[j, b]) for b in range(k)) / (2 * k)
            by_level.setdefault(sem, []).append(abs(code - scale * sem))
    if balance:
        sem_loss = np.mean([np.mean(v) for v in by_level.values()])
    else:
        sem_loss = np.mean([g for v in by_level.values() for g in v])
    kl = []
    for i in range(n):
        nu_sq = sum((z[i, b] - (1 if z[i, b] >= 0 else -1)) ** 2 for b in range(k))
        rho_sq = min(sum((z[i, b] - z[j, b]) ** 2 for b in range(k)) for j in range(n) if j != i)
        kl.append(0.5 * (math.log(nu_sq + eps**2) - math.log(rho_sq + eps**2)))
    return sem_loss + kl_weight * np.mean(kl)


@pytest.fixture
def toy(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(TOY)
    return str(path)


U = torch.tensor(
    [
        [0.3, -1.2, 0.5, 2.0],
        [-0.7, 0.1, 1.5, -0.4],
        [1.1, 0.9, -0.2, 0.6],
        [0.2, 0.4, -0.9, -1.3],
        [0.8, -0.5, 0.3, 0.1],
    ],
    dtype=torch.float64,
)
LABELS = torch.tensor(
    [
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 1],  # multi-label: the closest of its labels counts
        [0, 0, 0, 1],
        [0, 0, 0, 0],
    ],  # no label: in no semantic pair, still in the KL term
    dtype=torch.float64,
)


@pytest.mark.parametrize("balance", [True, False])
@pytest.mark.parametrize("kl_weight", [0.0, 0.3])
def test_shrewd_matches_pair_loop(toy, balance, kl_weight):
    loss = build_loss(
        "shrewd",
        normalise=False,
        bits=4,
        num_classes=4,
        num_train=10,
        hierarchy=toy,
        distance_scale=0.6,
        kl_weight=kl_weight,
        eps=0.05,
        balance_pairs=balance,
    )
    expected = reference_shrewd(U.numpy(), LABELS.numpy(), 0.6, kl_weight, 0.05, balance)
    assert loss(U, LABELS, torch.arange(5)).item() == pytest.approx(expected, rel=1e-10)


def test_hierarchy_by_name_default_flat_and_wrong_size():
    loss = build_loss("shrewd", normalise=False, bits=16, num_classes=10, num_train=10, hierarchy="digits")
    assert np.allclose(loss.class_distance.numpy(), load_hierarchy("digits").distance())
    assert loss.pairwise and not loss.uses_centers and not loss.uses_memory_bank
    flat = build_loss("shrewd", normalise=False, bits=16, num_classes=3, num_train=10)
    assert np.array_equal(flat.class_distance.numpy(), 1 - np.eye(3))
    with pytest.raises(ValueError, match="expected 5"):
        build_loss("shrewd", normalise=False, bits=16, num_classes=5, num_train=10, hierarchy="digits")
    with pytest.raises(FileNotFoundError, match="no-such"):
        build_loss("shrewd", normalise=False, bits=16, num_classes=5, num_train=10, hierarchy="no-such")


def test_shrewd_gradient_reaches_u_and_loss_falls_toward_ideal_codes():
    # flat hierarchy, one item per class: ideal codes are pairwise at bits/2, which Hadamard rows are
    loss = build_loss("shrewd", normalise=False, bits=8, num_classes=4, num_train=10)
    ideal = 3.0 * torch.from_numpy(scipy.linalg.hadamard(8)[[1, 2, 3, 4]]).float()
    labels = torch.eye(4)
    start = 0.1 * torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    values = []
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        u = ((1 - t) * start + t * ideal).requires_grad_(True)
        value = loss(u, labels, torch.arange(4))
        value.backward()
        assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
        values.append(value.item())
    assert values == sorted(values, reverse=True)


def test_identical_codes_and_saturated_outputs_stay_finite():
    loss = build_loss("shrewd", normalise=False, bits=8, num_classes=2, num_train=10)
    u = torch.full((3, 8), 30.0, requires_grad=True)  # tanh == 1 exactly; all codes equal
    value = loss(u, torch.eye(2)[[0, 0, 1]], torch.arange(3))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(u.grad).all()


def test_default_distance_scale_is_where_normalised_half_distance_codes_sit():
    # Hadamard rows are +-1 and pairwise at Hamming distance bits / 2; RMS-normalised they stay +-1, so
    # z = +-tanh(1) and every pair's relaxed distance is (bits / 2) * 2 tanh(1) / (2 bits) = tanh(1) / 2.
    ideal = torch.from_numpy(scipy.linalg.hadamard(8)[[1, 2, 3, 4]]).double()
    labels, index = torch.eye(4, dtype=torch.float64), torch.arange(4)
    loss = build_loss("shrewd", bits=8, num_classes=4, num_train=10, kl_weight=0.0)
    assert loss.distance_scale == pytest.approx(0.5 * math.tanh(1.0), rel=1e-12)  # 0.3808
    assert loss(ideal, labels, index).item() == pytest.approx(0.0, abs=1e-6)
    # the scale first written here (0.5, still reachable): every pair misses by 0.5 - tanh(1) / 2 = 0.1192
    released = build_loss("shrewd", bits=8, num_classes=4, num_train=10, kl_weight=0.0, distance_scale=0.5)
    assert released(ideal, labels, index).item() == pytest.approx(0.5 - 0.5 * math.tanh(1.0), rel=1e-5)
    raw = build_loss("shrewd", normalise=False, bits=8, num_classes=4, num_train=10)
    assert raw.distance_scale == 0.5


def test_normalised_codes_never_reach_mean_abs_tanh_above_tanh_one():
    # the bound behind the default: mean x^2 = 1 implies mean |tanh x| <= tanh(1) (Jensen)
    from nhl.losses.pairs import rms_normalise

    u = torch.randn(200, 64, generator=torch.Generator().manual_seed(0)) * torch.rand(200, 1) * 5
    u[0] = 1.0  # equal magnitudes: the bound is reached
    means = rms_normalise(u.double()).tanh().abs().mean(dim=1)
    assert float(means.max()) <= math.tanh(1.0) + 1e-9
    assert float(means[0]) == pytest.approx(math.tanh(1.0), rel=1e-6)
