"""The base class every hashing loss derives from, and the registry that builds them by name.

A loss declares what it needs through three attributes, so the training loop has no special
cases: `uses_centers` (per-class target codes, a buffer), `uses_memory_bank` (codes and labels of
the whole training set, buffers updated inside `forward`), `pairwise` (compares items with each
other rather than with fixed targets). They are class attributes, which a loss may refine per
instance (a pairwise loss with `pairs="batch"` keeps no bank).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from nhl.distributed import all_gather_rows
from nhl.losses.centers import labels_to_centers

LOSSES: dict[str, type[HashLoss]] = {}

# Constructor arguments that every loss takes and `build_loss` passes itself.
_CORE_ARGS = ("bits", "num_classes", "num_train")


class HashLoss(nn.Module):
    """A hashing objective on one code length: `forward(u, labels, index) -> scalar`.

    `u` is the raw head output `[B, bits]` (no tanh: each loss squashes itself), `labels` a
    float multi-hot `[B, C]` (single-label data is one-hot) or class ids `[B]`, `index` the training-set positions
    `[B]` of the batch items. `forward` checks the inputs; subclasses write `compute_loss`.
    """

    uses_centers: bool = False
    uses_memory_bank: bool = False
    pairwise: bool = False
    name: str = ""

    def __init__(self, bits: int, num_classes: int, num_train: int) -> None:
        super().__init__()
        for field, value in (("bits", bits), ("num_classes", num_classes), ("num_train", num_train)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{field}: expected a positive integer, got {value!r}")
        self.bits = bits
        self.num_classes = num_classes
        self.num_train = num_train

    def forward(self, u: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if u.dim() != 2 or u.shape[1] != self.bits:
            raise ValueError(f"u: expected shape [B, {self.bits}], got {list(u.shape)}")
        if labels.dim() == 1:
            labels = ids_to_multi_hot(labels, self.num_classes)
        if labels.dim() != 2 or labels.shape != (u.shape[0], self.num_classes):
            raise ValueError(f"labels: expected shape [{u.shape[0]}, {self.num_classes}], got {list(labels.shape)}")
        if index.dim() != 1 or index.shape[0] != u.shape[0]:
            raise ValueError(f"index: expected shape [{u.shape[0]}], got {list(index.shape)}")
        return self.compute_loss(u, labels.to(u.dtype), index.long())

    def compute_loss(self, u: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"bits={self.bits}, num_classes={self.num_classes}, num_train={self.num_train}"


def ids_to_multi_hot(ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class ids `[B]` (the compact single-label form, `nhl.labels`) as one-hot `[B, C]` rows.

    Only a batch is expanded (B x C, 2.5 MB for 64 items at 10,000 classes), never a split.
    """
    if ids.is_floating_point() and not bool((ids == ids.round()).all()):
        raise ValueError("labels: class ids must be integers")
    ids = ids.long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
        raise ValueError(
            f"labels: class ids must lie in [0, {num_classes}), got values in [{int(ids.min())}, {int(ids.max())}]"
        )
    return torch.nn.functional.one_hot(ids, num_classes).float()


class MemoryBankMixin(HashLoss):
    """Buffers `bank_codes [num_train, bits]`, `bank_labels [num_train, C]`, `bank_seen [num_train]`.

    Buffers go into `state_dict`, so checkpoints carry the bank. Writing is idempotent (calling
    `forward` twice with the same `u` gives the same bank and loss) and happens only in training
    mode: in eval mode the bank is read but never written, so scoring held-out items cannot leak
    their labels into it.

    Limit: `bank_labels` is dense, 4 N C bytes (4 GB for 100,000 training items at 10,000 classes);
    with many classes prefer a centre loss (csq) or `pairs="batch"`, which keeps no bank. A mixin for
    HashLoss subclasses: it derives from HashLoss (as CentersMixin does) so that `num_train`, `bits`,
    `training` and `register_buffer` are typed, which leaves a loss's method resolution order as it was.
    """

    bank_codes: torch.Tensor
    bank_labels: torch.Tensor
    bank_seen: torch.Tensor

    def _init_memory_bank(self) -> None:
        self.register_buffer("bank_codes", torch.zeros(self.num_train, self.bits))
        self.register_buffer("bank_labels", torch.zeros(self.num_train, self.num_classes))
        self.register_buffer("bank_seen", torch.zeros(self.num_train, dtype=torch.bool))

    def _update_memory_bank(self, u: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> None:
        if not self.training:
            return
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_train):
            raise ValueError(
                f"index: expected training-set positions in [0, {self.num_train}), "
                f"got values in [{int(index.min())}, {int(index.max())}]"
            )
        # under torchrun every process writes every process's share, so the banks stay identical
        u, labels, index = all_gather_rows(u.detach()), all_gather_rows(labels.detach()), all_gather_rows(index)
        self.bank_codes[index] = u.to(self.bank_codes.dtype)
        self.bank_labels[index] = labels.to(self.bank_labels.dtype)
        self.bank_seen[index] = True


class CentersMixin(HashLoss):
    """Buffers `centers [C, bits]` (+-1) and `tie_break [bits]` for centre-based losses.

    Given centres are used as-is (this is how nested training passes prefix-consistent centres);
    otherwise `rule(num_classes, bits, seed)` makes them. `tie_break` settles the bits where a
    multi-label item's label centres vote to a tie. A mixin for HashLoss subclasses.
    """

    centers: torch.Tensor
    tie_break: torch.Tensor

    def _init_centers(
        self, centers: torch.Tensor | None, seed: int, rule: Callable[[int, int, int], torch.Tensor]
    ) -> None:
        if centers is None:
            centers = rule(self.num_classes, self.bits, seed)
        centers = torch.as_tensor(centers).detach().clone().float().cpu()
        if centers.shape != (self.num_classes, self.bits):
            raise ValueError(f"centers: expected shape [{self.num_classes}, {self.bits}], got {list(centers.shape)}")
        if not bool(((centers == 1) | (centers == -1)).all()):
            raise ValueError("centers: expected entries in {-1, +1}")
        tie = np.where(np.random.default_rng([seed, 7]).random(self.bits) < 0.5, 1.0, -1.0)
        self.register_buffer("centers", centers)
        self.register_buffer("tie_break", torch.from_numpy(tie).float())

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """The +-1 target code `[B, bits]` of each item (its centre when single-label)."""
        return labels_to_centers(labels, self.centers, self.tie_break)


def register_loss(name: str) -> Callable[[type[HashLoss]], type[HashLoss]]:
    """Class decorator: add a `HashLoss` subclass to `LOSSES` under `name` (warns on a duplicate)."""

    def decorator(cls: type[HashLoss]) -> type[HashLoss]:
        if not (isinstance(cls, type) and issubclass(cls, HashLoss)):
            raise TypeError(f"register_loss({name!r}): expected a HashLoss subclass, got {cls!r}")
        if name in LOSSES and LOSSES[name] is not cls:
            warnings.warn(
                f"loss {name!r} registered twice: {LOSSES[name].__qualname__} replaced by {cls.__qualname__}",
                stacklevel=2,
            )
        cls.name = name
        LOSSES[name] = cls
        return cls

    return decorator


def list_losses() -> list[str]:
    """Registered loss names, sorted."""
    return sorted(LOSSES)


def get_loss_class(name: str) -> type[HashLoss]:
    """The registered class for `name`; ValueError listing the known names otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(list_losses()) or '(none)'}") from None


def loss_hparams(name: str) -> dict[str, Any]:
    """The hyper-parameters a loss accepts with their defaults (beyond bits/num_classes/num_train)."""
    params = inspect.signature(get_loss_class(name).__init__).parameters
    return {
        p.name: p.default
        for p in params.values()
        if p.name != "self" and p.name not in _CORE_ARGS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def build_loss(name: str, bits: int, num_classes: int, num_train: int, **hparams: Any) -> HashLoss:
    """Build the loss registered as `name`. None-valued hparams are dropped so defaults hold;
    an unknown hyper-parameter is a ValueError naming it and the accepted ones."""
    cls = get_loss_class(name)
    hparams = {k: v for k, v in hparams.items() if v is not None}
    accepted = loss_hparams(name)
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(
            f"loss {name!r}: unknown hyper-parameter(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(accepted)) or '(none)'}"
        )
    return cls(bits=bits, num_classes=num_classes, num_train=num_train, **hparams)
