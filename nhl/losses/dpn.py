"""DPN: Deep Polarized Network (Fan et al., IJCAI 2020)."""

from __future__ import annotations

import torch

from nhl.losses.base import CentersMixin, HashLoss, register_loss
from nhl.losses.centers import random_balanced_centers


@register_loss("dpn")
class DPNLoss(CentersMixin, HashLoss):
    """Polarise every output unit past a margin on the side of its class's target bit.

    loss = mean(max(0, margin - u * t)) on the raw output u, with t the item's +-1 target (multi-label:
    sign of the sum of its labels' targets, ties from a fixed seeded random bit, as in the released
    code). This is plain DPN: no ternary assignment, no adaptive target update.

    Hyper-parameters: margin (m, 1.0); centers (`[C, bits]` +-1, used as-is) or, when absent,
    random targets with half the bits -1 drawn with `seed`.
    Uses: per-class targets (buffer); no memory bank; not pairwise.
    """

    uses_centers = True

    def __init__(
        self,
        bits: int,
        num_classes: int,
        num_train: int,
        margin: float = 1.0,
        centers: torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(bits, num_classes, num_train)
        self.margin = float(margin)
        self._init_centers(centers, seed, random_balanced_centers)

    def compute_loss(self, u: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        target = self.targets(labels).to(u.dtype)
        return (self.margin - u * target).clamp(min=0).mean()
