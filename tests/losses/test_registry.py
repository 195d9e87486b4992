"""Every registered loss, built by name: finite values and gradients, buffers in state_dict,
idempotent memory banks, and one instance per length for nested training."""

from __future__ import annotations

import pytest
import torch

import nhl.losses
from nhl.losses import build_length_losses, build_loss, list_losses

BITS, CLASSES, TRAIN = 16, 5, 20


def batch(multi_label: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if multi_label:
        labels = (torch.rand(6, CLASSES, generator=g) < 0.4).float()
        labels[0] = 0.0  # an item with no label at all must not break anything
    else:
        labels = torch.eye(CLASSES)[torch.randint(CLASSES, (6,), generator=g)]
    u = torch.randn(6, BITS, generator=g).requires_grad_(True)
    return u, labels, torch.randperm(TRAIN, generator=g)[:6]


def test_all_expected_losses_are_registered():
    assert {"csq", "dpn", "dsh"} <= set(list_losses())
    assert nhl.losses.LOSSES is nhl.losses.base.LOSSES


@pytest.mark.parametrize("name", list_losses())
@pytest.mark.parametrize("multi_label", [False, True])
def test_loss_is_finite_with_gradients(name, multi_label):
    loss = build_loss(name, bits=BITS, num_classes=CLASSES, num_train=TRAIN)
    for flag in ("uses_centers", "uses_memory_bank", "pairwise"):
        assert isinstance(getattr(loss, flag), bool)
    u, labels, index = batch(multi_label)
    value = loss(u, labels, index)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list_losses())
def test_forward_twice_with_the_same_u_gives_the_same_value(name):
    loss = build_loss(name, bits=BITS, num_classes=CLASSES, num_train=TRAIN)
    u, labels, index = batch(True, seed=1)
    assert loss(u, labels, index).item() == loss(u, labels, index).item()


@pytest.mark.parametrize("name", list_losses())
def test_state_dict_carries_centres_and_banks(name):
    loss = build_loss(name, bits=BITS, num_classes=CLASSES, num_train=TRAIN)
    u, labels, index = batch(False, seed=2)
    loss(u, labels, index)
    shapes = [tuple(t.shape) for t in loss.state_dict().values()]
    if loss.uses_centers:
        assert (CLASSES, BITS) in shapes
    if loss.uses_memory_bank:
        assert (TRAIN, BITS) in shapes and (TRAIN, CLASSES) in shapes
    # a fresh instance (other seed where there is one) loaded from the state dict computes the same loss
    fresh = build_loss(
        name,
        bits=BITS,
        num_classes=CLASSES,
        num_train=TRAIN,
        **({"seed": 9} if "seed" in nhl.losses.base.loss_hparams(name) else {}),
    )
    fresh.load_state_dict(loss.state_dict())
    u2, labels2, index2 = batch(True, seed=3)
    assert fresh(u2, labels2, index2).item() == pytest.approx(loss(u2, labels2, index2).item())


@pytest.mark.parametrize("name", list_losses())
@pytest.mark.parametrize("centers", ["independent", "prefix"])
def test_build_length_losses_gives_one_instance_per_length(name, centers):
    lengths = [4, 8, 16]
    losses = build_length_losses(name, lengths, num_classes=CLASSES, num_train=TRAIN, centers=centers, seed=1)
    assert isinstance(losses, torch.nn.ModuleList) and [m.bits for m in losses] == lengths
    assert len({id(m) for m in losses}) == 3
    u, labels, index = batch(True)
    for loss, k in zip(losses, lengths, strict=True):
        assert torch.isfinite(loss(u[:, :k], labels, index))
    if losses[0].uses_centers:
        prefix_ok = all(torch.equal(losses[i].centers, losses[-1].centers[:, :k]) for i, k in enumerate(lengths))
        assert prefix_ok == (centers == "prefix")


def test_build_length_losses_rejects_unknown_centre_mode():
    with pytest.raises(ValueError, match="centers: expected one of independent, prefix"):
        build_length_losses("csq", [8, 16], num_classes=3, num_train=4, centers="shared")
