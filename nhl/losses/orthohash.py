"""OrthoHash: "One Loss for All: Deep Hashing with a Single Cosine Similarity based Learning
Objective" (Hoe et al., NeurIPS 2021)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nhl.losses.base import CentersMixin, HashLoss, register_loss
from nhl.losses.centers import hadamard_centers


def bernoulli_codes(num_classes: int, bits: int, seed: int = 0) -> torch.Tensor:
    """`[C, bits]` codes with independent fair +-1 bits: the released default codebook ("B")."""
    rng = np.random.default_rng([seed, 11])
    return torch.from_numpy(np.where(rng.random((num_classes, bits)) < 0.5, 1.0, -1.0)).float()


@register_loss("orthohash")
class OrthoHashLoss(CentersMixin, HashLoss):
    """Cross-entropy over classes on scaled cosine similarities to fixed binary class codes.

    With v the normalised code (below), c_j class j's +-1 code and y the item's labels:
    logits_j = scale * (cos(v, c_j) - margin * y_j) (CosFace-style additive margin on the positive
    classes) and loss = mean_i -sum_j (y_ij / sum_j y_ij) log softmax(logits_i)_j: plain CE for
    one-hot labels, the released label-smoothing rule for multi-label items (the target spreads
    evenly over the item's labels). Items without any label are left out of the mean. Optional
    quantisation (released default off): quant_weight * mean(1 - cos(v, sign(v))).

    Normalisation of the code, and why it differs from the paper: the released model puts a
    BatchNorm1d (with affine shift) after the hash layer and encodes sign(BN(u)) at test time, so BN's
    mean subtraction is part of the code (and drives bit balance). In nhl the trainer passes the raw
    head output u and every model encodes sign(u); a mean-subtracting BN inside the loss would train
    sign(u - batch mean) while sign(u) is evaluated, and because the loss is then blind to any
    per-bit offset, the head bias could drift freely and flip test bits. So the default
    norm="rms" divides each bit by its batch root-mean-square, v = u / sqrt(mean_batch(u^2) + eps):
    BN's per-bit rescaling without the shift or affine parameters, which never changes a sign, so
    what is trained is exactly what is encoded (it gives every bit the same weight in the cosine;
    it does not force balance, which the random codes' own balance encourages instead).
    norm="none" uses u as is. No running statistics: nothing here is used at test time. (A batch of
    one item makes v = sign(u) up to eps, with no gradient: train with batches of several items.)

    Hyper-parameters: scale (s, 8), margin (m, 0.2), quant_weight (0, as released), norm ("rms" or
    "none"), centers (`[C, bits]` +-1, used as-is, e.g. prefix-consistent centres passed by nested
    training) or, when absent, the codebook drawn with `seed`: "bernoulli" (the released default:
    fair independent bits; at 8 bits two of 10 classes can get codes 1 bit apart) or "hadamard"
    (CSQ's rule: rows of [H; -H], exactly orthogonal while C <= bits).
    Uses: per-class codes (buffer); no memory bank; not pairwise.
    """

    uses_centers = True
    NORMS = ("rms", "none")
    CODEBOOKS = {"bernoulli": bernoulli_codes, "hadamard": hadamard_centers}

    def __init__(
        self,
        bits: int,
        num_classes: int,
        num_train: int,
        scale: float = 8.0,
        margin: float = 0.2,
        quant_weight: float = 0.0,
        norm: str = "rms",
        codebook: str = "bernoulli",
        centers: torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(bits, num_classes, num_train)
        if norm not in self.NORMS:
            raise ValueError(f"norm: expected one of {', '.join(self.NORMS)}, got {norm!r}")
        if codebook not in self.CODEBOOKS:
            raise ValueError(f"codebook: expected one of {', '.join(self.CODEBOOKS)}, got {codebook!r}")
        self.scale, self.margin, self.quant_weight, self.norm = float(scale), float(margin), float(quant_weight), norm
        self.eps = 1e-5
        self._init_centers(centers, seed, self.CODEBOOKS[codebook])

    def normalise(self, u: torch.Tensor) -> torch.Tensor:
        """The code the cosine is taken on (sign-preserving: see the class docstring)."""
        if self.norm == "none":
            return u
        return u / (u.pow(2).mean(dim=0, keepdim=True) + self.eps).sqrt()

    def compute_loss(self, u: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        v = self.normalise(u)
        cos = F.normalize(v, dim=1) @ F.normalize(self.centers.to(v.dtype), dim=1).T  # [B, C]
        logits = self.scale * (cos - self.margin * labels)
        counts = labels.sum(dim=1)
        has_label = counts > 0
        target = labels[has_label] / counts[has_label, None]
        ce = -(target * F.log_softmax(logits[has_label], dim=1)).sum(dim=1)
        loss = ce.mean() if ce.numel() else logits.sum() * 0.0
        if self.quant_weight:
            quant = 1 - F.cosine_similarity(v, torch.where(v >= 0, 1.0, -1.0).to(v.dtype).detach(), dim=1)
            loss = loss + self.quant_weight * quant.mean()
        return loss
