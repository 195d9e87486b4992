"""Label hierarchies: semantic distances between classes, and hierarchical retrieval precision.

A hierarchy is a tree whose leaves are the dataset's classes, in label-index order. It is read
from a small YAML file (shipped ones live in `nhl/hierarchies/`: `cifar10`, `cifar100`, `digits`):

    name: cifar10
    description: ...
    classes:                # in label-index order: class -> its ancestors, nearest first
      airplane: [vehicle]   # (the root is implicit; a class with [] hangs off the root)
      bird: [animal]

Semantic distance (Barz & Denzler, "Hierarchy-based image embeddings for semantic image
retrieval", WACV 2019; after Deng, Berg & Fei-Fei, CVPR 2011): d(a, b) = height(lcs(a, b)) /
height(root), where lcs is the lowest common ancestor and a node's height is the length of the
longest path from it down to a leaf. d is 0 for the same class and 1 when only the root is
shared; similarity = 1 - d. Items with several labels take the closest pair of their labels.

Hierarchical precision at k (Deng et al. 2011): hP@k = sum_{i<=k} sim(q, x_i) / (the largest such
sum any ordering of the database could reach: the k largest similarities), and the average
hierarchical precision AHP@K = (1/K) sum_{k=1..K} hP@k, the normalised area under the hP curve
(1 for an ideal ranking). `trapezoid=True` uses instead the trapezoid area of Barz & Denzler's
released evaluation code, (sum_k hP@k - (hP@1 + hP@K)/2) / K (an ideal ranking scores (K-1)/K).
mAHP@K is the mean over queries; a query whose database holds no item with similarity > 0 scores
0 and still counts (as in mAP). Ranking by Hamming distance, ties broken by database order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from nhl.retrieval_inputs import check_inputs

ROOT = "<root>"
_PACKAGE_DIR = "hierarchies"


@dataclass(frozen=True)
class Hierarchy:
    """A tree over `classes` (label-index order); `ancestors[i]` is class i's parent chain,
    nearest first, without the root."""

    name: str
    classes: tuple[str, ...]
    ancestors: tuple[tuple[str, ...], ...]
    description: str = ""

    def __post_init__(self) -> None:
        where = f"hierarchy {self.name!r}"
        if not self.classes:
            raise ValueError(f"{where}: expected at least one class")
        if len(set(self.classes)) != len(self.classes):
            dup = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise ValueError(f"{where}: class names must be unique, repeated: {dup}")
        if len(self.ancestors) != len(self.classes):
            raise ValueError(f"{where}: expected one ancestor chain per class")
        classes, parent = set(self.classes), dict[str, str]()
        for cls, chain in zip(self.classes, self.ancestors, strict=True):
            path = (cls, *chain)
            if len(set(path)) != len(path) or ROOT in chain:
                raise ValueError(f"{where}: class {cls!r}: its ancestor chain repeats a node or names the root")
            for node, up in zip(path[1:], (*chain[1:], ROOT), strict=False):
                if node in classes:
                    raise ValueError(f"{where}: class {node!r} is also an ancestor of {cls!r}; classes must be leaves")
                if parent.setdefault(node, up) != up:
                    raise ValueError(
                        f"{where}: node {node!r} has two parents ({parent[node]!r} and {up!r}); expected a tree"
                    )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def heights(self) -> dict[str, int]:
        """Height of every node (leaves 0; the root's is the tree's height, at least 1)."""
        out: dict[str, int] = {}
        for cls, chain in zip(self.classes, self.ancestors, strict=True):
            for level, node in enumerate((cls, *chain, ROOT)):
                out[node] = max(out.get(node, 0), level)
        out[ROOT] = max(out[ROOT], 1)
        return out

    def distance(self) -> np.ndarray:
        """`[C, C]` semantic distances height(lcs) / height(root), in [0, 1]."""
        heights = self.heights()
        paths = [(cls, *chain, ROOT) for cls, chain in zip(self.classes, self.ancestors, strict=True)]
        c = self.num_classes
        out = np.zeros((c, c))
        for a in range(c):
            for b in range(a + 1, c):
                shared = set(paths[b])
                lcs = next(node for node in paths[a] if node in shared)
                out[a, b] = out[b, a] = heights[lcs] / heights[ROOT]
        return out

    def similarity(self) -> np.ndarray:
        """`[C, C]` semantic similarities 1 - distance (1 on the diagonal)."""
        return 1.0 - self.distance()


def flat_hierarchy(num_classes: int) -> Hierarchy:
    """Every class directly under the root: distance 1 between any two different classes."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
    return Hierarchy(
        "flat", tuple(str(i) for i in range(num_classes)), ((),) * num_classes, "all classes equally dissimilar"
    )


def shipped_hierarchies() -> list[str]:
    """Names of the hierarchy files shipped in `nhl/hierarchies/`."""
    folder = resources.files("nhl").joinpath(_PACKAGE_DIR)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def hierarchy_from_mapping(data: Any, where: str = "hierarchy") -> Hierarchy:
    """Build from the parsed YAML mapping (see the module docstring); one-line errors name `where`."""
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict) or not data["classes"]:
        raise ValueError(f"{where}: expected a mapping with a non-empty 'classes' mapping (class -> ancestors)")
    unknown = sorted(set(data) - {"name", "description", "classes"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected name, description, classes")
    classes, chains = [], []
    for cls, chain in data["classes"].items():
        if chain is None:
            chain = []
        elif isinstance(chain, (str, int)):
            chain = [chain]
        if not isinstance(chain, list) or not all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in chain):
            raise ValueError(f"{where}: class {cls!r}: expected a list of ancestor names, got {chain!r}")
        classes.append(str(cls))
        chains.append(tuple(str(n) for n in chain))
    return Hierarchy(
        str(data.get("name", where)), tuple(classes), tuple(chains), str(data.get("description", "")).strip()
    )


def load_hierarchy(source: Hierarchy | str | os.PathLike[str]) -> Hierarchy:
    """A `Hierarchy` as-is, the name of a shipped hierarchy (e.g. "cifar100"), or a YAML file path."""
    import yaml

    if isinstance(source, Hierarchy):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"hierarchy: expected a name, a path or a Hierarchy, got {type(source).__name__}")
    text_source = os.fspath(source)
    if isinstance(source, str) and source in shipped_hierarchies():
        text = resources.files("nhl").joinpath(_PACKAGE_DIR, f"{source}.yaml").read_text(encoding="utf-8")
        where = f"hierarchy {source!r}"
    else:
        path = Path(text_source)
        if not path.is_file():
            raise FileNotFoundError(
                f"hierarchy {text_source!r}: no such file, and not a shipped hierarchy "
                f"(shipped: {', '.join(shipped_hierarchies())})"
            )
        text, where = path.read_text(encoding="utf-8"), f"hierarchy file {path}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{where}: not valid YAML ({type(err).__name__})") from None
    return hierarchy_from_mapping(data, where)


def resolve_hierarchy(source: Hierarchy | str | os.PathLike[str] | None, num_classes: int) -> Hierarchy:
    """`load_hierarchy(source)` checked to have `num_classes` classes; None gives the flat hierarchy."""
    hierarchy = flat_hierarchy(num_classes) if source is None else load_hierarchy(source)
    if hierarchy.num_classes != num_classes:
        raise ValueError(
            f"hierarchy {hierarchy.name!r}: has {hierarchy.num_classes} classes, expected {num_classes} (the dataset's)"
        )
    return hierarchy


def class_similarity(source: Any, num_classes: int) -> np.ndarray:
    """`[C, C]` class similarity from a hierarchy (a `Hierarchy`, a shipped name or a YAML path: its
    1 - distance) or a given symmetric similarity matrix (array, tensor, nested list) in [0, 1]."""
    if isinstance(source, (Hierarchy, str, os.PathLike)):
        return resolve_hierarchy(source, num_classes).similarity()
    sim = np.asarray(source.detach().cpu().numpy() if hasattr(source, "detach") else source, dtype=np.float64)
    if sim.shape != (num_classes, num_classes):
        raise ValueError(
            f"class similarity: expected a hierarchy or a [{num_classes}, {num_classes}] "
            f"similarity matrix, got shape {sim.shape}"
        )
    if not np.all(np.isfinite(sim)) or sim.min() < 0 or sim.max() > 1 or not np.allclose(sim, sim.T):
        raise ValueError("class similarity: expected a symmetric similarity matrix with values in [0, 1]")
    return sim


def item_similarity(query_labels: np.ndarray, db_labels: np.ndarray, class_sim: np.ndarray) -> np.ndarray:
    """`[Q, N]`: the largest class similarity over the label pairs of each (query, item); 0 when either
    has no label. Similarities are non-negative, so a masked product gives the max."""
    q = query_labels.astype(bool)
    per_class = np.where(q[:, :, None], class_sim[None, :, :], 0.0).max(axis=1)  # [Q, C]: best label match
    db = db_labels.astype(bool)
    single = db.sum(axis=1) == 1
    if single.all():
        return per_class[:, np.argmax(db, axis=1)]
    out = np.zeros((q.shape[0], db.shape[0]))
    for b in range(db.shape[1]):
        rows = np.flatnonzero(db[:, b])
        if rows.size:
            out[:, rows] = np.maximum(out[:, rows], per_class[:, b : b + 1])
    return out


def hierarchical_precision_curves(
    query_codes: Any,
    query_labels: Any,
    db_codes: Any,
    db_labels: Any,
    hierarchy: Any,
    topk: int | None = 250,
    chunk: int = 64,
) -> np.ndarray:
    """`[Q, K]` hP@k for k = 1..K per query (K = min(topk, database size); None: the whole database).

    `hierarchy`: a `Hierarchy`, a shipped name, a YAML path, or a `[C, C]` class-similarity matrix.
    Queries are processed `chunk` at a time, so memory is O(chunk x database size).
    """
    check_inputs(query_codes, query_labels, db_codes, db_labels)
    from nhl.labels import label_form, to_dense

    width = max(
        int(x.max()) + 1 if label_form(x) == "ids" else int(x.shape[1])  # compact forms: densified
        for x in (query_labels, db_labels)
    )
    if isinstance(hierarchy, Hierarchy) and all(label_form(x) == "ids" for x in (query_labels, db_labels)):
        width = max(width, hierarchy.num_classes)
    ql, dl = (to_dense(x, width).astype(np.float64) for x in (query_labels, db_labels))
    qc, dc = (
        np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
        for x in (query_codes, db_codes)
    )
    class_sim = class_similarity(hierarchy, ql.shape[1])
    n = dc.shape[0]
    if n == 0:
        raise ValueError("db_codes: expected a non-empty database")
    if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk <= 0):
        raise ValueError(f"topk: expected a positive integer or None, got {topk!r}")
    k = n if topk is None else min(topk, n)
    bits = qc.shape[1]
    order_key = np.arange(n, dtype=np.int64)
    curves = np.zeros((qc.shape[0], k))
    for start in range(0, qc.shape[0], chunk):
        q_codes, q_labels = qc[start : start + chunk], ql[start : start + chunk]
        dist = np.rint((bits - q_codes @ dc.T) / 2).astype(np.int64)
        key = dist * n + order_key[None, :]  # unique: distance, then database order
        top = np.argpartition(key, k - 1, axis=1)[:, :k] if k < n else np.tile(order_key, (len(key), 1))
        top = np.take_along_axis(top, np.argsort(np.take_along_axis(key, top, axis=1), axis=1), axis=1)
        sim = item_similarity(q_labels, dl, class_sim)
        gained = np.cumsum(np.take_along_axis(sim, top, axis=1), axis=1)
        largest = -np.partition(-sim, k - 1, axis=1)[:, :k] if k < n else sim
        best = np.cumsum(-np.sort(-largest, axis=1), axis=1)  # the ideal ranking's running sum
        curves[start : start + chunk] = np.where(best > 0, gained / np.where(best > 0, best, 1.0), 0.0)
    return curves


def mean_average_hierarchical_precision(
    query_codes: Any,
    query_labels: Any,
    db_codes: Any,
    db_labels: Any,
    hierarchy: Any,
    topk: int | None = 250,
    trapezoid: bool = False,
) -> float:
    """mAHP@topk: the mean over queries of AHP@K = (1/K) sum_{k<=K} hP@k (see the module docstring).

    Inputs as `nhl.metrics.mean_average_precision` (+-1 codes, multi-hot labels, numpy or torch);
    `hierarchy` as `hierarchical_precision_curves`. topk defaults to 250 (Barz & Denzler's mAHP@250).
    """
    curves = hierarchical_precision_curves(query_codes, query_labels, db_codes, db_labels, hierarchy, topk)
    k = curves.shape[1]
    area = curves.sum(axis=1)
    if trapezoid:
        area = area - (curves[:, 0] + curves[:, -1]) / 2
    return float(np.mean(area / k))
