"""OrthoHash loss against a per-element re-computation of its formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nhl.losses import build_loss

CODES = torch.tensor([[1.0, 1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, 1.0, 1.0]])


def reference_orthohash(u, labels, codes, scale, margin, norm="rms", quant=0.0):
    """Loops: per-bit batch RMS scaling, cosine to each code, margin on positives, softmax CE with the
    target spread evenly over the item's labels; items without labels skipped."""
    b, k = u.shape
    v = np.array(u, dtype=float)
    if norm == "rms":
        for j in range(k):
            rms = math.sqrt(sum(u[i, j] ** 2 for i in range(b)) / b + 1e-5)
            for i in range(b):
                v[i, j] = u[i, j] / rms
    terms, quants = [], []
    for i in range(b):
        vn = math.sqrt(sum(x * x for x in v[i]))
        logits = []
        for c, code in enumerate(codes):
            cos = sum(x * y for x, y in zip(v[i], code, strict=True)) / (vn * math.sqrt(len(code)))
            logits.append(scale * (cos - margin * labels[i, c]))
        log_z = math.log(sum(math.exp(x) for x in logits))
        quants.append(1 - sum(abs(x) for x in v[i]) / (vn * math.sqrt(k)))  # cos(v, sign v)
        total = labels[i].sum()
        if total:
            terms.append(-sum(labels[i, c] / total * (logits[c] - log_z) for c in range(len(codes))))
    return sum(terms) / len(terms) + quant * sum(quants) / len(quants)


U = torch.tensor(
    [[0.3, -1.2, 0.5, 2.0], [-0.7, 0.1, 1.5, -0.4], [1.1, 0.9, -0.2, 0.6], [0.2, 0.4, -0.9, -1.3]], dtype=torch.float64
)
LABELS = torch.tensor(
    [
        [1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 1.0, 0.0],  # multi-label: target 1/2, 1/2
        [0.0, 0.0, 0.0],
    ],  # no label: left out of the mean
    dtype=torch.float64,
)


@pytest.mark.parametrize("norm", ["rms", "none"])
@pytest.mark.parametrize("quant", [0.0, 0.3])
def test_orthohash_matches_formula(norm, quant):
    loss = build_loss(
        "orthohash",
        bits=4,
        num_classes=3,
        num_train=10,
        centers=CODES,
        scale=5.0,
        margin=0.3,
        norm=norm,
        quant_weight=quant,
    )
    expected = reference_orthohash(U.numpy(), LABELS.numpy(), CODES.numpy(), 5.0, 0.3, norm, quant)
    assert loss(U, LABELS, torch.arange(4)).item() == pytest.approx(expected, rel=1e-9)


def test_orthohash_defaults_and_bernoulli_codebook():
    loss = build_loss("orthohash", bits=64, num_classes=10, num_train=10)
    assert (loss.scale, loss.margin, loss.quant_weight, loss.norm) == (8.0, 0.2, 0.0, "rms")
    assert loss.uses_centers and not loss.uses_memory_bank and not loss.pairwise
    codes = loss.centers.numpy()
    assert set(np.unique(codes)) == {-1.0, 1.0}
    assert 0.35 < (codes > 0).mean() < 0.65  # fair coin flips
    same = build_loss("orthohash", bits=64, num_classes=10, num_train=10, seed=0).centers
    other = build_loss("orthohash", bits=64, num_classes=10, num_train=10, seed=1).centers
    assert torch.equal(same, loss.centers) and not torch.equal(other, loss.centers)


def test_rms_normalisation_never_changes_a_sign():
    torch.manual_seed(0)
    loss = build_loss("orthohash", bits=16, num_classes=3, num_train=10)
    u = torch.randn(32, 16) + 0.7  # a per-bit offset: mean subtraction (BN) would flip some signs
    assert torch.equal(loss.normalise(u).sign(), u.sign())
    assert not torch.equal((u - u.mean(0)).sign(), u.sign())


def test_orthohash_gradient_reaches_u_and_loss_falls_toward_the_code():
    torch.manual_seed(1)
    loss = build_loss("orthohash", bits=8, num_classes=4, num_train=10)
    labels = torch.eye(4)[[0, 1, 2, 3, 1, 0]]
    ideal = 3.0 * labels @ loss.centers
    start = torch.randn(6, 8)
    values = []
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        u = ((1 - t) * start + t * ideal).requires_grad_(True)
        value = loss(u, labels, torch.arange(6))
        value.backward()
        assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
        values.append(value.item())
    assert values == sorted(values, reverse=True)


def test_hadamard_codebook_gives_orthogonal_codes():
    codes = build_loss("orthohash", bits=16, num_classes=10, num_train=10, codebook="hadamard").centers
    assert torch.equal(codes @ codes.T, 16 * torch.eye(10))


def test_orthohash_rejects_unknown_options_and_bad_codes():
    with pytest.raises(ValueError, match="norm"):
        build_loss("orthohash", bits=4, num_classes=3, num_train=10, norm="batch")
    with pytest.raises(ValueError, match="codebook: expected one of bernoulli, hadamard"):
        build_loss("orthohash", bits=4, num_classes=3, num_train=10, codebook="optimised")
    with pytest.raises(ValueError, match="centers"):
        build_loss("orthohash", bits=4, num_classes=3, num_train=10, centers=torch.zeros(3, 4))
