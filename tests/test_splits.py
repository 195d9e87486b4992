"""Split protocols: counts, determinism, seed sensitivity, no query leakage, bad input."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from nhl.data.sources import SourceData, one_hot
from nhl.data.splits import PROTOCOLS, Protocol, get_protocol, make_split


def _single_label(per_class: list[int], groups: list[list[str]] | None = None) -> SourceData:
    """A tiny in-memory source: class c has per_class[c] items (1x1 images), shuffled."""
    rng = np.random.default_rng(123)
    targets = np.repeat(np.arange(len(per_class)), per_class)
    order = rng.permutation(len(targets))
    targets = targets[order]
    group_array = None
    if groups is not None:
        group_array = np.concatenate([np.asarray(g) for g in groups])[order]
    images = np.zeros((len(targets), 1, 1), dtype=np.uint8)
    return SourceData(
        "synthetic",
        one_hot(targets, len(per_class)),
        tuple(map(str, range(len(per_class)))),
        images=images,
        groups=group_array,
    )


def _multi_label(n: int, classes: int, seed: int = 5) -> SourceData:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, classes)) < 2.0 / classes).astype(np.float32)
    labels[np.arange(n), rng.integers(0, classes, n)] = 1
    return SourceData(
        "multi", labels, tuple(map(str, range(classes))), paths=tuple(f"{i}.jpg" for i in range(n)), root="/imgs"
    )


def _members(frame) -> dict[str, list[int]]:
    return {s: frame.loc[frame["split"] == s, "item_id"].tolist() for s in ("train", "val", "query", "database")}


def _class_counts(source: SourceData, ids: list[int]) -> Counter:
    return Counter(int(np.argmax(source.labels[i])) for i in ids)


def _assert_no_query_leak(members: dict[str, list[int]]) -> None:
    query = set(members["query"])
    for split in ("train", "val", "database"):
        assert not query & set(members[split]), split


def test_per_class_counts_and_rest_as_database():
    source = _single_label([30, 25, 40])
    protocol = Protocol("p", query=3, train=10, val=2)
    frame, meta = make_split(source, protocol, seed=0)
    members = _members(frame)
    for split, count in (("query", 3), ("train", 10), ("val", 2)):
        counts = _class_counts(source, members[split])
        assert counts == Counter({0: count, 1: count, 2: count}), split
    used = set(members["query"]) | set(members["train"]) | set(members["val"])
    assert sorted(members["database"]) == sorted(set(range(len(source))) - used)
    assert len(used) == 3 * 15  # query, train and val are pairwise disjoint
    _assert_no_query_leak(members)
    assert meta["sizes"] == {"train": 30, "val": 6, "query": 9, "database": 95 - 45}
    assert meta["sizes"] == protocol.expected_sizes(3, source.group_sizes())
    assert frame["row"].tolist() == frame["item_id"].tolist()
    for n, item in enumerate(frame["item_id"]):
        assert frame.at[n, "labels"] == str(int(np.argmax(source.labels[item])))


def test_rows_are_ordered_by_split_then_item_id():
    frame, _ = make_split(_single_label([20, 20]), Protocol("p", 2, 5, 1), seed=4)
    assert frame["split"].tolist() == sorted(frame["split"], key=["train", "val", "query", "database"].index)
    for split in ("train", "val", "query", "database"):
        ids = frame.loc[frame["split"] == split, "item_id"].tolist()
        assert ids == sorted(ids)


def test_train_in_database_adds_train_and_val():
    source = _single_label([30, 30])
    frame, meta = make_split(source, Protocol("p", 3, 10, 2, train_in_database=True), seed=1)
    members = _members(frame)
    assert set(members["train"]) | set(members["val"]) <= set(members["database"])
    assert len(members["database"]) == 60 - 6
    _assert_no_query_leak(members)


def test_same_seed_same_split_other_seed_other_split():
    source = _single_label([50, 50, 50])
    protocol = Protocol("p", 5, 20, 5)
    first, _ = make_split(source, protocol, seed=7)
    again, _ = make_split(source, protocol, seed=7)
    other, _ = make_split(source, protocol, seed=8)
    assert first.equals(again)
    assert not first.equals(other)
    assert _members(first)["query"] != _members(other)["query"]


def test_totals_protocol_puts_every_label_in_train():
    source = _multi_label(400, 12)
    # A label carried by exactly one item outside the query must still reach train.
    labels = source.labels.copy()
    labels[:, 11] = 0
    labels[399, 11] = 1
    source = SourceData("multi", labels, source.class_names, paths=source.paths, root=source.root)
    protocol = Protocol("t", query=20, train=15, val=10, per_class=False, train_in_database=True)
    for seed in range(5):
        frame, meta = make_split(source, protocol, seed)
        members = _members(frame)
        assert [len(members[s]) for s in ("query", "train", "val")] == [20, 15, 10]
        _assert_no_query_leak(members)
        train_labels = source.labels[members["train"]].sum(axis=0)
        assert (train_labels > 0).all(), seed
        assert len(members["database"]) == 400 - 20
        assert meta["multi_label"] is True and meta["location"] == "path"
        assert frame["path"].tolist() == [f"{i}.jpg" for i in frame["item_id"]]


def test_label_only_in_query_cannot_be_covered():
    labels = np.zeros((30, 3), dtype=np.float32)
    labels[:, 0] = 1
    labels[:, 1] = 1
    labels[0, 2] = 1  # label 2: only item 0, which the query group holds
    groups = np.array(["q"] * 10 + ["p"] * 20)
    source = SourceData("m", labels, ("a", "b", "c"), images=np.zeros((30, 1, 1), dtype=np.uint8), groups=groups)
    with pytest.raises(ValueError, match="items available"):
        make_split(source, Protocol("t", query=29, train=1, val=1, per_class=False), 0)
    protocol = Protocol("t", query=10, train=3, val=1, per_class=False, query_group="q", pool_group="p")
    with pytest.raises(ValueError, match="label 2 has no item outside the query set"):
        make_split(source, protocol, 0)


def test_train_too_small_to_cover_every_label():
    labels = np.eye(6, dtype=np.float32).repeat(5, axis=0)
    source = SourceData("m", labels, tuple("abcdef"), images=np.zeros((30, 1, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match="train 3 is fewer than the 6 items"):
        make_split(source, Protocol("t", query=2, train=3, val=1, per_class=False), 0)


def test_groups_choose_query_and_pool():
    per_class = [12, 12, 12]
    groups = [["test"] * 4 + ["train"] * 8 for _ in per_class]
    source = _single_label(per_class, groups)
    protocol = Protocol("g", 4, 5, 1, train_in_database=True, query_group="test", pool_group="train")
    frame, meta = make_split(source, protocol, seed=0)
    members = _members(frame)
    assert sorted(members["query"]) == sorted(np.flatnonzero(source.groups == "test").tolist())
    assert sorted(members["database"]) == sorted(np.flatnonzero(source.groups == "train").tolist())
    assert meta["sizes"] == protocol.expected_sizes(3, source.group_sizes())


def test_every_registered_protocol_is_documented():
    from nhl.data import splits

    for name in PROTOCOLS:
        assert f"| `{name}` |" in splits.__doc__


def _cifar_like() -> SourceData:
    return _single_label([6000] * 10, [["train"] * 5000 + ["test"] * 1000 for _ in range(10)])


@pytest.mark.parametrize(
    "name, sizes",
    [
        ("cifar10", {"query": 1000, "train": 4500, "val": 500, "database": 54000}),
        ("cifar10-1", {"query": 1000, "train": 4500, "val": 500, "database": 59000}),
        ("cifar10-2", {"query": 10000, "train": 45000, "val": 5000, "database": 50000}),
    ],
)
def test_cifar_protocols_give_the_literature_sizes(name, sizes):
    source = _cifar_like()
    frame, meta = make_split(source, get_protocol(name), seed=0)
    members = _members(frame)
    assert {s: len(v) for s, v in members.items()} == sizes
    assert meta["sizes"] == get_protocol(name).expected_sizes(10, source.group_sizes())
    _assert_no_query_leak(members)
    if name == "cifar10-2":
        assert set(members["query"]) == set(np.flatnonzero(source.groups == "test").tolist())


@pytest.mark.parametrize(
    "name, classes, query, train_pool", [("nuswide21", 21, 2100, 10500), ("coco", 80, 5000, 10000)]
)
def test_multi_label_protocols(name, classes, query, train_pool):
    source = _multi_label(20000, classes)
    frame, meta = make_split(source, get_protocol(name), seed=0)
    members = _members(frame)
    assert len(members["query"]) == query
    assert len(members["train"]) + len(members["val"]) == train_pool
    assert len(members["database"]) == 20000 - query  # the database includes the training items
    assert (source.labels[members["train"]].sum(axis=0) > 0).all()
    _assert_no_query_leak(members)


def test_imagenet100_uses_its_own_lists():
    per_class = [80] * 100
    groups = [["query"] * 50 + ["database"] * 30 for _ in per_class]
    labels_source = _single_label(per_class, groups)
    source = SourceData(
        "imagelist",
        labels_source.labels,
        labels_source.class_names,
        paths=tuple(f"{i}.JPEG" for i in range(8000)),
        root="/r",
        groups=labels_source.groups,
    )
    with pytest.raises(ValueError, match="class 0 has 30 items available, needs 130"):
        make_split(source, get_protocol("imagenet100"), seed=0)
    groups = [["query"] * 50 + ["database"] * 200 for _ in per_class]
    labels_source = _single_label([250] * 100, groups)
    frame, meta = make_split(labels_source, get_protocol("imagenet100"), seed=0)
    members = _members(frame)
    assert len(members["query"]) == 5000 and len(members["train"]) == 11700 and len(members["val"]) == 1300
    assert sorted(members["database"]) == sorted(np.flatnonzero(labels_source.groups == "database").tolist())


def test_mnist5k_and_digits_defaults():
    frame, meta = make_split(_single_label([500] * 10), get_protocol("mnist5k"), seed=0)
    assert meta["sizes"] == {"train": 2000, "val": 200, "query": 500, "database": 2300}
    from nhl.data.sources import load

    digits = load("digits")
    frame, meta = make_split(digits, get_protocol("digits"), seed=0)
    assert meta["sizes"] == {"train": 500, "val": 100, "query": 100, "database": 1797 - 700}
    assert meta["image_shape"] == [8, 8] and meta["protocol"] == "digits" and meta["seed"] == 0


def test_more_per_class_than_exist():
    source = _single_label([30, 12])
    with pytest.raises(ValueError, match=r"class 1 has 9 items available, needs 12 \(train 10 \+ val 2\)"):
        make_split(source, Protocol("p", 3, 10, 2), seed=0)


@pytest.mark.parametrize("field", ["query", "train", "val"])
@pytest.mark.parametrize("value", [0, -5, 2.5, True])
def test_counts_must_be_positive_integers(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a positive integer"):
        Protocol("p", **{"query": 1, "train": 1, "val": 1, field: value})
    with pytest.raises(ValueError, match=f"{field} must be a positive integer"):
        get_protocol("mnist5k").with_counts(**{field: value})


def test_protocol_registry_and_overrides():
    with pytest.raises(ValueError, match="unknown protocol 'cifar'.*cifar10"):
        get_protocol("cifar")
    custom = get_protocol("mnist5k").with_counts(query=10)
    assert custom.query == 10 and custom.train == 200 and get_protocol("mnist5k").query == 50
    with pytest.raises(ValueError, match="unknown fields"):
        get_protocol("mnist5k").with_counts(queries=10)
    with pytest.raises(ValueError, match="query_group and pool_group"):
        Protocol("p", 1, 1, 1, query_group="test")


def test_per_class_protocol_needs_single_label_data():
    with pytest.raises(ValueError, match="needs single-label data"):
        make_split(_multi_label(200, 4), Protocol("p", 1, 2, 1), seed=0)


def test_missing_group_is_named():
    with pytest.raises(ValueError, match="draws from group 'test'"):
        make_split(_single_label([20, 20]), get_protocol("cifar10-2"), seed=0)
