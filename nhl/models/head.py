"""The Nested Hash Layer: one linear layer whose k-bit output is a prefix of the longest output."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn


def check_lengths(bits: list[int] | tuple[int, ...], max_bits: int | None = None) -> list[int]:
    """Validate code lengths: non-empty, positive integers, strictly increasing, within `max_bits`."""
    bits = list(bits)
    if not bits:
        raise ValueError("lengths: expected at least one code length, got an empty list")
    if any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in bits):
        raise ValueError(f"lengths: expected positive integers, got {bits}")
    if any(a >= b for a, b in pairwise(bits)):
        raise ValueError(f"lengths: expected strictly increasing code lengths, got {bits}")
    if max_bits is not None and bits[-1] > max_bits:
        raise ValueError(f"lengths: longest length {bits[-1]} exceeds the head size {max_bits}")
    return bits


class NestedHashHead(nn.Module):
    """Map features `[B, d]` to one raw code per length; the i-th is the first `bits[i]` units.

    Every length shares all parameters: there is a single `d -> max(bits)` linear layer and a
    shorter code is the prefix of the longest. With one length it is an ordinary hash layer,
    which is how the fixed-length baselines are built. Initialisation follows the method spec:
    weight ~ N(0, 0.01^2), bias 0. No squashing here: each loss applies its own.
    """

    def __init__(self, in_features: int, bits: list[int]) -> None:
        super().__init__()
        self.bits = check_lengths(bits)
        self.linear = nn.Linear(in_features, self.bits[-1])
        nn.init.normal_(self.linear.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.linear.bias)

    @property
    def max_bits(self) -> int:
        return self.bits[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        full = self.linear(x)
        return [full[:, :k] for k in self.bits]
