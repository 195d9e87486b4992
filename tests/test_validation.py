"""The Great Expectations gate: passes on good manifests, fails on each corruption by name."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nhl.data.manifest import read_manifest, write_manifest
from nhl.data.raw import save_source
from nhl.data.sources import SourceData, load, one_hot
from nhl.data.splits import Protocol, make_split

PROTOCOL = Protocol("tiny", query=2, train=5, val=1)


@pytest.fixture(scope="module")
def gate():
    """Import Great Expectations once for the module (about 6 s cold)."""
    import great_expectations  # noqa: F401 - imported for its cold-start cost only

    from nhl.data import validation

    return validation.validate_manifest


@pytest.fixture(scope="module")
def memory_manifest(tmp_path_factory) -> Path:
    """A good row manifest over 4 classes x 12 grey 3x3 images, raw array saved beside it."""
    root = tmp_path_factory.mktemp("memory")
    rng = np.random.default_rng(0)
    targets = np.repeat(np.arange(4), 12)
    source = SourceData(
        "synthetic", one_hot(targets, 4), ("a", "b", "c", "d"), images=rng.integers(0, 256, (48, 3, 3), dtype=np.uint8)
    )
    save_source(source, root / "raw")
    frame, meta = make_split(source, PROTOCOL, seed=0)
    write_manifest(root / "splits", frame, dict(meta, raw_dir=str(root / "raw")))
    return root / "splits"


@pytest.fixture(scope="module")
def file_manifest(tmp_path_factory) -> Path:
    """A good path manifest over 3 classes x 9 PNG files listed in a list file."""
    root = tmp_path_factory.mktemp("files")
    lines = []
    for n in range(27):
        Image.fromarray(np.full((6, 5, 3), n, dtype=np.uint8)).save(root / f"{n}.png")
        lines.append(f"{n}.png {n % 3}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    source = load("imagelist", root, lists="list.txt")
    frame, meta = make_split(source, PROTOCOL, seed=1)
    write_manifest(root / "splits", frame, meta)
    return root / "splits"


def _copy_with(manifest: Path, target: Path, change=None, meta_change=None, keep_hash=False) -> Path:
    """Write a changed copy of a manifest; the content hash is recomputed unless `keep_hash`."""
    frame, meta = read_manifest(manifest)
    if change is not None:
        frame = change(frame.copy())
    if meta_change is not None:
        meta = meta_change(dict(meta))
    target.mkdir(parents=True)
    data = frame.to_csv(index=False, lineterminator="\n").encode()
    (target / "manifest.csv").write_bytes(data)
    if not keep_hash:
        images = ("\nimages " + meta["images_hash"]).encode() if meta.get("images_hash") else b""
        meta["content_hash"] = "sha256:" + hashlib.sha256(data + images).hexdigest()
    (target / "manifest.json").write_text(json.dumps(meta))
    return target


def _failed(result) -> set[str]:
    return {c["check"] for c in result.failed}


def test_good_row_manifest_passes(gate, memory_manifest):
    result = gate(memory_manifest)
    assert result.success, result.message()
    checks = {c["check"] for c in result.checks}
    assert "no query item in another split" in checks and "sampled images have shape 3x3" in checks
    assert "every class present in val" in checks
    assert result.summary["sizes"] == {"train": 20, "val": 4, "query": 8, "database": 16}
    assert result.class_counts["train"] == [5, 5, 5, 5]


def test_good_file_manifest_passes(gate, file_manifest):
    result = gate(file_manifest, expected_shape=(6, 5, 3))
    assert result.success, result.message()
    assert "sampled images have shape 6x5x3" in {c["check"] for c in result.checks}
    assert gate(file_manifest, expected_shape=(5, 5, 3)).failed[0]["check"] == "sampled images have shape 5x5x3"


def _swap_split_of_first(split_from, split_to):
    def change(frame):
        index = frame.index[frame["split"] == split_from][0]
        frame.loc[index, "split"] = split_to
        return frame

    return change


CORRUPTIONS = {
    "extra column": (lambda f: f.assign(extra=1), {"columns are item_id, row, labels, split"}),
    "empty labels": (lambda f: f.assign(labels=[None] + list(f["labels"][1:])), {"no empty labels"}),
    "unknown split": (
        lambda f: f.assign(split=["test"] + list(f["split"][1:])),
        {"split is one of train/val/query/database"},
    ),
    "non-numeric labels": (
        lambda f: f.assign(labels=["x"] + list(f["labels"][1:])),
        {"labels are space-separated label indices"},
    ),
    "label out of range": (lambda f: f.assign(labels=["4"] + list(f["labels"][1:])), {"label indices within 0..3"}),
    "duplicate id in a split": (
        lambda f: pd.concat([f, f.iloc[[0]]], ignore_index=True),
        {"item ids unique within each split"},
    ),
    "query item in database": (
        lambda f: pd.concat([f, f[f["split"] == "query"].iloc[[0]].assign(split="database")], ignore_index=True),
        {"no query item in another split"},
    ),
    "one id, two images": (
        lambda f: f.assign(row=[f["row"][1]] + list(f["row"][1:])),
        {"each item id names one image and one label set"},
    ),
    "class missing from val": (
        lambda f: f[~((f["split"] == "val") & (f["labels"] == "2"))],
        {"every class present in val"},
    ),
    "row outside the raw array": (
        lambda f: f.assign(row=[480] + list(f["row"][1:]), item_id=[480] + list(f["item_id"][1:])),
        {None},
    ),
    "database row dropped": (
        lambda f: f.drop(index=f.index[f["split"] == "database"][0]),
        {"database has 16 rows as protocol tiny says"},
    ),
    "item_id not integer": (
        lambda f: f.assign(item_id=["a"] + list(f["item_id"][1:])),
        {"item_id is an integer column"},
    ),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_fails_its_check(gate, memory_manifest, tmp_path, name):
    change, expected = CORRUPTIONS[name]
    broken = _copy_with(memory_manifest, tmp_path / "m", change)
    result = gate(broken)
    assert not result.success
    failed = _failed(result)
    if expected == {None}:  # the images check names where it looked
        assert any(check.startswith("images exist (rows 0..47") for check in failed), failed
    else:
        assert expected <= failed, failed
    assert "manifest validation failed" in result.message() and "\n" not in result.message()


def test_changed_csv_fails_the_content_hash(gate, memory_manifest, tmp_path):
    broken = _copy_with(memory_manifest, tmp_path / "m", lambda f: f.iloc[::-1], keep_hash=True)
    assert _failed(gate(broken)) == {"content hash matches manifest.json"}


def test_protocol_sizes_are_taken_from_the_recorded_spec(gate, memory_manifest, tmp_path):
    def claim_more_queries(meta):
        meta["protocol_spec"] = dict(meta["protocol_spec"], query=3)
        return meta

    broken = _copy_with(memory_manifest, tmp_path / "m", meta_change=claim_more_queries)
    failed = _failed(gate(broken))
    assert {"query has 12 rows as protocol tiny says", "database has 12 rows as protocol tiny says"} <= failed


def test_missing_and_corrupt_image_files(gate, file_manifest, tmp_path):
    import shutil

    images = tmp_path / "images"
    shutil.copytree(file_manifest.parent, images, ignore=shutil.ignore_patterns("splits"))
    (images / "0.png").unlink()
    result = gate(file_manifest, images=images)
    assert _failed(result) == {f"images exist (files under {images})"}

    for n in range(27):  # every file is corrupt now; file manifests have every image decoded
        (images / f"{n}.png").write_bytes(b"not a png")
    result = gate(file_manifest, images=images, sample=4)
    assert "every image decodes, within the root and the pixel limit (27 files)" in _failed(result)


def test_nothing_to_validate_raises(gate, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        gate(tmp_path / "absent")
    (tmp_path / "m").mkdir()
    (tmp_path / "m/manifest.json").write_text("{}")
    (tmp_path / "m/manifest.csv").write_text("item_id,row,labels,split\n")
    with pytest.raises(ValueError, match="lacks keys"):
        gate(tmp_path / "m")


def test_reports_are_written_on_failure_too(gate, memory_manifest, tmp_path):
    from nhl.data.audit import write_report

    broken = _copy_with(memory_manifest, tmp_path / "m", CORRUPTIONS["query item in database"][0])
    result = gate(broken)
    write_report(result, tmp_path / "report")
    saved = json.loads((tmp_path / "report/result.json").read_text())
    assert saved["success"] is False and "no query item in another split" in saved["failed"]
    assert saved["protocol"] == "tiny" and saved["seed"] == 0 and saved["content_hash"].startswith("sha256:")
    assert all({"suite", "check", "expectation", "success"} <= set(c) for c in saved["checks"])
    audit = (tmp_path / "report/audit.md").read_text()
    assert "**FAILED" in audit and "| **FAIL** | items | no query item in another split |" in audit
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["audit.md", "result.json"]


def test_audit_lists_missing_images(gate, file_manifest, tmp_path):
    from nhl.data.audit import render_audit

    def add_missing(meta):
        meta["missing"] = [f"gone/{i}.jpg" for i in range(60)]
        return meta

    changed = _copy_with(file_manifest, tmp_path / "m", meta_change=add_missing)
    result = gate(changed, images=file_manifest.parent)
    assert result.success and result.summary["missing_images"]["count"] == 60
    audit = render_audit(result)
    assert "60 listed images were missing" in audit and "`gone/49.jpg`" in audit and "`gone/50.jpg`" not in audit
    assert "and 10 more" in audit


def _validate_args(*argv):
    from nhl.commands import validate

    parser = argparse.ArgumentParser()
    validate.register(parser.add_subparsers())
    return validate, parser.parse_args(["validate", *argv])


def test_validate_command(gate, memory_manifest, tmp_path, capsys):
    command, args = _validate_args(str(memory_manifest), "--out", str(tmp_path / "ok"))
    assert command.run(args) == 0
    assert "passed" in capsys.readouterr().out
    assert (tmp_path / "ok/audit.md").is_file()

    broken = _copy_with(memory_manifest, tmp_path / "m", CORRUPTIONS["label out of range"][0])
    command, args = _validate_args(str(broken), "--out", str(tmp_path / "bad"))
    assert command.run(args) == 1
    assert "label indices within 0..3" in capsys.readouterr().err
    assert json.loads((tmp_path / "bad/result.json").read_text())["success"] is False

    command, args = _validate_args(str(tmp_path / "absent"), "--out", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError):
        command.run(args)
    assert not (tmp_path / "none").exists()
