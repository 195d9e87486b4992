"""Compact label forms (class ids, CSR) give the same retrieval metrics as dense multi-hot labels.

The reference is a brute-force per-query loop over dense labels written here; the compact forms
must reproduce it (and the dense path) for mAP, P@N, PR curves and mAHP.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from nhl import labels as L
from nhl import metrics
from nhl.hierarchy import load_hierarchy, mean_average_hierarchical_precision


def _codes(rng, n, bits):
    return np.where(rng.random((n, bits)) < 0.5, 1, -1).astype(np.int8)


def _ref_stats(qc, ql, dc, dl):
    """Per query: the stable ranking's relevance flags, by brute force over dense labels."""
    out = []
    for q in range(len(qc)):
        dist = [(int((qc[q] != dc[i]).sum()), i) for i in range(len(dc))]
        order = [i for _, i in sorted(dist)]
        flags = [bool((ql[q] * dl[i]).sum() > 0) for i in order]
        out.append((flags, [d for d, _ in sorted(dist)]))
    return out


def _ref_map_p(qc, ql, dc, dl, n):
    aps, ps = [], []
    for flags, _ in _ref_stats(qc, ql, dc, dl):
        hits, total = 0, 0.0
        for rank, rel in enumerate(flags, start=1):
            if rel:
                hits += 1
                total += hits / rank
        aps.append(total / hits if hits else 0.0)
        ps.append(sum(flags[:n]) / n)
    return float(np.mean(aps)), float(np.mean(ps))


def _data(seed, multi, n_q=9, n_db=70, bits=12, classes=7):
    rng = np.random.default_rng(seed)
    qc, dc = _codes(rng, n_q, bits), _codes(rng, n_db, bits)
    if multi:
        ql = (rng.random((n_q, classes)) < 0.3).astype(np.float32)
        dl = (rng.random((n_db, classes)) < 0.3).astype(np.float32)
        ql[0] = 0  # a query with no label scores 0
    else:
        ql = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, n_q)]
        dl = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, n_db)]
    return qc, ql, dc, dl


def _compact_pairs(ql, dl, multi):
    csr = (sp.csr_matrix(ql), sp.csr_matrix(dl))
    if multi:
        return {"csr": csr, "csr+dense": (csr[0], dl)}
    ids = (ql.argmax(1), dl.argmax(1))
    return {"ids": ids, "ids-torch": tuple(torch.as_tensor(x) for x in ids), "csr": csr, "ids+csr": (ids[0], csr[1])}


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("multi", [False, True])
def test_compact_labels_match_brute_force_and_dense(multi, backend):
    qc, ql, dc, dl = _data(3 + multi, multi)
    ref_map, ref_p = _ref_map_p(qc, ql, dc, dl, 10)
    dense_pr = metrics.precision_recall_curve(qc, ql, dc, dl, backend=backend)
    for name, (q, d) in _compact_pairs(ql, dl, multi).items():
        got_map = metrics.mean_average_precision(qc, q, dc, d, backend=backend)
        assert got_map == pytest.approx(ref_map, abs=1e-12), name
        assert metrics.precision_at_k(qc, q, dc, d, k=10, backend=backend) == pytest.approx(ref_p, abs=1e-12), name
        for ties in ("stable", "expected"):
            assert metrics.mean_average_precision(qc, q, dc, d, topk=20, ties=ties, backend=backend) == pytest.approx(
                metrics.mean_average_precision(qc, ql, dc, dl, topk=20, ties=ties, backend=backend), abs=1e-12
            ), name
        pr = metrics.precision_recall_curve(qc, q, dc, d, backend=backend)
        for key in ("precision", "recall"):
            np.testing.assert_allclose(pr[key], dense_pr[key], atol=1e-12, err_msg=name)
        nested = metrics.evaluate_nested(qc, q, dc, d, [4, 12], n=10, backend=backend)
        assert nested[12]["map"] == pytest.approx(ref_map, abs=1e-12), name
        assert nested[12]["p_at_100"] == pytest.approx(ref_p, abs=1e-12), name


@pytest.mark.parametrize("multi", [False, True])
def test_compact_labels_give_the_same_mahp(multi):
    hierarchy = load_hierarchy("digits")
    qc, ql, dc, dl = _data(5, multi, classes=10)
    dense = mean_average_hierarchical_precision(qc, ql, dc, dl, hierarchy, topk=15)
    for name, (q, d) in _compact_pairs(ql, dl, multi).items():
        got = mean_average_hierarchical_precision(qc, q, dc, d, hierarchy, topk=15)
        assert got == pytest.approx(dense, abs=1e-12), name


def test_conversions_round_trip_and_pick_the_compact_form():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5, 12)
    dense = np.eye(6, dtype=np.float32)[ids]
    assert L.label_form(L.compact(dense)) == "ids"
    np.testing.assert_array_equal(L.to_ids(dense), ids)
    np.testing.assert_array_equal(L.to_dense(ids, 6), dense)
    multi = dense.copy()
    multi[0, 5] = 1
    assert L.to_ids(multi) is None and L.label_form(L.compact(multi)) == "csr"
    np.testing.assert_array_equal(L.to_dense(L.compact(multi)), multi)


def test_bad_compact_labels_are_one_line_errors():
    qc = np.ones((2, 4))
    with pytest.raises(ValueError, match="query_labels: class ids must be non-negative"):
        metrics.mean_average_precision(qc, np.array([-1, 0]), qc, np.array([0, 1]))
    with pytest.raises(ValueError, match="db_labels: labels must be multi-hot"):
        metrics.mean_average_precision(qc, np.array([0, 1]), qc, sp.csr_matrix(np.array([[2.0], [0]])))
    with pytest.raises(ValueError, match="number of classes differs"):
        metrics.mean_average_precision(qc, sp.csr_matrix(np.eye(2)), qc, np.eye(3)[:2])
