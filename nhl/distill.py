"""Long-short cascade self-distillation ("D" in NHL): each code learns from the next longer one.

Similarity-preserving (SP) distillation (Tung & Mori, ICCV 2019) compares the batch's pairwise
similarity structure rather than the codes themselves, so codes of different lengths can be
compared. It acts on the real-valued head outputs, before sign or tanh.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def similarity_preserving_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """SP(s, t) = ||norm(t t^T) - norm(s s^T)||_F^2 / B^2, norm = row-wise L2 normalisation.

    Widths may differ; batch sizes must match. The caller detaches the teacher.
    """
    if student.dim() < 2 or teacher.dim() < 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"student/teacher: expected [B, ...] with the same B, got {list(student.shape)} and {list(teacher.shape)}"
        )
    s = student.reshape(student.shape[0], -1)
    t = teacher.reshape(teacher.shape[0], -1).to(s.dtype)
    g_s = F.normalize(s @ s.T, p=2, dim=1)
    g_t = F.normalize(t @ t.T, p=2, dim=1)
    return (g_t - g_s).pow(2).sum() / s.shape[0] ** 2


def cascade_terms(outputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per-length distillation terms: SP(u_i, stopgrad(u_{i+1})) for i < n, and 0 for the longest."""
    if not outputs:
        raise ValueError("outputs: expected at least one code length")
    terms = [similarity_preserving_loss(outputs[i], outputs[i + 1].detach()) for i in range(len(outputs) - 1)]
    return terms + [outputs[-1].new_zeros(())]


def cascade_distillation(outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """L_D = sum over i < n of SP(u_i, stopgrad(u_{i+1})); a zero tensor when there is one length."""
    return torch.stack(cascade_terms(outputs)).sum()
