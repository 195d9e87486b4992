"""Dominance-aware adaptive weighting ("A" in NHL): keep longer codes from overriding shorter ones.

Each step, the gradient g_i of every length's objective with respect to the shared head weight is
probed (head only, on the detached backbone feature). On the rows a shorter length i shares with a
longer length j, d_ij = <g_i, g_j>. When j pushes against i (d_ij < 0) by more than
tau_i = beta * ||g_i||^2 / (n - 1), j's weight is scaled by alpha_ij = tau_i / -d_ij; farther
lengths are capped by the adjacent one; w_j is the product of its alphas, normalised to sum n.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from nhl.distributed import all_reduce_mean
from nhl.models.head import check_lengths


def _shared_rows(grads: Sequence[torch.Tensor], lengths: list[int]) -> tuple[list[torch.Tensor], int]:
    """Each gradient as a flat float64 vector over its own first lengths[i] rows; and d."""
    k_max = lengths[-1]
    total = grads[-1].numel()
    if total % k_max:
        raise ValueError(f"grads[-1]: expected a multiple of {k_max} values (k_max x d), got {total}")
    d = total // k_max
    flat = []
    for i, (g, k) in enumerate(zip(grads, lengths, strict=True)):
        g = g.detach().reshape(-1).double()
        if g.numel() not in (k * d, k_max * d):
            raise ValueError(
                f"grads[{i}]: expected {k * d} ({k} rows) or {k_max * d} ({k_max} rows) "
                f"values of a {d}-wide weight, got {g.numel()}"
            )
        flat.append(g[: k * d])
    return flat, d


def dominance_weights(
    grads: Sequence[torch.Tensor], lengths: Sequence[int], beta: float = 1.0, faithful: bool = False
) -> torch.Tensor:
    """Per-length loss weights `[n]` (sum n, detached) from the head-weight gradients.

    grads[i]: the row-major head-weight gradient of length i's objective, either its first
    lengths[i] rows or the whole k_max x d matrix (zeros beyond row lengths[i]); d is inferred.
    faithful=True uses the shortest code's ||g_1||^2 in every tau_i, as the released code does.
    """
    lengths = check_lengths(list(lengths))
    n = len(lengths)
    if len(grads) != n:
        raise ValueError(f"grads: expected one gradient per length ({n}), got {len(grads)}")
    if beta < 0:
        raise ValueError(f"beta: expected a non-negative number, got {beta}")
    device = grads[0].device
    if n == 1:
        return torch.ones(1, device=device)
    flat, d = _shared_rows(grads, lengths)
    alpha = torch.ones(n, n, dtype=torch.float64, device=device)
    for i in range(n - 1):
        norm_sq = flat[0].dot(flat[0]) if faithful else flat[i].dot(flat[i])
        tau = beta * norm_sq / (n - 1)
        for j in range(i + 1, n):
            push = -flat[i].dot(flat[j][: lengths[i] * d])  # -d_ij
            if push > 0 and push > tau:
                alpha[i, j] = tau / push
        for j in range(i + 2, n):
            alpha[i, j] = torch.minimum(alpha[i, j], alpha[i, i + 1])
    weights = torch.stack([alpha[:j, j].prod() for j in range(n)])  # w_1 = empty product = 1
    return (n * weights / weights.sum()).float()


def probe_gradients(head_weight: torch.Tensor, objectives: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Flattened gradient of each scalar objective w.r.t. `head_weight`, via `torch.autograd.grad`:
    nothing is accumulated into any `.grad`, so the real update starts clean."""
    grads = []
    for i, obj in enumerate(objectives):
        if obj.dim() != 0:
            raise ValueError(f"objectives[{i}]: expected a scalar, got shape {list(obj.shape)}")
        g = None
        if obj.requires_grad:
            (g,) = torch.autograd.grad(obj, head_weight, retain_graph=True, allow_unused=True)
        if g is None:
            g = torch.zeros_like(head_weight)
        grads.append(g.detach().reshape(-1))
    return grads


class LinearHead(Protocol):
    """What `AdaptiveWeighting.compute` uses of a head (NestedHashHead has it): calling it on
    features gives one output per length, and `linear.weight` is the weight the probes reach."""

    linear: nn.Linear

    def __call__(self, features: torch.Tensor) -> list[torch.Tensor]: ...


class AdaptiveWeighting:
    """The per-step weighting as used by the training loop, plus running stats for logging.

    `compute(head, features, objective_fn)` runs the head on the detached `features`, gets the
    per-length objectives from `objective_fn(outputs)` (loss_i + lambda * SP_i), probes their
    head-weight gradients and returns the weights (detached). Under torchrun the probe gradients
    are averaged over processes first, so every process computes the same weights. Uses only `head(x)` and
    `head.linear.weight`. Cost: one head forward and n head-only backward passes. The training loop
    uses `from_objectives` instead, which probes the step's own objectives (n head-only backward
    passes, nothing else).
    """

    _weight_sum: torch.Tensor | None  # running stats, set by reset()
    _steps: int
    _reduced_steps: int

    def __init__(self, beta: float = 1.0, faithful: bool = False) -> None:
        if beta < 0:
            raise ValueError(f"beta: expected a non-negative number, got {beta}")
        self.beta = float(beta)
        self.faithful = bool(faithful)
        self.reset()

    def compute(
        self,
        head: LinearHead,
        detached_features: torch.Tensor,
        objective_fn: Callable[[list[torch.Tensor]], Sequence[torch.Tensor]],
    ) -> torch.Tensor:
        with torch.enable_grad():
            outputs = head(detached_features.detach())
            objectives = list(objective_fn(outputs))
            if len(objectives) != len(outputs):
                raise ValueError(
                    f"objective_fn: expected {len(outputs)} objectives (one per length), got {len(objectives)}"
                )
            return self.from_objectives(head.linear.weight, objectives, [o.shape[1] for o in outputs])

    def from_objectives(
        self, head_weight: torch.Tensor, objectives: Sequence[torch.Tensor], lengths: Sequence[int]
    ) -> torch.Tensor:
        """The weights from objectives already computed on the training step's own graph.

        This is how the training loop calls it: the objectives of the real forward pass are probed
        with `torch.autograd.grad(..., head_weight, retain_graph=True)`, which walks back only to the
        head weight (never into the backbone), then the same objectives are weighted and
        backpropagated once. Compared with `compute`, no second head forward and no second
        evaluation of the losses; the gradients are the same numbers (the head sees the same
        features, and the teacher side of distillation is detached either way).
        """
        grads = all_reduce_mean(probe_gradients(head_weight, list(objectives)))
        weights = dominance_weights(grads, list(lengths), self.beta, self.faithful).detach()
        self._record(weights)
        return weights

    def _record(self, weights: torch.Tensor) -> None:
        w = weights.detach().double().cpu()
        self._weight_sum = w if self._weight_sum is None else self._weight_sum + w
        self._steps += 1
        self._reduced_steps += int(bool((w < 1 - 1e-6).any()))

    def epoch_summary(self) -> dict[str, object]:
        """{"steps", "mean_weights" (one per length), "reduced_fraction" (steps where any weight < 1)}.
        With no step recorded the means are empty and the fraction is NaN."""
        if self._steps == 0 or self._weight_sum is None:  # both or neither: set together by _record
            return {"steps": 0, "mean_weights": [], "reduced_fraction": float("nan")}
        return {
            "steps": self._steps,
            "mean_weights": (self._weight_sum / self._steps).tolist(),
            "reduced_fraction": self._reduced_steps / self._steps,
        }

    def reset(self) -> None:
        self._weight_sum = None
        self._steps = 0
        self._reduced_steps = 0
