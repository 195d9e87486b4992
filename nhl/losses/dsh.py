"""DSH: Deep Supervised Hashing (Liu et al., CVPR 2016)."""

from __future__ import annotations

import torch

from nhl.losses.base import HashLoss, register_loss
from nhl.losses.pairs import PairsMixin, balanced_weight, pair_mean, rms_normalise


@register_loss("dsh")
class DSHLoss(PairsMixin, HashLoss):
    """Contrastive loss on squared Euclidean distances between codes, plus a quantisation term.

    With D = ||u_i - v_j||^2 on RMS-normalised codes (`normalise`, below) and s_ij = 1 when the
    items share a label:
    loss = mean_ij [ s_ij * D / 2 + (1 - s_ij) * max(0, margin - D) / 2 ] + quant_weight * mean(| |u| - 1 |),
    where v_j runs over the partners chosen by `pairs`:
    - "batch" (default; the paper): the other items of the batch, all live;
    - "bank" (the released code): every training item's last seen code, the batch's rows written
      with `u.detach()` before the distances are taken.
    Trained from scratch, bank mode collapses to one code for every item. On digits (smallcnn width
    16, batch 50, 16 bits, Adam) val mAP stays at 0.110 (= all ties) at lr 1e-3 for 3 and for 10
    epochs (0.127 once; 1-2 distinct database codes), at lr 3e-3, and at lr 1e-4 after its first
    epoch (10 epochs: 0.119 then 0.110). Batch mode learns: at lr 1e-3, 0.30 / 0.28 / 0.33 over 3
    epochs and 0.68 at epoch 10; 0.55 after 3 epochs at lr 3e-3; 0.23 at lr 1e-4. Mechanism (a
    global drift of the live codes away from the stale bank) in `nhl.losses.pairs`.

    Why `normalise` (default True; False is the paper's and the released raw outputs): every code
    is divided by its root mean square (`nhl.losses.pairs.rms_normalise`), so ||u_i||^2 = bits, the
    margin 2 * bits means "half the bits differ" at every length, and only the directions of the
    codes are learned, as in DCH's cosine. On raw outputs the scale is free and the codes share a
    large common offset: mnist5k, smallcnn from scratch, 64 bits, lr 1e-3, 6 epochs, the trained
    codes' mean over the training set had norm 29.6 against a spread of 16.3 around it, 64% of the
    bits had the same sign for over 90% of the items, and val mAP was 0.372 (0.471 with the mean
    subtracted before the sign). Neither pair balancing (0.313), quant_weight 0 (digits 0.474 vs
    0.506), tanh squashing (0.379; the raw outputs grew to |u| = 11.6 and froze) nor lr 3e-3 (0.365)
    fixed it; normalised codes did: digits (smallcnn width 16, 64 bits, 6 epochs) query mAP 0.506 ->
    0.897 (CSQ: 0.946); mnist5k as above (6 epochs, lr 1e-3) query mAP@64 0.913, val 0.930;
    nested nhl-noA-noD 0.872 at 64 bits (val still rising at epoch 6: 0.83, 0.92, 0.92 over epochs 4-6).

    Hyper-parameters: margin (2 * bits when None), quant_weight (alpha, 0.1), pairs ("batch" or
    "bank"), mask_unseen (bank mode only; True: average only over bank rows written so far; False:
    the released behaviour, where the all-zero rows of items not yet seen count as dissimilar items
    at the origin), balance_pairs (False; True weighs similar and dissimilar pairs half each,
    `nhl.losses.pairs.balanced_weight`: measured no better for DSH), normalise (True).
    Uses: pairwise; a memory bank of codes and labels (buffers) only in bank mode; no centres.
    """

    pairwise = True

    def __init__(
        self,
        bits: int,
        num_classes: int,
        num_train: int,
        margin: float | None = None,
        quant_weight: float = 0.1,
        pairs: str = "batch",
        mask_unseen: bool = True,
        balance_pairs: bool = False,
        normalise: bool = True,
    ) -> None:
        super().__init__(bits, num_classes, num_train)
        self.margin = 2.0 * bits if margin is None else float(margin)
        self.quant_weight = float(quant_weight)
        self._init_pairs(pairs, mask_unseen)
        self.balance_pairs = bool(balance_pairs)
        self.normalise = bool(normalise)

    def compute_loss(self, u: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            u = rms_normalise(u)
        codes, similar, weight = self.partners(u, labels, index)
        if self.balance_pairs:
            weight = balanced_weight(similar, weight)
        # ||u - v||^2 expanded, so memory is [B, M] rather than [B, M, bits]
        dist = (u.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1)[None, :] - 2 * u @ codes.T).clamp(min=0)
        pair = torch.where(similar, dist, (self.margin - dist).clamp(min=0)) / 2
        quant_loss = (1 - u.abs()).abs().mean()
        return pair_mean(pair, weight) + self.quant_weight * quant_loss
