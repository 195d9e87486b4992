"""One loss instance per code length, for nested (multi-length) training."""

from __future__ import annotations

from typing import Any

from torch import nn

from nhl.losses.base import build_loss, get_loss_class, loss_hparams
from nhl.losses.centers import prefix_consistent_centers
from nhl.models.head import check_lengths

CENTER_MODES = ("independent", "prefix")


def build_length_losses(
    name: str,
    lengths: list[int],
    num_classes: int,
    num_train: int,
    centers: str = "independent",
    seed: int = 0,
    **hparams: Any,
) -> nn.ModuleList:
    """`ModuleList` of `build_loss(name, bits=k, ...)` for each k in `lengths`, each with its own
    centres and memory bank.

    centers="independent" (the paper): each length draws its centres by the loss's own rule with
    `seed`, so a one-length baseline gets the same centres as that length inside a nested model.
    centers="prefix": centre-based losses get `prefix_consistent_centers(C, lengths, seed)[:, :k]`,
    so every shorter centre is the prefix of the longer one. Losses without centres ignore it.
    """
    lengths = check_lengths(lengths)
    if centers not in CENTER_MODES:
        raise ValueError(f"centers: expected one of {', '.join(CENTER_MODES)}, got {centers!r}")
    cls = get_loss_class(name)
    if "seed" in loss_hparams(name):
        hparams["seed"] = seed
    table = None
    if centers == "prefix" and cls.uses_centers:
        rule = getattr(cls, "prefix_centers", None)  # a loss may build its own nested table (SHC)
        table = (
            rule(num_classes, lengths, **{"seed": seed, **hparams})
            if rule is not None
            else prefix_consistent_centers(num_classes, lengths, seed=seed)
        )
    losses = []
    for k in lengths:
        extra = {"centers": table[:, :k].clone()} if table is not None else {}
        losses.append(build_loss(name, bits=k, num_classes=num_classes, num_train=num_train, **hparams, **extra))
    return nn.ModuleList(losses)
