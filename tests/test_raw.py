"""Saving a loaded source (the fetch stage's output) and reading it back unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from nhl.data.raw import load_source, read_images, save_source
from nhl.data.sources import SourceData, one_hot


def test_memory_source_round_trips_with_groups(tmp_path):
    rng = np.random.default_rng(0)
    source = SourceData(
        "s",
        one_hot(np.array([0, 2, 1, 2]), 3),
        ("a", "b", "c"),
        images=rng.integers(0, 256, (4, 2, 2, 3), dtype=np.uint8),
        groups=np.array(["train", "train", "test", "train"]),
    )
    meta = save_source(source, tmp_path)
    assert meta["group_sizes"] == {"test": 1, "train": 3} and meta["image_shape"] == [2, 2, 3]
    for mmap in (False, True):
        back = load_source(tmp_path, mmap=mmap)
        np.testing.assert_array_equal(back.images, source.images)
        np.testing.assert_array_equal(back.labels, source.labels)
        assert back.groups.tolist() == source.groups.tolist()
        assert (back.name, back.class_names, back.kind) == ("s", ("a", "b", "c"), "memory")
    np.testing.assert_array_equal(read_images(tmp_path)[2], source.images[2])


def test_file_source_round_trips_with_missing(tmp_path):
    labels = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32)
    source = SourceData(
        "imagelist",
        labels,
        ("0", "1", "2"),
        paths=("x/a.jpg", "b.jpg"),
        root="/data/imgs",
        groups=np.array(["all", "all"]),
        missing=("gone.jpg",),
    )
    save_source(source, tmp_path)
    back = load_source(tmp_path)
    assert back.paths == source.paths and back.root == "/data/imgs" and back.missing == ("gone.jpg",)
    np.testing.assert_array_equal(back.labels, labels)


def test_reading_before_fetch_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the fetch stage first"):
        load_source(tmp_path)
    with pytest.raises(FileNotFoundError, match="run the fetch stage first"):
        read_images(tmp_path)
