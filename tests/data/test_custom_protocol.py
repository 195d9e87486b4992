"""Protocol `custom`: the user's counts, per class or in total, refused when the data is too small."""

from __future__ import annotations

import numpy as np
import pytest

from nhl.data.sources import SourceData, one_hot
from nhl.data.splits import get_protocol, make_split

SIZES = (12, 30, 20)  # items per class


def _source(sizes=SIZES) -> SourceData:
    targets = np.repeat(np.arange(len(sizes)), sizes)
    return SourceData(
        "own",
        one_hot(targets, len(sizes)),
        ("ant", "bee", "cow"),
        paths=tuple(f"{i}.png" for i in range(len(targets))),
        root="/nowhere",
    )


def _counts(frame, split):
    rows = frame[frame["split"] == split]
    return np.bincount(rows["labels"].astype(int), minlength=3).tolist()


def test_per_class_counts_are_honoured():
    protocol = get_protocol("custom").with_counts(query=3, train=6, val=2)
    frame, meta = make_split(_source(), protocol, seed=4)
    assert _counts(frame, "query") == [3, 3, 3] and _counts(frame, "train") == [6, 6, 6]
    assert _counts(frame, "val") == [2, 2, 2]
    assert _counts(frame, "database") == [12 - 5 - 6, 30 - 5 - 6, 20 - 5 - 6]
    assert meta["protocol"] == "custom" and meta["class_names"] == ["ant", "bee", "cow"]


def test_total_counts_are_honoured():
    protocol = get_protocol("custom").with_counts(query=7, train=20, val=5, per_class=False)
    frame, _ = make_split(_source(), protocol, seed=1)
    sizes = frame["split"].value_counts().to_dict()
    assert sizes == {"query": 7, "train": 20, "val": 5, "database": sum(SIZES) - 32}


def test_same_seed_same_split_other_seed_other_split():
    protocol = get_protocol("custom").with_counts(query=3, train=6, val=2)
    a, _ = make_split(_source(), protocol, seed=9)
    b, _ = make_split(_source(), protocol, seed=9)
    c, _ = make_split(_source(), protocol, seed=10)
    assert a.equals(b) and not a.equals(c)


def test_a_class_too_small_is_one_line_naming_it():
    protocol = get_protocol("custom").with_counts(query=3, train=8, val=2)  # 13 per class; ant has 12
    with pytest.raises(ValueError) as err:
        make_split(_source(), protocol, seed=0)
    assert str(err.value) == (
        "protocol custom: class 0 ('ant') has 12 items, fewer than 13 per class "
        "(query 3 + train 8 + val 2); lower data.query/train/val or add images"
    )
    protocol = get_protocol("custom").with_counts(query=10, train=40, val=20, per_class=False)
    with pytest.raises(ValueError, match=r"^protocol custom: 62 items, fewer than 70 \(query 10 \+ train 40"):
        make_split(_source(), protocol, seed=0)


def test_multi_label_data_needs_totals():
    source = _source()
    labels = source.labels.copy()
    labels[0, 1] = 1
    multi = SourceData("own", labels, source.class_names, paths=source.paths, root="/nowhere")
    with pytest.raises(ValueError, match="per_class: true needs single-label data.*set data.per_class: false"):
        make_split(multi, get_protocol("custom").with_counts(query=1, train=2, val=1), seed=0)
