"""MDSH: Deep Hashing with Minimal-Distance-Separated Hash Centers (Wang et al., CVPR 2023)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nhl.losses.base import CentersMixin, HashLoss, register_loss
from nhl.losses.centers import prefix_consistent_centers


def max_min_distance_centers(num_classes: int, bits: int, seed: int = 0) -> torch.Tensor:
    """`[C, bits]` centres whose smallest pairwise Hamming distance is made as large as we can
    find (the one-length case of `prefix_consistent_centers`): MDSH's separated centres."""
    return prefix_consistent_centers(num_classes, [bits], seed=seed)


@register_loss("mdsh")
class MDSHLoss(CentersMixin, HashLoss):
    """Softmax over scaled cosines to the class centres, read as one binary decision per class.

    With z_ic = scale * cos(u_i, c_c) (scale = sqrt(bits) by default), p_i = softmax(z_i) over the
    classes and y_ic the item's multi-hot labels:
    loss = -mean_ic [ y_ic log p_ic + (1 - y_ic) log(1 - p_ic) ] + quant_weight * mean((|u| - 1)^2).
    log(1 - p) is computed as logsumexp over the other classes minus logsumexp over all, so it
    stays finite when one class dominates. The released code also has a momentum pair term that
    is switched off (its epoch counter never advances); it is not included.

    Hyper-parameters: quant_weight (lambda, 1e-4); scale (None: sqrt(bits)); centers (`[C, bits]`
    +-1, used as-is, e.g. prefix-consistent centres) or, when absent, centres with a large minimum
    pairwise distance drawn with `seed` (`max_min_distance_centers`).
    Uses: per-class centres (buffer); no memory bank; not pairwise.
    """

    uses_centers = True

    def __init__(
        self,
        bits: int,
        num_classes: int,
        num_train: int,
        quant_weight: float = 1e-4,
        scale: float | None = None,
        centers: torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(bits, num_classes, num_train)
        self.quant_weight = float(quant_weight)
        self.scale = math.sqrt(bits) if scale is None else float(scale)
        self._init_centers(centers, seed, max_min_distance_centers)

    def compute_loss(self, u: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        centers = self.centers.to(u.dtype)
        logits = self.scale * F.normalize(u, dim=1) @ F.normalize(centers, dim=1).T  # [B, C]
        total = torch.logsumexp(logits, dim=1, keepdim=True)
        terms = labels * (logits - total)
        if self.num_classes > 1:
            eye = torch.eye(self.num_classes, dtype=torch.bool, device=u.device)
            others = logits[:, None, :].masked_fill(eye[None], float("-inf"))  # [B, C, C]: class c left out
            terms = terms + (1 - labels) * (torch.logsumexp(others, dim=2) - total)
        quant_loss = (u.abs() - 1).pow(2).mean()
        return -terms.mean() + self.quant_weight * quant_loss
