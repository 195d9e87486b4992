"""DCH: Deep Cauchy Hashing (Cao et al., CVPR 2018)."""

from __future__ import annotations

import torch

from nhl.losses.base import HashLoss, register_loss

MAX_COS = 0.99  # released: cosine clamped so a similar pair never reaches distance 0 (log 0)
MIN_NORM = 1e-4  # released: product of norms clamped away from 0


@register_loss("dch")
class DCHLoss(HashLoss):
    """Cauchy cross-entropy on a cosine-based Hamming surrogate, with class-balance pair weights.

    On the batch's pairs (all ordered pairs, an item with itself included, as released), with
    d_ij = bits / 2 * (1 - min(cos(u_i, u_j), 0.99)) and s_ij = 1 when the items share a label:
    loss = mean_ij w_ij [ s_ij * log(d_ij / gamma) + log(1 + gamma / d_ij) ]
           + quant_weight * mean_i log(1 + d(|u_i|, 1) / gamma),
    where w_ij = |S| / |S_1| for similar pairs and |S| / |S_0| for dissimilar ones (|S| all pairs,
    |S_1| similar, |S_0| dissimilar; all 1 when the batch has only one kind), and d(|u_i|, 1) is the
    surrogate between |u_i| and the all-ones code.

    Hyper-parameters: gamma (Cauchy scale, 20), quant_weight (lambda, 0.1).
    Uses: in-batch pairs; no memory bank; no centres.
    """

    pairwise = True

    def __init__(
        self, bits: int, num_classes: int, num_train: int, gamma: float = 20.0, quant_weight: float = 0.1
    ) -> None:
        super().__init__(bits, num_classes, num_train)
        if gamma <= 0:
            raise ValueError(f"gamma: expected a positive number, got {gamma!r}")
        self.gamma = float(gamma)
        self.quant_weight = float(quant_weight)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """`[A, B]` Hamming surrogate bits / 2 * (1 - cos), the cosine clamped at 0.99."""
        norms = (a.norm(dim=1, keepdim=True) * b.norm(dim=1)[None, :]).clamp(min=MIN_NORM)
        cos = (a @ b.T) / norms
        return (1 - cos.clamp(max=MAX_COS)) * self.bits / 2

    def compute_loss(self, u: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        similar = ((labels @ labels.T) > 0).to(u.dtype)
        n_similar, n_all = similar.sum(), float(similar.numel())
        if 0 < n_similar < n_all:
            weight = similar * n_all / n_similar + (1 - similar) * n_all / (n_all - n_similar)
        else:
            weight = torch.ones_like(similar)
        dist = self.distance(u, u)
        cauchy = weight * (similar * torch.log(dist / self.gamma) + torch.log1p(self.gamma / dist))
        ones = torch.ones(1, self.bits, dtype=u.dtype, device=u.device)
        quant = torch.log1p(self.distance(u.abs(), ones) / self.gamma)
        return cauchy.mean() + self.quant_weight * quant.mean()
