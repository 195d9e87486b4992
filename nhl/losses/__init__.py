"""Hashing losses: `build_loss(name, ...)` builds one; importing this package registers them all."""

from __future__ import annotations

from nhl.losses import csq, dbdh, dch, dhn, dpn, dpsh, dsh, dtsh, hashnet, lcdsh, mdsh, orthohash, shc, shrewd  # noqa: F401  (registration side effects)
from nhl.losses.base import LOSSES, HashLoss, build_loss, get_loss_class, list_losses, register_loss
from nhl.losses.nested import build_length_losses

__all__ = ["LOSSES", "HashLoss", "build_length_losses", "build_loss", "get_loss_class", "list_losses", "register_loss"]
