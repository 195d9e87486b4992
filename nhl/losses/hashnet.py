"""HashNet: Deep Learning to Hash by Continuation (Cao et al., ICCV 2017)."""

from __future__ import annotations

import torch

from nhl.losses.base import HashLoss, register_loss
from nhl.losses.pairs import pair_likelihood, rms_normalise


@register_loss("hashnet")
class HashNetLoss(HashLoss):
    """Weighted pairwise likelihood on tanh(scale * u), the scale growing during training.

    On the batch's pairs (all ordered pairs, an item with itself included, as released), with
    h = tanh(scale * u), theta_ij = alpha * h_i . h_j and s_ij = 1 when the items share a label:
    l_ij = log(1 + exp(theta_ij)) - s_ij * theta_ij,
    loss = mean over similar pairs of l_ij + mean over dissimilar pairs of l_ij,
    which is the paper's weighted likelihood with w_ij = |S| / |S_1| (similar) and |S| / |S_0|
    (dissimilar), averaged over |S| (one kind only: the plain mean).

    Continuation: tanh(scale * u) tends to sign(u) as the scale grows. The step count lives in the
    buffer `step` (so checkpoints and resumed runs carry it) and, as in the authors' code, the
    scale is init_scale * (1 + gamma * t)^power with t the step count rounded down to a multiple of
    step_size: 1.0 for the first 199 steps, then sqrt(2) at step 200, sqrt(3) at 400, ...
    (DeepHash-pytorch instead uses sqrt(epoch // 20 + 1), per epoch). A step is counted on every
    training-mode call except one that sees exactly the previous call's batch and codes (same
    `index` positions, same u): adaptive weighting's probe and the update that follows on the same
    codes advance the schedule once, while full-batch training still advances it every step (the
    codes change). Eval-mode calls never advance it.

    Hyper-parameters: alpha (sigmoid scale; None: 10 / bits as in the authors' code, whereas
    DeepHash-pytorch uses 0.1: on digits, 16 bits, lr 1e-3, 3 epochs, val mAP 0.47 against 0.42),
    init_scale (1.0), gamma (0.005), power (0.5), step_size (200), self_pairs (True, as released;
    False leaves out each item's pair with itself), normalise (False; True: tanh of the RMS-normalised
    code, `nhl.losses.pairs.rms_normalise`).
    Under-learning from scratch (the cause: the step-counted continuation, below): digits (smallcnn
    width 16, 64 bits, lr 1e-3, 6 epochs) query mAP 0.520 as released, 0.540 without self-pairs,
    0.583 normalised (one seed each; CSQ 0.946), so the defaults stay the released ones. HashNet
    already balances its pairs.
    On mnist5k (bench/loss_zoo.py, query mAP@ALL at 64 bits) normalise=True, self_pairs=False and 12
    epochs (params.yaml) give 0.767 baseline / 0.793 nested, against 0.327 / 0.344 as released in 6.
    Why params.yaml sets gamma 0.13 and step_size 8 (the defaults stay the released 0.005 and 200):
    the continuation counts steps, and the released schedule was written for 10,000 iterations
    (thuml/HashNet pytorch/src/train.py, num_iterations 10000), where the scale ends near
    sqrt(1 + 0.005 * 9800) = 7.07. mnist5k has 2,000 training items, 32 batches of 64 per epoch, so
    12 epochs are 384 steps, where the released schedule is still at sqrt(2) = 1.41: tanh(scale * u)
    stays far from sign(u), the likelihood is met by continuous codes whose signs retrieve poorly.
    gamma 0.13 with step_size 8 reaches sqrt(1 + 0.13 * 384) = 7.13 at step 384, the released end
    within 1%. Measured on the val split (mnist5k, smallcnn width 32 from scratch, baseline-64,
    lr 1e-3, normalise, no self-pairs, 6 epochs, one seed): val mAP@64 per epoch 0.244 / 0.308 /
    0.387 / 0.549 / 0.686 / 0.587 (best 0.686), against 0.347 with the released schedule
    (tuned at 6 epochs, 2026-11). params.yaml now trains it 18 epochs (576 steps, scale about 8.7 at
    the end): val mAP@64 0.954 at 12 epochs, 0.972 at 18, best epoch the last (reports/tuning/
    hashnet.md); query mAP@64 over seeds 0-2 0.925 +- 0.027 baseline, 0.931 +- 0.004 nested
    (bench/loss_zoo.py, 2026-12-06).
    Uses: in-batch pairs; a step counter (buffer); no memory bank; no centres.
    """

    pairwise = True
    step: torch.Tensor  # buffers (registered in __init__)
    last_call: torch.Tensor

    def __init__(
        self,
        bits: int,
        num_classes: int,
        num_train: int,
        alpha: float | None = None,
        init_scale: float = 1.0,
        gamma: float = 0.005,
        power: float = 0.5,
        step_size: int = 200,
        self_pairs: bool = True,
        normalise: bool = False,
    ) -> None:
        super().__init__(bits, num_classes, num_train)
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size: expected a positive integer, got {step_size!r}")
        self.alpha = 10.0 / bits if alpha is None else float(alpha)
        self.init_scale = float(init_scale)
        self.gamma = float(gamma)
        self.power = float(power)
        self.step_size = step_size
        self.self_pairs = bool(self_pairs)
        self.normalise = bool(normalise)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        # fingerprint of the last training call (index sum, index sum of squares, sum of u): a repeat is not a step
        self.register_buffer("last_call", torch.full((3,), float("nan"), dtype=torch.float64))

    @property
    def scale(self) -> float:
        """The current tanh scale."""
        t = (int(self.step) // self.step_size) * self.step_size
        return self.init_scale * (1.0 + self.gamma * t) ** self.power

    def _advance(self, u: torch.Tensor, index: torch.Tensor) -> None:
        if not self.training:
            return
        index = index.to(torch.float64)
        key = torch.stack([index.sum(), index.pow(2).sum(), u.detach().to(torch.float64).sum()]).to(self.last_call)
        if not torch.equal(key, self.last_call):
            self.step += 1
            self.last_call.copy_(key)

    def compute_loss(self, u: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        self._advance(u, index)
        h = torch.tanh(self.scale * (rms_normalise(u) if self.normalise else u))
        similar = (labels @ labels.T) > 0
        pair = pair_likelihood(self.alpha * h @ h.T, similar)
        counted = torch.ones_like(similar)
        if not self.self_pairs:
            counted = ~torch.eye(len(u), dtype=torch.bool, device=u.device)
            if not counted.any():
                return pair.sum() * 0.0
        if similar[counted].all() or not similar[counted].any():
            return pair[counted].mean()
        return pair[similar & counted].mean() + pair[~similar & counted].mean()
