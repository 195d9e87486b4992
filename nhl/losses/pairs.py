"""Where pairwise losses find the partners of each batch item: the batch itself, or a memory bank.

`pairs="batch"` compares every batch item with every other batch item (ordered pairs i != j, both
codes live, so gradient flows through both ends). `pairs="bank"` compares every batch item with the
last seen code of every training item (the released DeepHash code), the batch's own rows written
first with `u.detach()`. Only bank mode allocates a bank, so `uses_memory_bank` is set per instance.

Why both: from scratch, the bank mode of DSH collapses to one code for every item (measured on
digits, see `nhl.losses.dsh`). Bank codes are detached and stale, so moving the whole cloud of live
codes in one common direction increases the distance to every stale dissimilar bank row: the loss
rewards a global drift, and once everything is beyond the margin only the similar pulls remain. A
common shift of live in-batch codes changes no pairwise distance, so batch pairs cannot be gamed
this way. Measured for DSH on digits (smallcnn, batch 50, 16 bits, lr 1e-3), over the first 30
steps: with the bank the batch centroid's norm grew from 0.36 to 36 while the codes' spread around
it stayed at 2.1 (one code for everything by the end of epoch 1); with batch pairs the centroid
reached 11 and the spread 6. DSH, DHN, DBDH and DPSH all stall or collapse from scratch with the
bank and learn with batch pairs, so "batch" is their default. The DSH paper generates its pairs
online within each mini-batch; the bank (and DPSH's U matrix) is kept as an option for comparison
with the released code.

`rms_normalise` and `likelihood_scale` are the other shared fix: from an untrained backbone the
raw codes share a large offset and a free scale; on RMS-normalised codes the pairwise losses learn
(measurements in `nhl.losses.dsh` and `nhl.losses.dpsh`). `balanced_weight` gives similar and
dissimilar pairs equal total weight (measured: no gain for DSH or DPSH, kept as an option).
"""

from __future__ import annotations

import torch

from nhl.losses.base import MemoryBankMixin

PAIR_MODES = ("batch", "bank")


class PairsMixin(MemoryBankMixin):
    """`partners(u, labels, index)` gives the codes each batch item is compared with, their
    similarity to the batch and the weight of every pair (0 for pairs that do not count)."""

    def _init_pairs(self, pairs: str, mask_unseen: bool) -> None:
        if pairs not in PAIR_MODES:
            raise ValueError(f"pairs: expected one of {', '.join(PAIR_MODES)}, got {pairs!r}")
        self.pairs = pairs
        self.mask_unseen = bool(mask_unseen)
        self.uses_memory_bank = pairs == "bank"
        if self.uses_memory_bank:
            self._init_memory_bank()

    def partners(
        self, u: torch.Tensor, labels: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(codes `[M, bits]`, similar `[B, M]` bool, weight `[B, M]`).

        batch: the codes are `u` itself and the diagonal (an item with itself) has weight 0.
        bank: the bank is written first (training mode only); the codes are the bank rows, and with
        `mask_unseen` the rows never written have weight 0 (else they count as zero codes with no
        label, the released behaviour).
        """
        if self.pairs == "batch":
            weight = 1.0 - torch.eye(u.shape[0], dtype=u.dtype, device=u.device)
            return u, (labels @ labels.T) > 0, weight
        self._update_memory_bank(u, labels, index)
        codes = self.bank_codes.to(u.dtype)
        similar = (labels @ self.bank_labels.to(u.dtype).T) > 0
        if self.mask_unseen:
            weight = self.bank_seen.to(u.dtype)[None, :].expand(u.shape[0], -1)
        else:
            weight = torch.ones_like(similar, dtype=u.dtype)
        return codes, similar, weight


def balanced_weight(similar: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Pair weights under which similar and dissimilar pairs count half each (HashNet's w_ij).

    Each counted similar pair gets `weight / (2 * S1)` and each counted dissimilar pair
    `weight / (2 * S0)`, with S1, S0 the counted weight of each kind, so `pair_mean` gives
    (mean over similar + mean over dissimilar) / 2. With one kind only, the plain weights are kept.
    In a batch of 10 balanced classes about 9 pairs in 10 are dissimilar; without this the
    dissimilar pairs own about 90% of the loss and its gradient.
    """
    sim = similar.to(weight.dtype) * weight
    dis = weight - sim
    s1, s0 = sim.sum(), dis.sum()
    if float(s1) == 0.0 or float(s0) == 0.0:
        return weight
    return sim / (2 * s1) + dis / (2 * s0)


def pair_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean of a `[B, M]` pair matrix; 0 when no pair counts (e.g. a batch of one)."""
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


def pair_likelihood(inner: torch.Tensor, similar: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of the pair labels under p(s=1) = sigmoid(inner), elementwise:
    log(1 + exp(inner)) - s * inner, computed stably (DPSH, DHN, DBDH, HashNet)."""
    return torch.nn.functional.softplus(inner) - similar.to(inner.dtype) * inner


def rms_normalise(u: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each code divided by its root mean square, so every entry is +-1 on average and
    ||u_i||^2 = bits; signs (the binary code) are unchanged."""
    return u / u.pow(2).mean(dim=1, keepdim=True).add(eps).sqrt()


# theta = LIKELIHOOD_RANGE / bits * u_i . u_j on normalised codes lies in [-8, 8] at every length
LIKELIHOOD_RANGE = 8.0


def likelihood_scale(scale: float | None, bits: int, normalise: bool) -> float:
    """The factor of theta_ij = scale * u_i . v_j in the pairwise likelihood losses.

    None: 8 / bits on normalised codes (||u||^2 = bits, so |theta| <= 8 at every length instead of
    saturating the sigmoid at bits / 2 = 32 for 64 bits), 1/2 on raw codes (the papers' theta).
    """
    if scale is not None:
        return float(scale)
    return LIKELIHOOD_RANGE / bits if normalise else 0.5
