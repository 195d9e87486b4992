"""Similarity-preserving loss and the long-short cascade, against a numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nhl.distill import cascade_distillation, cascade_terms, similarity_preserving_loss


def reference_sp(s: np.ndarray, t: np.ndarray) -> float:
    """||rownorm(t t^T) - rownorm(s s^T)||_F^2 / B^2."""
    gs, gt = s @ s.T, t @ t.T
    gs = gs / np.linalg.norm(gs, axis=1, keepdims=True)
    gt = gt / np.linalg.norm(gt, axis=1, keepdims=True)
    return float(((gt - gs) ** 2).sum()) / s.shape[0] ** 2


def test_sp_matches_numpy_with_different_widths():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 7))
    value = similarity_preserving_loss(torch.from_numpy(s), torch.from_numpy(t))
    assert value.dim() == 0 and value.item() == pytest.approx(reference_sp(s, t), rel=1e-10)


def test_sp_is_zero_for_rescaled_copies_and_checks_batch_sizes():
    s = torch.randn(4, 6, dtype=torch.float64)
    assert similarity_preserving_loss(s, 3 * s).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="same B"):
        similarity_preserving_loss(torch.randn(4, 2), torch.randn(5, 2))


def test_cascade_sums_adjacent_pairs_and_teachers_get_no_gradient():
    torch.manual_seed(0)
    full = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    outputs = [full[:, :2], full[:, :4], full[:, :8]]
    value = cascade_distillation(outputs)
    u = full.detach().numpy()
    expected = reference_sp(u[:, :2], u[:, :4]) + reference_sp(u[:, :4], u[:, :8])
    assert value.item() == pytest.approx(expected, rel=1e-10)
    value.backward()
    # columns 4..7 belong only to the longest code, which is only ever a (detached) teacher
    assert torch.count_nonzero(full.grad[:, 4:]) == 0 and torch.count_nonzero(full.grad[:, :4]) > 0


def test_teacher_tensor_receives_no_gradient():
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    cascade_distillation([student, teacher]).backward()
    assert teacher.grad is None and student.grad is not None


def test_terms_per_length_and_the_one_length_case():
    rng = np.random.default_rng(1)
    outs = [torch.from_numpy(rng.normal(size=(3, k))) for k in (2, 3, 5)]
    terms = cascade_terms(outs)
    assert [t.item() for t in terms] == pytest.approx(
        [reference_sp(outs[0].numpy(), outs[1].numpy()), reference_sp(outs[1].numpy(), outs[2].numpy()), 0.0]
    )
    single = cascade_distillation([torch.randn(3, 4)])
    assert single.dim() == 0 and single.item() == 0.0
    with pytest.raises(ValueError, match="at least one"):
        cascade_distillation([])
