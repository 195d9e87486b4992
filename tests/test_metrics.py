"""nhl.metrics against brute-force per-query loops written here (Python's stable `sorted`)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from nhl import metrics

BACKENDS = ["numba", "torch"]


# --------------------------------------------------------------------------- references


def _dist(q: np.ndarray, x: np.ndarray) -> int:
    return sum(int(a != b) for a, b in zip(q, x, strict=True))


def _relevant(a: np.ndarray, b: np.ndarray) -> bool:
    return any(u > 0 and v > 0 for u, v in zip(a, b, strict=True))


def _ap_of_order(flags: list[bool], k: int) -> float:
    hits, total = 0, 0.0
    for rank, rel in enumerate(flags[:k], start=1):
        if rel:
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


def ref_map(qc, ql, dc, dl, topk=None) -> float:
    k = len(dc) if topk is None else min(topk, len(dc))
    aps = []
    for q in range(len(qc)):
        order = sorted(range(len(dc)), key=lambda i: _dist(qc[q], dc[i]))  # stable
        aps.append(_ap_of_order([_relevant(ql[q], dl[i]) for i in order], k))
    return float(np.mean(aps))


def _tie_orders(qcode, dc):
    """Every ranking obtained by permuting each equal-distance group."""
    dists = [_dist(qcode, x) for x in dc]
    groups = [[i for i in range(len(dc)) if dists[i] == d] for d in sorted(set(dists))]
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield [i for perm in perms for i in perm]


def ref_expected(qc, ql, dc, dl, metric) -> float:
    """Mean over queries of the average of `metric(flags)` over all tie-group permutations."""
    values = []
    for q in range(len(qc)):
        per_order = [metric([_relevant(ql[q], dl[i]) for i in order]) for order in _tie_orders(qc[q], dc)]
        values.append(np.mean(per_order))
    return float(np.mean(values))


def ref_precision_at_k(qc, ql, dc, dl, k) -> float:
    k = min(k, len(dc))
    out = []
    for q in range(len(qc)):
        order = sorted(range(len(dc)), key=lambda i: _dist(qc[q], dc[i]))
        out.append(sum(_relevant(ql[q], dl[i]) for i in order[:k]) / k)
    return float(np.mean(out))


def ref_radius_counts(qc, ql, dc, dl, r):
    """(retrieved, relevant retrieved) within radius r, per query."""
    rows = []
    for q in range(len(qc)):
        inside = [i for i in range(len(dc)) if _dist(qc[q], dc[i]) <= r]
        rows.append((len(inside), sum(_relevant(ql[q], dl[i]) for i in inside)))
    return rows


def _random_case(seed: int, nq: int, nd: int, bits: int, classes: int, multi: bool):
    rng = np.random.default_rng(seed)
    qc = rng.choice([-1.0, 1.0], size=(nq, bits))
    dc = rng.choice([-1.0, 1.0], size=(nd, bits))
    if multi:  # 0-3 labels per row: some queries have nothing relevant
        ql = (rng.random((nq, classes)) < 0.25).astype(np.float32)
        dl = (rng.random((nd, classes)) < 0.25).astype(np.float32)
    else:
        ql = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, nq)]
        dl = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, nd)]
    return qc, ql, dc, dl


# --------------------------------------------------------------------------- mAP, stable ties


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("topk", [1, 10, None])
def test_map_matches_stable_loop(backend, multi, topk):
    qc, ql, dc, dl = _random_case(1 + multi, nq=12, nd=60, bits=6, classes=4, multi=multi)
    got = metrics.mean_average_precision(qc, ql, dc, dl, topk=topk, backend=backend)
    assert got == pytest.approx(ref_map(qc, ql, dc, dl, topk), abs=1e-12)


@pytest.mark.parametrize("bits, classes", [(70, 3), (9, 70), (300, 5)])
def test_map_multiword_codes_and_labels(bits, classes):
    qc, ql, dc, dl = _random_case(3, nq=6, nd=40, bits=bits, classes=classes, multi=True)
    for topk in (5, None):
        got = metrics.mean_average_precision(qc, ql, dc, dl, topk=topk)
        assert got == pytest.approx(ref_map(qc, ql, dc, dl, topk), abs=1e-12)


def test_query_without_relevant_items_scores_zero_and_counts():
    qc, ql, dc, dl = _random_case(4, nq=5, nd=30, bits=5, classes=3, multi=False)
    ql_extra = np.hstack([ql, np.zeros((5, 1), np.float32)])
    dl_extra = np.hstack([dl, np.zeros((30, 1), np.float32)])
    ql_extra[0] = 0
    ql_extra[0, 3] = 1  # a class no database item has
    alone = metrics.mean_average_precision(qc[:1], ql_extra[:1], dc, dl_extra)
    assert alone == 0.0
    full = metrics.mean_average_precision(qc, ql_extra, dc, dl_extra)
    rest = metrics.mean_average_precision(qc[1:], ql_extra[1:], dc, dl_extra)
    assert full == pytest.approx(rest * 4 / 5, abs=1e-12)


def test_topk_larger_than_database_is_all():
    qc, ql, dc, dl = _random_case(5, nq=7, nd=20, bits=4, classes=3, multi=False)
    assert metrics.mean_average_precision(qc, ql, dc, dl, topk=1000) == metrics.mean_average_precision(
        qc, ql, dc, dl, topk=None
    )


def test_torch_and_numpy_inputs_agree():
    qc, ql, dc, dl = _random_case(6, nq=8, nd=50, bits=8, classes=4, multi=True)
    as_torch = [torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in (qc, ql, dc, dl)]
    expected = ref_map(qc, ql, dc, dl, 10)
    assert metrics.mean_average_precision(*as_torch, topk=10) == pytest.approx(expected, abs=1e-12)
    assert metrics.mean_average_precision(*as_torch, topk=10, backend="torch") == pytest.approx(expected, abs=1e-12)


def test_empty_database_scores_zero():
    qc, ql, _, _ = _random_case(7, nq=3, nd=1, bits=4, classes=2, multi=False)
    assert metrics.mean_average_precision(qc, ql, np.zeros((0, 4)), np.zeros((0, 2))) == 0.0


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: dict(a, query_codes=a["query_codes"][0]), "query_codes: expected a 2-D"),
        (lambda a: dict(a, db_codes=a["db_codes"] * 0.5), "db_codes: codes must contain only"),
        (lambda a: dict(a, db_codes=np.zeros_like(a["db_codes"])), "db_codes: codes must contain only"),
        (lambda a: dict(a, db_codes=a["db_codes"][:, :3]), "bits differ"),
        (lambda a: dict(a, query_labels=a["query_labels"] * 3), "query_labels: labels must be"),
        (lambda a: dict(a, db_labels=a["db_labels"][:, :1]), "number of classes differs"),
        (lambda a: dict(a, db_labels=a["db_labels"][:5]), "db_codes / db_labels"),
        (lambda a: dict(a, query_codes=a["query_codes"].tolist()), "numpy array or torch tensor"),
        (lambda a: dict(a, topk=0), "topk: expected a positive"),
        (lambda a: dict(a, ties="random"), "ties: 'random' unknown"),
        (lambda a: dict(a, backend="cuda"), "backend: 'cuda' unknown"),
    ],
)
def test_bad_input_raises_clear_value_error(change, match):
    qc, ql, dc, dl = _random_case(8, nq=3, nd=10, bits=4, classes=2, multi=False)
    args = dict(query_codes=qc, query_labels=ql, db_codes=dc, db_labels=dl)
    with pytest.raises(ValueError, match=match):
        metrics.mean_average_precision(**change(args))


# --------------------------------------------------------------------------- expected ties


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("topk", [1, 2, 3, 5, None])
def test_expected_ties_equal_mean_over_tie_permutations(backend, topk):
    # 2-bit codes over 7 items: every distance group is a large tie
    qc, ql, dc, dl = _random_case(9, nq=6, nd=7, bits=2, classes=2, multi=True)
    k = 7 if topk is None else topk
    expected = ref_expected(qc, ql, dc, dl, lambda flags: _ap_of_order(flags, k))
    got = metrics.mean_average_precision(qc, ql, dc, dl, topk=topk, ties="expected", backend=backend)
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("k", [1, 3, 4, 7])
def test_precision_at_k_expected_ties_equal_permutation_mean(k):
    qc, ql, dc, dl = _random_case(10, nq=5, nd=7, bits=2, classes=2, multi=False)
    expected = ref_expected(qc, ql, dc, dl, lambda flags: sum(flags[:k]) / k)
    got = metrics.precision_at_k(qc, ql, dc, dl, k=k, ties="expected")
    assert got == pytest.approx(expected, abs=1e-12)


def _plain_expected_ap(hist, hrel, topk):
    """Tie-aware AP from per-distance counts with plain sums (no harmonic shortcut)."""
    start, rb, total = 0, 0, 0.0
    for n, m in zip(hist, hrel, strict=True):
        if n == 0:
            continue
        if start >= topk:
            break
        length = min(n, topk - start)
        if length < n:  # partial group: exact hypergeometric average over x
            result = 0.0
            for x in range(min(m, length) + 1):
                p = math.comb(m, x) * math.comb(n - m, length - x) / math.comb(n, length)
                part = sum(
                    x / length * (rb + 1 + (j - 1) * (x - 1) / max(length - 1, 1)) / (start + j)
                    for j in range(1, length + 1)
                )
                result += p * ((total + part) / (rb + x) if rb + x else 0.0)
            return result
        total += sum(m / n * (rb + 1 + (j - 1) * (m - 1) / max(n - 1, 1)) / (start + j) for j in range(1, n + 1))
        rb += m
        start += n
    return total / rb if rb else 0.0


@pytest.mark.parametrize("topk", [150, 1000, None])
def test_expected_ties_with_large_groups(topk):
    # 4-bit codes over 1,500 items: tie groups of hundreds (the harmonic-number path)
    qc, ql, dc, dl = _random_case(11, nq=4, nd=1500, bits=4, classes=3, multi=False)
    k = len(dc) if topk is None else topk
    per_query = []
    for q in range(len(qc)):
        d = [_dist(qc[q], x) for x in dc]
        rel = [_relevant(ql[q], x) for x in dl]
        hist = [sum(1 for v in d if v == r) for r in range(5)]
        hrel = [sum(1 for v, f in zip(d, rel, strict=True) if v == r and f) for r in range(5)]
        per_query.append(_plain_expected_ap(hist, hrel, k))
    got = metrics.mean_average_precision(qc, ql, dc, dl, topk=topk, ties="expected")
    assert got == pytest.approx(np.mean(per_query), abs=1e-12)


def test_expected_equals_stable_without_ties():
    # distinct distances: every query sees codes 0..8 bits away exactly once
    bits = 8
    dc = np.ones((bits + 1, bits))
    for i in range(bits + 1):
        dc[i, :i] = -1
    rng = np.random.default_rng(12)
    dl = np.eye(2, dtype=np.float32)[rng.integers(0, 2, bits + 1)]
    qc, ql = np.ones((2, bits)), np.eye(2, dtype=np.float32)
    for topk in (3, None):
        assert metrics.mean_average_precision(qc, ql, dc, dl, topk=topk, ties="expected") == pytest.approx(
            metrics.mean_average_precision(qc, ql, dc, dl, topk=topk), abs=1e-12
        )


# --------------------------------------------------------------------------- P@N, radius, PR


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 10, 100])
def test_precision_at_k_matches_loop(backend, k):
    qc, ql, dc, dl = _random_case(13, nq=10, nd=50, bits=6, classes=3, multi=True)
    got = metrics.precision_at_k(qc, ql, dc, dl, k=k, backend=backend)
    assert got == pytest.approx(ref_precision_at_k(qc, ql, dc, dl, k), abs=1e-12)


@pytest.mark.parametrize("r", [0, 1, 2, 8])
def test_precision_at_radius_zero_for_empty_retrieval(r):
    qc, ql, dc, dl = _random_case(14, nq=15, nd=40, bits=8, classes=3, multi=False)
    rows = ref_radius_counts(qc, ql, dc, dl, r)
    expected = np.mean([rel / ret if ret else 0.0 for ret, rel in rows])
    assert metrics.precision_at_radius(qc, ql, dc, dl, r=r) == pytest.approx(expected, abs=1e-12)
    if r == 0:
        assert any(ret == 0 for ret, _ in rows)  # the convention is exercised


def test_precision_recall_curve_matches_loop():
    qc, ql, dc, dl = _random_case(15, nq=9, nd=40, bits=5, classes=3, multi=True)
    curve = metrics.precision_recall_curve(qc, ql, dc, dl)
    assert list(curve["radius"]) == list(range(6))
    for r in range(6):
        rows = ref_radius_counts(qc, ql, dc, dl, r)
        totals = [row[1] for row in ref_radius_counts(qc, ql, dc, dl, 5)]
        precision = np.mean([rel / ret if ret else 0.0 for ret, rel in rows])
        recall = np.mean([rel / tot if tot else 0.0 for (_, rel), tot in zip(rows, totals, strict=True)])
        assert curve["precision"][r] == pytest.approx(precision, abs=1e-12)
        assert curve["recall"][r] == pytest.approx(recall, abs=1e-12)


# --------------------------------------------------------------------------- nested


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluate_nested_uses_prefixes(backend):
    qc, ql, dc, dl = _random_case(16, nq=8, nd=120, bits=70, classes=4, multi=False)
    lengths = [3, 8, 64, 70]
    result = metrics.evaluate_nested(qc, ql, dc, dl, lengths, topk=50, backend=backend)
    assert list(result) == lengths
    for k in lengths:
        assert set(result[k]) == {"map", "p_at_100", "p_at_r2"}
        q, d = qc[:, :k], dc[:, :k]
        rows = ref_radius_counts(q, ql, d, dl, 2)
        assert result[k]["map"] == pytest.approx(ref_map(q, ql, d, dl, 50), abs=1e-12)
        assert result[k]["p_at_100"] == pytest.approx(ref_precision_at_k(q, ql, d, dl, 100), abs=1e-12)
        assert result[k]["p_at_r2"] == pytest.approx(
            np.mean([rel / ret if ret else 0.0 for ret, rel in rows]), abs=1e-12
        )


def test_evaluate_nested_rejects_bad_lengths():
    qc, ql, dc, dl = _random_case(17, nq=2, nd=5, bits=8, classes=2, multi=False)
    for lengths in ([], [0], [9]):
        with pytest.raises(ValueError, match="lengths"):
            metrics.evaluate_nested(qc, ql, dc, dl, lengths)


def test_hamming_distance_helper():
    qc, _, dc, _ = _random_case(18, nq=3, nd=6, bits=7, classes=2, multi=False)
    expected = [[_dist(q, x) for x in dc] for q in qc]
    assert metrics.hamming_distance(qc, dc).tolist() == expected
