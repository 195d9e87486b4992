"""Label hierarchies (shipped files, semantic distances, loading errors) and mAHP@k against a
brute-force per-query loop."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from nhl.hierarchy import (
    Hierarchy,
    flat_hierarchy,
    hierarchical_precision_curves,
    load_hierarchy,
    mean_average_hierarchical_precision,
    resolve_hierarchy,
    shipped_hierarchies,
)

# CIFAR-100's meta file: fine_label_names (index order) and the fine -> coarse index of its coarse labels.
CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
CIFAR100_COARSE_OF_FINE = [
    4,
    1,
    14,
    8,
    0,
    6,
    7,
    7,
    18,
    3,
    3,
    14,
    9,
    18,
    7,
    11,
    3,
    9,
    7,
    11,
    6,
    11,
    5,
    10,
    7,
    6,
    13,
    15,
    3,
    15,
    0,
    11,
    1,
    10,
    12,
    14,
    16,
    9,
    11,
    5,
    5,
    19,
    8,
    8,
    15,
    13,
    14,
    17,
    18,
    10,
    16,
    4,
    17,
    4,
    2,
    0,
    17,
    4,
    18,
    17,
    10,
    3,
    2,
    12,
    12,
    16,
    12,
    1,
    9,
    19,
    2,
    10,
    0,
    1,
    16,
    12,
    9,
    13,
    15,
    13,
    16,
    19,
    2,
    4,
    6,
    19,
    5,
    5,
    8,
    19,
    18,
    1,
    2,
    15,
    6,
    0,
    17,
    8,
    14,
    13,
]


def two_level_distance(groups) -> np.ndarray:
    """0 same class, 0.5 same group, 1 otherwise (a tree of height 2), by loops."""
    c = len(groups)
    return np.array([[0.0 if a == b else 0.5 if groups[a] == groups[b] else 1.0 for b in range(c)] for a in range(c)])


def test_shipped_hierarchies_are_package_data():
    assert {"cifar10", "cifar100", "digits"} <= set(shipped_hierarchies())
    for name in ("cifar10", "cifar100", "digits"):
        assert resources.files("nhl").joinpath("hierarchies", f"{name}.yaml").is_file()
        assert load_hierarchy(name).description


def test_cifar100_is_the_standard_fine_to_coarse_mapping():
    h = load_hierarchy("cifar100")
    assert list(h.classes) == CIFAR100_FINE and h.num_classes == 100
    assert all(len(chain) == 1 for chain in h.ancestors)
    # the superclass names, sorted, are the coarse labels' index order
    coarse_names = sorted({chain[0] for chain in h.ancestors})
    assert len(coarse_names) == 20
    assert [coarse_names.index(chain[0]) for chain in h.ancestors] == CIFAR100_COARSE_OF_FINE
    assert np.array_equal(h.distance(), two_level_distance(CIFAR100_COARSE_OF_FINE))


def test_cifar10_and_digits_hierarchies():
    h = load_hierarchy("cifar10")
    assert h.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    vehicle = [1, 1, 0, 0, 0, 0, 0, 0, 1, 1]
    assert np.array_equal(h.distance(), two_level_distance(vehicle))
    d = load_hierarchy("digits")
    assert d.classes == tuple(str(i) for i in range(10))
    groups = {
        "0": "loops",
        "6": "loops",
        "8": "loops",
        "9": "loops",
        "1": "strokes",
        "4": "strokes",
        "7": "strokes",
        "2": "curves",
        "3": "curves",
        "5": "curves",
    }
    assert np.array_equal(d.distance(), two_level_distance([groups[str(i)] for i in range(10)]))
    assert np.allclose(d.similarity(), 1 - d.distance())


def test_unbalanced_tree_uses_lcs_height_over_root_height(tmp_path):
    path = tmp_path / "h.yaml"
    path.write_text("name: toy\nclasses:\n  a: [x, y]\n  b: [x, y]\n  c: [y]\n  d: []\n  e:\n")
    h = load_hierarchy(path)
    # heights: leaves 0, x 1, y 2, root 3
    expected = np.array(
        [[0, 1 / 3, 2 / 3, 1, 1], [1 / 3, 0, 2 / 3, 1, 1], [2 / 3, 2 / 3, 0, 1, 1], [1, 1, 1, 0, 1], [1, 1, 1, 1, 0]]
    )
    assert h.classes == ("a", "b", "c", "d", "e") and np.allclose(h.distance(), expected)
    assert np.array_equal(flat_hierarchy(3).distance(), 1 - np.eye(3))


def test_bad_hierarchies_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file.*shipped: cifar10"):
        load_hierarchy(tmp_path / "missing.yaml")
    cases = {
        "two_parents": "classes:\n  a: [x, y]\n  b: [x, z]\n",
        "class_inner": "classes:\n  a: [b]\n  b: []\n",
        "no_classes": "name: x\n",
        "bad_chain": "classes:\n  a: {p: 1}\n",
        "unknown_key": "classes:\n  a: []\nparents: {}\n",
        "bad_yaml": "classes: [a\n",
    }
    messages = {
        "two_parents": "two parents",
        "class_inner": "classes must be leaves",
        "no_classes": "'classes'",
        "bad_chain": "list of ancestor names",
        "unknown_key": "unknown key",
        "bad_yaml": "not valid YAML",
    }
    for name, text in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        with pytest.raises(ValueError, match=messages[name]):
            load_hierarchy(path)
    with pytest.raises(ValueError, match="has 10 classes, expected 7"):
        resolve_hierarchy("digits", 7)
    with pytest.raises(ValueError, match="unique"):
        Hierarchy("dup", ("a", "a"), ((), ()))
    assert resolve_hierarchy(None, 4).name == "flat"


# ---------------------------------------------------------------- mAHP


def brute_force_ahp(qc, ql, dc, dl, class_sim, k, trapezoid=False):
    """Per query: rank by (Hamming distance, database position); hP@i by explicit sums; AHP by the
    rectangle (or trapezoid) rule over i = 1..K."""
    scores = []
    n = len(dc)
    k = n if k is None else min(k, n)
    for q in range(len(qc)):

        def sim(j, q=q):
            pairs = [class_sim[a, b] for a in np.flatnonzero(ql[q]) for b in np.flatnonzero(dl[j])]
            return max(pairs) if pairs else 0.0

        dist = [int(sum(1 for x, y in zip(qc[q], dc[j], strict=True) if x != y)) for j in range(n)]
        order = sorted(range(n), key=lambda j: (dist[j], j))
        sims = [sim(j) for j in range(n)]
        ideal = sorted(sims, reverse=True)
        hp = []
        for i in range(1, k + 1):
            best = sum(ideal[:i])
            hp.append(sum(sims[j] for j in order[:i]) / best if best > 0 else 0.0)
        area = sum(hp) - ((hp[0] + hp[-1]) / 2 if trapezoid else 0.0)
        scores.append(area / k)
    return float(np.mean(scores))


@pytest.fixture
def six_classes(tmp_path):
    path = tmp_path / "six.yaml"
    path.write_text("name: six\nclasses:\n  a: [g1]\n  b: [g1]\n  c: [g1]\n  d: [g2]\n  e: [g2]\n  f: [g2]\n")
    return load_hierarchy(path)


def random_retrieval(seed, n_query=7, n_db=40, bits=6, classes=6, multi=False):
    rng = np.random.default_rng(seed)
    qc = np.where(rng.random((n_query, bits)) < 0.5, 1, -1)
    dc = np.where(rng.random((n_db, bits)) < 0.5, 1, -1)
    if multi:
        ql = (rng.random((n_query, classes)) < 0.3).astype(int)
        dl = (rng.random((n_db, classes)) < 0.3).astype(int)
    else:
        ql = np.eye(classes, dtype=int)[rng.integers(classes, size=n_query)]
        dl = np.eye(classes, dtype=int)[rng.integers(classes, size=n_db)]
    return qc, ql, dc, dl


@pytest.mark.parametrize("topk", [1, 5, 40, 100, None])
@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("trapezoid", [False, True])
def test_mahp_matches_brute_force(six_classes, topk, multi, trapezoid):
    qc, ql, dc, dl = random_retrieval(seed=topk or 0, multi=multi)  # 6 bits, 40 items: many ties
    sim = 1 - two_level_distance([0, 0, 0, 1, 1, 1])
    expected = brute_force_ahp(qc, ql, dc, dl, sim, topk, trapezoid)
    got = mean_average_hierarchical_precision(qc, ql, dc, dl, six_classes, topk=topk, trapezoid=trapezoid)
    assert got == pytest.approx(expected, abs=1e-12)
    # a similarity matrix gives the same as the hierarchy it comes from
    assert mean_average_hierarchical_precision(qc, ql, dc, dl, sim, topk=topk, trapezoid=trapezoid) == pytest.approx(
        expected, abs=1e-12
    )


def test_mahp_ideal_ranking_queries_without_similar_items_and_torch_inputs(six_classes):
    # database: two items per class; codes equal to the class's code, so an exact ranking is ideal
    codes = np.array([[1, 1, 1, 1], [1, 1, 1, -1], [1, 1, -1, -1], [-1, -1, 1, 1], [-1, -1, 1, -1], [-1, -1, -1, -1]])
    dl = np.eye(6, dtype=int)[[0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]]
    dc = codes[[0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]]
    ql = np.eye(6, dtype=int)[[0, 4]]
    qc = codes[[0, 4]]
    assert mean_average_hierarchical_precision(qc, ql, dc, dl, six_classes, topk=6) == pytest.approx(1.0)
    assert mean_average_hierarchical_precision(
        torch.tensor(qc), torch.tensor(ql), torch.tensor(dc), torch.tensor(dl), six_classes, topk=6
    ) == pytest.approx(1.0)
    # a query with no label has similarity 0 to everything: it scores 0 and still counts
    ql2 = np.vstack([ql, np.zeros((1, 6), dtype=int)])
    qc2 = np.vstack([qc, codes[:1]])
    assert mean_average_hierarchical_precision(qc2, ql2, dc, dl, six_classes, topk=6) == pytest.approx(2 / 3)
    curves = hierarchical_precision_curves(qc2, ql2, dc, dl, six_classes, topk=6)
    assert curves.shape == (3, 6) and np.all(curves[2] == 0) and np.allclose(curves[:2], 1.0)


def test_mahp_rejects_bad_inputs(six_classes):
    qc, ql, dc, dl = random_retrieval(seed=1)
    with pytest.raises(ValueError, match="topk"):
        mean_average_hierarchical_precision(qc, ql, dc, dl, six_classes, topk=0)
    with pytest.raises(ValueError, match="has 6 classes, expected 10"):
        mean_average_hierarchical_precision(
            qc, np.eye(10, dtype=int)[:7], dc, np.eye(10, dtype=int)[[0] * 40], six_classes
        )
    with pytest.raises(ValueError, match="similarity matrix with values"):
        mean_average_hierarchical_precision(qc, ql, dc, dl, np.full((6, 6), 2.0))
    with pytest.raises(ValueError, match="codes"):
        mean_average_hierarchical_precision(qc * 2, ql, dc, dl, six_classes)


def _imports_of(module_file: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module_file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_hierarchy_and_metrics_do_not_import_each_other():
    # the dependency runs one way: nhl.metrics -> nhl.hierarchy -> nhl.retrieval_inputs
    import nhl.hierarchy
    import nhl.metrics
    import nhl.retrieval_inputs

    assert "nhl.metrics" not in _imports_of(Path(nhl.hierarchy.__file__))
    # the shared check imports only the label forms (layer 1), never a metric module
    assert {m for m in _imports_of(Path(nhl.retrieval_inputs.__file__)) if m.startswith("nhl")} <= {
        "nhl.labels",
        "nhl.labels.check_labels",
    }
    probe = "import sys, nhl.hierarchy; print(sorted(m for m in sys.modules if m.startswith('nhl')))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert "nhl.hierarchy" in loaded and "nhl.metrics" not in loaded
    # the hierarchical metric stays importable with the others
    assert nhl.metrics.mean_average_hierarchical_precision is mean_average_hierarchical_precision
