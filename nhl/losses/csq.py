"""CSQ: Central Similarity Quantization (Yuan et al., CVPR 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nhl.losses.base import CentersMixin, HashLoss, register_loss
from nhl.losses.centers import hadamard_centers


@register_loss("csq")
class CSQLoss(CentersMixin, HashLoss):
    """Pull each code toward its class's hash centre.

    loss = BCE((tanh(u) + 1) / 2, (c + 1) / 2) + quant_weight * mean((|tanh u| - 1)^2), where c is the
    item's centre (multi-label: sign of the sum of its labels' centres, ties from a fixed seeded
    random bit). The BCE is computed on logits: (tanh(u) + 1) / 2 = sigmoid(2u), so it equals the
    released `BCELoss` on the squashed output without its log clamping.

    Hyper-parameters: quant_weight (lambda, 1e-4); centers (`[C, bits]` +-1, used as-is, e.g.
    prefix-consistent centres) or, when absent, the released Hadamard rule drawn with `seed`.
    Uses: per-class centres (buffer); no memory bank; not pairwise.
    """

    uses_centers = True

    def __init__(
        self,
        bits: int,
        num_classes: int,
        num_train: int,
        quant_weight: float = 1e-4,
        centers: torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(bits, num_classes, num_train)
        self.quant_weight = float(quant_weight)
        self._init_centers(centers, seed, hadamard_centers)

    def compute_loss(self, u: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        target = (self.targets(labels).to(u.dtype) + 1) / 2
        center_loss = F.binary_cross_entropy_with_logits(2 * u, target)
        quant_loss = (u.tanh().abs() - 1).pow(2).mean()
        return center_loss + self.quant_weight * quant_loss
