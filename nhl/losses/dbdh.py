"""DBDH: Deep Balanced Discrete Hashing (Zheng et al., Neurocomputing 2020)."""

from __future__ import annotations

import torch

from nhl.losses.base import HashLoss, register_loss
from nhl.losses.pairs import PairsMixin, balanced_weight, likelihood_scale, pair_likelihood, pair_mean, rms_normalise

POWERS = (1, 2)


@register_loss("dbdh")
class DBDHLoss(PairsMixin, HashLoss):
    """DHN's pairwise likelihood on codes clamped to [-1, 1], plus a bit-balance term.

    With h = clamp(u, -1, 1), theta_ij = h_i . v_j / 2 and s_ij = 1 when the items share a label:
    loss = mean_ij [ log(1 + exp(theta_ij)) - s_ij * theta_ij ] + balance_weight * mean_i |mean_b h_ib|^power,
    the balance term asking every code to have as many +1 as -1 bits. The clamp is a hard one, as
    released (no gradient where |u| > 1). v_j runs over the partners chosen by `pairs`: "batch"
    (default: the other items of the batch) or "bank" (the released code; the bank stores clamped
    codes). From scratch the bank mode stalls near collapse (digits, smallcnn, 16 bits, lr 1e-3,
    3 epochs: val mAP 0.15 / 0.14 / 0.11) while batch mode learns (0.17 / 0.27 / 0.37); see
    `nhl.losses.pairs` and, for the lr, `nhl.losses.dhn`.

    Defaults differ from the released loss (normalise=False, scale=0.5, clamp=True) as for DHN and
    DPSH (`nhl.losses.dpsh`): RMS-normalised codes and theta = 8 / bits * h . v. The hard clamp is off
    on normalised codes (`clamp=None`: on only for raw ones), since about half of the normalised
    entries exceed 1 and a clamp there passes no gradient: digits (smallcnn width 16, 64 bits,
    lr 1e-3, 6 epochs) query mAP 0.432 normalised with the clamp, 0.849 without (CSQ: 0.946).

    Hyper-parameters: balance_weight (alpha, 0.1), power (p, 2; 1 gives the absolute value), pairs
    ("batch" or "bank"), mask_unseen (bank mode only; as in DHN), balance_pairs (False), normalise
    (True), scale (None: 8 / bits normalised, 1/2 raw), clamp (None: only on raw codes).
    Uses: pairwise; a memory bank of codes and labels (buffers) only in bank mode; no centres.
    """

    pairwise = True

    def __init__(
        self,
        bits: int,
        num_classes: int,
        num_train: int,
        balance_weight: float = 0.1,
        power: int = 2,
        pairs: str = "batch",
        mask_unseen: bool = True,
        balance_pairs: bool = False,
        normalise: bool = True,
        scale: float | None = None,
        clamp: bool | None = None,
    ) -> None:
        super().__init__(bits, num_classes, num_train)
        if isinstance(power, bool) or power not in POWERS:
            raise ValueError(f"power: expected 1 or 2, got {power!r}")
        self.balance_weight = float(balance_weight)
        self.power = int(power)
        self._init_pairs(pairs, mask_unseen)
        self.balance_pairs = bool(balance_pairs)
        self.normalise = bool(normalise)
        self.scale = likelihood_scale(scale, bits, self.normalise)
        self.clamp = (not self.normalise) if clamp is None else bool(clamp)

    def compute_loss(self, u: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            u = rms_normalise(u)
        h = u.clamp(min=-1, max=1) if self.clamp else u
        codes, similar, weight = self.partners(h, labels, index)
        if self.balance_pairs:
            weight = balanced_weight(similar, weight)
        likelihood = pair_mean(pair_likelihood(self.scale * (h @ codes.T), similar), weight)
        balance = h.mean(dim=1).abs().pow(self.power).mean()
        return likelihood + self.balance_weight * balance
