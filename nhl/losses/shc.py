"""SHC: Semantic Hash Centers: CSQ-style training toward centres placed by class similarity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nhl.losses.base import register_loss
from nhl.losses.csq import CSQLoss
from nhl.losses.semantic_centers import resolve_class_similarity, semantic_centers

# Stage (b) keeps dense [C, C] matrices (the similarity, and one float64 distance matrix per
# length: 6 x 8 C^2 bytes, 4.8 GB at 10,000 classes) and each flip sweep costs C^2 x bits x lengths.
# Beyond this many classes SHC is refused with a one-line error; CSQ with `train.centers: prefix`
# (linear-time centres, `nhl.losses.centers_scalable`) is the many-class choice.
MAX_CLASSES = 2000


def _check_class_count(num_classes: int) -> None:
    if num_classes > MAX_CLASSES:
        raise ValueError(
            f"losses.shc: semantic centres need dense [C, C] class matrices; {num_classes:,} classes "
            f"is beyond the supported {MAX_CLASSES:,} (use loss csq with train.centers: prefix)"
        )


@register_loss("shc")
class SHCLoss(CSQLoss):
    """CSQ's loss toward semantic hash centres: related classes get closer centres.

    The three stages (see `nhl.losses.semantic_centers`): (a) a `[C, C]` class similarity (from a
    classifier trained on the training split, e.g. `class_similarity_from_features`, or from a
    label hierarchy); (b) centres whose Hamming distances follow it, no pair closer than
    ceil(min_distance_fraction * bits); (c) this loss, identical to CSQ's:
    BCE((tanh(u) + 1) / 2, (c + 1) / 2) + quant_weight * mean((|tanh u| - 1)^2).

    Stage (a) needs data, so the loss takes its result as the `class_similarity` hyper-parameter:
    a matrix (array, tensor or nested list, values in [0, 1], symmetric) or the name/path of a
    hierarchy (its similarity 1 - height(lcs)/height(root)). Without one, every pair of classes
    is equally dissimilar and stage (b) only spreads the centres (targets at bits/2).

    Nested training: `SHCLoss.prefix_centers(C, lengths, ...)` optimises one table for all lengths
    jointly (minimum distance at every prefix length), so the k-bit centres are the prefixes of the
    longest ones; a given `centers` tensor is used as-is.

    Hyper-parameters: quant_weight (lambda, 1e-4), class_similarity (None), min_distance_fraction
    (0.25: CSQ's bits/4 separation), centers (`[C, bits]` +-1, used as-is), seed (initial centres and
    flip order). Uses: per-class centres (buffer); no memory bank; not pairwise. Limit: at most
    `MAX_CLASSES` (2,000) classes when it builds its own centres (see `MAX_CLASSES`).
    """

    def __init__(
        self,
        bits: int,
        num_classes: int,
        num_train: int,
        quant_weight: float = 1e-4,
        class_similarity: Any = None,
        min_distance_fraction: float = 0.25,
        centers: torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        if centers is None:
            _check_class_count(num_classes)
        if num_classes <= MAX_CLASSES:  # checked even when centres are given (as before)
            similarity = resolve_class_similarity(class_similarity, num_classes)
        if centers is None:
            centers = semantic_centers(similarity, [bits], seed=seed, min_distance_fraction=min_distance_fraction)
        super().__init__(bits, num_classes, num_train, quant_weight=quant_weight, centers=centers, seed=seed)
        self.min_distance_fraction = float(min_distance_fraction)

    @classmethod
    def prefix_centers(
        cls,
        num_classes: int,
        lengths: Sequence[int],
        seed: int = 0,
        class_similarity: Any = None,
        min_distance_fraction: float = 0.25,
        **_: Any,
    ) -> torch.Tensor:
        """`[C, max(lengths)]` centres optimised jointly over `lengths` (prefix-consistent)."""
        _check_class_count(num_classes)
        similarity = resolve_class_similarity(class_similarity, num_classes)
        return semantic_centers(similarity, lengths, seed=seed, min_distance_fraction=min_distance_fraction)
