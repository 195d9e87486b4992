"""The validation gate checks every image of a file source, caching each result by content hash."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import nhl.data.imagecheck as imagecheck
from nhl.data.manifest import read_manifest, write_manifest
from nhl.data.sources import load
from nhl.data.splits import get_protocol, make_split
from nhl.data.validation import validate_manifest


@pytest.fixture()
def own(tmp_path):
    """Three classes of eight 8x8 RGB PNGs, split 1 query / 4 train / 1 val per class."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    source = load("imagefolder", root)
    frame, meta = make_split(source, get_protocol("custom").with_counts(query=1, train=4, val=1), seed=0)
    write_manifest(tmp_path / "splits", frame, meta)
    return tmp_path / "splits", root


@pytest.fixture()
def decodes(monkeypatch):
    calls = []
    real = imagecheck.check_image

    def counting(path, *args):
        calls.append(path)
        return real(path, *args)

    monkeypatch.setattr(imagecheck, "check_image", counting)
    return calls


def test_every_image_is_decoded_once_then_cached(own, decodes, tmp_path):
    splits, _ = own
    cache = tmp_path / "cache.json"
    first = validate_manifest(splits, cache_file=cache)
    assert first.success, first.message()
    assert len(decodes) == 24 and first.summary["image_checks"] == {"files": 24, "decoded": 24, "cached": 0}
    decodes.clear()
    second = validate_manifest(splits, cache_file=cache)
    assert second.success and decodes == []  # unchanged data: nothing decoded again
    assert second.summary["image_checks"] == {"files": 24, "decoded": 0, "cached": 24}


@pytest.mark.parametrize("split", ["train", "val", "query", "database"])
def test_one_corrupt_image_in_any_split_fails_naming_it(own, decodes, tmp_path, split):
    splits, root = own
    cache = tmp_path / "cache.json"
    validate_manifest(splits, cache_file=cache)
    frame, _ = read_manifest(splits)
    victim = frame.loc[frame["split"] == split, "path"].iloc[0]
    data = (root / victim).read_bytes()
    (root / victim).write_bytes(data[: len(data) // 2])  # truncated: the header still parses
    decodes.clear()
    result = validate_manifest(splits, cache_file=cache)
    assert decodes == [root / victim]  # only the changed file is decoded
    assert not result.success
    failed = result.failed[0]
    assert failed["check"] == "every image decodes, within the root and the pixel limit (24 files)"
    assert failed["observed"].startswith("1 unexpected") and f"{victim}: cannot be decoded" in failed["observed"]


def test_failure_names_the_first_few_and_the_count(own, tmp_path):
    splits, root = own
    for c in ("a", "b"):
        for i in range(3):
            (root / c / f"{i}.png").write_bytes(b"junk")
    result = validate_manifest(splits)
    observed = result.failed[0]["observed"]
    assert observed.startswith("6 unexpected, e.g. [") and observed.count("cannot be decoded") == 3


def test_a_manifest_entry_outside_the_root_fails_the_gate(own, tmp_path):
    splits, root = own
    (tmp_path / "secret.png").write_bytes((root / "a" / "0.png").read_bytes())
    frame, meta = read_manifest(splits)
    frame.loc[5, "path"] = "../secret.png"
    write_manifest(tmp_path / "bad", frame, meta)
    result = validate_manifest(tmp_path / "bad")
    assert not result.success
    assert "manifest.csv line 7: path '../secret.png' leads outside the data root" in result.message()
