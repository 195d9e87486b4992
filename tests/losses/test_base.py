"""HashLoss input checks, the registry decorator and build_loss's argument handling."""

from __future__ import annotations

import warnings

import pytest
import torch

from nhl.losses import LOSSES, HashLoss, build_loss, list_losses, register_loss
from nhl.losses.base import get_loss_class, loss_hparams


class _Mean(HashLoss):
    def __init__(self, bits, num_classes, num_train, scale: float = 1.0):
        super().__init__(bits, num_classes, num_train)
        self.scale = scale

    def compute_loss(self, u, labels, index):
        return self.scale * u.mean()


@pytest.fixture
def scratch_name():
    name = "_test_mean"
    yield name
    LOSSES.pop(name, None)


def test_register_build_and_list(scratch_name):
    register_loss(scratch_name)(_Mean)
    assert scratch_name in list_losses() and list_losses() == sorted(list_losses())
    assert get_loss_class(scratch_name) is _Mean and _Mean.name == scratch_name
    loss = build_loss(scratch_name, bits=4, num_classes=2, num_train=3, scale=None)  # None keeps the default
    assert loss.scale == 1.0
    assert build_loss(scratch_name, bits=4, num_classes=2, num_train=3, scale=2.0).scale == 2.0
    assert loss_hparams(scratch_name) == {"scale": 1.0}


def test_duplicate_registration_warns(scratch_name):
    register_loss(scratch_name)(_Mean)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_loss(scratch_name)(_Mean)  # the same class again: silent

    class Other(_Mean):
        pass

    with pytest.warns(UserWarning, match="registered twice"):
        register_loss(scratch_name)(Other)
    assert LOSSES[scratch_name] is Other


def test_register_rejects_non_losses():
    with pytest.raises(TypeError, match="HashLoss"):
        register_loss("_not_a_loss")(torch.nn.Linear)
    assert "_not_a_loss" not in LOSSES


def test_unknown_name_lists_known_losses():
    with pytest.raises(ValueError, match="unknown loss 'nope'.*csq.*dpn.*dsh"):
        build_loss("nope", bits=8, num_classes=2, num_train=4)


def test_unknown_hparam_is_named():
    with pytest.raises(ValueError, match="unknown hyper-parameter.*lamda.*accepted: centers, quant_weight, seed"):
        build_loss("csq", bits=8, num_classes=2, num_train=4, lamda=0.1)


@pytest.mark.parametrize(
    "field,kwargs",
    [
        ("bits", dict(bits=0, num_classes=2, num_train=4)),
        ("num_classes", dict(bits=8, num_classes=2.0, num_train=4)),
        ("num_train", dict(bits=8, num_classes=2, num_train=True)),
    ],
)
def test_sizes_must_be_positive_integers(field, kwargs):
    with pytest.raises(ValueError, match=field):
        build_loss("dpn", **kwargs)


def test_forward_checks_shapes():
    loss = build_loss("dpn", bits=4, num_classes=3, num_train=5)
    u, y, i = torch.zeros(2, 4), torch.zeros(2, 3), torch.arange(2)
    with pytest.raises(ValueError, match=r"labels: expected shape \[2, 3\]"):
        loss(u, torch.zeros(2, 4), i)
    with pytest.raises(ValueError, match=r"index: expected shape \[2\]"):
        loss(u, y, torch.arange(3))
    with pytest.raises(ValueError, match=r"u: expected shape \[B, 4\]"):
        loss(torch.zeros(2, 5), y, i)
    assert loss(u, y, i).item() == pytest.approx(1.0)  # max(0, 1 - 0) everywhere


def test_class_ids_give_the_same_loss_as_one_hot_rows():
    """The compact single-label form: ids [B] are expanded per batch to the one-hot rows."""
    torch.manual_seed(0)
    u, ids = torch.randn(6, 16), torch.tensor([0, 3, 3, 1, 2, 0])
    loss = build_loss("csq", bits=16, num_classes=4, num_train=6)
    one_hot = torch.zeros(6, 4)
    one_hot[torch.arange(6), ids] = 1
    index = torch.arange(6)
    torch.testing.assert_close(loss(u, ids, index), loss(u, one_hot, index))
    with pytest.raises(ValueError, match=r"labels: class ids must lie in \[0, 4\)"):
        loss(u, torch.tensor([0, 1, 2, 3, 4, 0]), index)
