"""SHREWD: "Semantic Hierarchy-based Relational Embeddings for Weakly-supervised Deep Hashing"
(Arponen & Bishop, ICLR 2019 LLD workshop; arXiv 1908.05602)."""

from __future__ import annotations

import math
import os

import torch

from nhl.hierarchy import Hierarchy, resolve_hierarchy
from nhl.losses.base import HashLoss, register_loss
from nhl.losses.pairs import rms_normalise


def relaxed_half_distance(normalise: bool) -> float:
    """The relaxed distance d_z of two codes that differ in half their bits, at their most binary:
    tanh(1) / 2 on RMS-normalised codes (every |x| = 1 maximises mean |tanh x| under mean x^2 = 1),
    1/2 on raw codes (tanh reaches +-1). SHREWD's default distance_scale: classes that share only
    the root are asked to sit where well-spread binary codes can be."""
    return math.tanh(1.0) / 2 if normalise else 0.5


@register_loss("shrewd")
class SHREWDLoss(HashLoss):
    """Match code distances to semantic distances from a label hierarchy, plus an empirical KL term.

    With z = tanh(u), the relaxed normalised Hamming distance of two items is
    d_z(i, j) = ||z_i - z_j||_1 / (2 * bits) (exactly Hamming / bits on +-1 codes), and their semantic
    distance d_s(i, j) = min over their label pairs of height(lcs) / height(root) (`nhl.hierarchy`):
        L_sem = mean over pairs i != j with labels of | d_z(i, j) - distance_scale * d_s(i, j) |,
    where with balance_pairs (default) the mean is taken per semantic-distance level (0 for the same
    class, ...) and then over the levels present in the batch, so the few same-class pairs are not
    outweighed by the many pairs of different classes (with 10 classes 9 pairs in 10 differ; the
    plain mean learned poor codes on digits: val mAP@16 about 0.4-0.5 against 0.6-0.7 balanced).
    On raw codes distance_scale 0.5 puts classes that share only the root at bits/2 (where random
    codes sit: no code set of more than two classes can be pairwise farther on average) and the same
    class at 0; on normalised codes the same place is tanh(1) / 2 (below).
    Only label similarities are used, never class identities: the paper's weak supervision.

    Empirical KL term: the k-nearest-neighbour estimate (Wang, Kulkarni & Verdu 2009) of
    KL(p_z || q), with q uniform on the corners of the hypercube {-1, +1}^bits, is
    (bits / n) sum_i log(nu_i / rho_i) + const, where rho_i is the distance from z_i to its nearest
    other code in the batch and nu_i its distance to the nearest sample of q. We take the limit of
    infinitely many q samples, where nu_i = ||z_i - sign(z_i)||_2 (the nearest corner), which makes
    the term deterministic, drop the constant and divide by bits; eps smooths both logarithms
    (tanh reaches +-1 exactly in float32, and two codes can coincide):
        L_KL = mean_i [ log sqrt(nu_i^2 + eps^2) - log sqrt(rho_i^2 + eps^2) ]
    Lowering it pulls codes onto corners (binary) and apart from each other (spread over the
    corners: uniform, balanced bits).
    loss = L_sem + kl_weight * L_KL. The KL term fights L_sem (it pushes same-class codes apart, and
    saturating tanh early freezes codes: with kl_weight 0.1 some digits runs collapsed to one code),
    hence a small default weight.

    Written from the paper's abstract and our reading of its method (the full text was not at hand
    offline): the L1 pair term, the scale and the nearest-corner limit are our choices, documented here.

    `normalise` (default True; False is the loss as first written here): z = tanh of the
    RMS-normalised code (`nhl.losses.pairs.rms_normalise`) rather than of the raw output, so the
    entries sit near +-0.76 whatever the raw scale and tanh neither starts in its linear range around
    the shared code of an untrained backbone nor saturates and freezes. Digits (smallcnn width 16,
    64 bits, lr 1e-3, 6 epochs) query mAP 0.622 raw -> 0.832 normalised (CSQ: 0.946).

    Why `distance_scale` defaults to tanh(1) / 2 on normalised codes (`relaxed_half_distance`; 0.5,
    the value first written here, stays reachable as distance_scale=0.5): an RMS-normalised code has
    mean(x^2) = 1, so by Jensen (tanh(sqrt(t)) is concave) mean |tanh x| <= tanh(1) = 0.762 and two
    codes that differ in half their bits sit at relaxed distance at most tanh(1) / 2 = 0.381, never
    0.5. With 0.5 no code set meets the target for any pair of different classes (for 10 classes the
    mean pairwise distance is at most tanh(1) * 10 / 18 = 0.42 even at the Plotkin bound), so their
    L1 gaps never close and their constant-size gradients keep pushing every code apart against the
    same-class pull. Measured on mnist5k (smallcnn width 32 from scratch, baseline-64, lr 1e-3, val
    split): 0.5 gives val mAP@64 0.437 / 0.644 / 0.661 / 0.746 / 0.738 / 0.761 / 0.798 / 0.803 over
    epochs 1-8 (and 0.713 query mAP in bench/loss_zoo.py, best epoch 3 of 6), tanh(1) / 2 = 0.38
    gives 0.521 / 0.709 / 0.672 / 0.775 / 0.764 / 0.787 / 0.763 / 0.880: ahead at 7 of 8 epochs,
    best 0.880 against 0.803 (one seed each; still rising). kl_weight 0 is worse (val 0.547 at best
    over 8 epochs at 0.5): the KL term's spread helps. params.yaml trains it at lr 3e-4 for 18 epochs
    without early stopping (val 0.892; lr 1e-3 0.888, 3e-3 0.792: reports/tuning/shrewd.md). It is the
    zoo's least stable loss (query mAP@64 over seeds 0-2: 0.822 +- 0.051), and its nested model loses
    7 points at 64 bits to its 8- and 16-bit terms (0.748 with every length, 0.819 with 32/64/128
    only; bench/loss_zoo.py --lengths, 2026-12-06): short codes cannot meet the pairwise distance
    targets, and their pull on the shared leading units is inherited by the long code.

    Hyper-parameters: hierarchy (a shipped name such as "digits", "cifar10", "cifar100", a YAML path,
    or a `Hierarchy`; None: the flat hierarchy, every pair of different classes at distance 1),
    distance_scale (None: tanh(1) / 2 on normalised codes, 0.5 on raw ones), kl_weight (0.02),
    eps (1e-2), balance_pairs (True), normalise (True).
    Uses: a `[C, C]` semantic-distance buffer; no centres; no memory bank; pairwise (within the batch).
    """

    pairwise = True
    class_distance: torch.Tensor  # buffer (registered in __init__)

    def __init__(
        self,
        bits: int,
        num_classes: int,
        num_train: int,
        hierarchy: Hierarchy | str | os.PathLike[str] | None = None,
        distance_scale: float | None = None,
        kl_weight: float = 0.02,
        eps: float = 1e-2,
        balance_pairs: bool = True,
        normalise: bool = True,
    ) -> None:
        super().__init__(bits, num_classes, num_train)
        self.hierarchy = resolve_hierarchy(hierarchy, num_classes)
        self.kl_weight, self.eps = float(kl_weight), float(eps)
        self.balance_pairs = bool(balance_pairs)
        self.normalise = bool(normalise)
        self.distance_scale = relaxed_half_distance(self.normalise) if distance_scale is None else float(distance_scale)
        self.register_buffer("class_distance", torch.from_numpy(self.hierarchy.distance()).float())

    def item_distance(self, labels: torch.Tensor) -> torch.Tensor:
        """`[B, B]` semantic distances: the closest pair of the two items' labels (inf if one has none)."""
        has = labels > 0
        big = torch.tensor(float("inf"), dtype=labels.dtype, device=labels.device)
        dist = self.class_distance.to(labels.dtype)
        per_class = torch.where(has[:, :, None], dist[None], big).amin(dim=1)  # [B, C]: nearest own label
        return torch.where(has[None, :, :], per_class[:, None, :], big).amin(dim=2)  # [B, B]

    def compute_loss(self, u: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        z = (rms_normalise(u) if self.normalise else u).tanh()
        n = z.shape[0]
        code_dist = (z[:, None, :] - z[None, :, :]).abs().sum(dim=2) / (2 * self.bits)
        sem_dist = self.item_distance(labels)
        valid = torch.isfinite(sem_dist) & ~torch.eye(n, dtype=torch.bool, device=z.device)
        target = self.distance_scale * torch.where(valid, sem_dist, torch.zeros_like(sem_dist))
        gaps = (code_dist - target).abs()
        if not bool(valid.any()):
            loss = z.sum() * 0.0
        elif self.balance_pairs:
            levels = torch.unique(sem_dist[valid])
            loss = torch.stack([gaps[valid & (sem_dist == level)].mean() for level in levels]).mean()
        else:
            loss = gaps[valid].mean()
        if self.kl_weight and n > 1:
            corner = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
            nu_sq = (z - corner).pow(2).sum(dim=1)
            sq = (z[:, None, :] - z[None, :, :]).pow(2).sum(dim=2)
            rho_sq = sq.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("inf")).amin(dim=1)
            eps_sq = self.eps**2
            kl = 0.5 * ((nu_sq + eps_sq).log() - (rho_sq + eps_sq).log())
            loss = loss + self.kl_weight * kl.mean()
        return loss

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hierarchy={self.hierarchy.name!r}"
