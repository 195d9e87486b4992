"""The per-loss model stage's pieces that need no training: the file layout, the digests behind
the fingerprints, and that the code the fingerprints hash is what DVC watches for the stage.
(tests/pipeline/test_repro.py runs the stage itself: which models it trains, keeps and removes.)"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import yaml

from nhl.claims.dvcexp import locked_file_md5
from nhl.layout import metrics_file, metrics_files, model_file, placed
from nhl.modelset import tree_digest

ROOT = Path(__file__).resolve().parents[2]


def _stage_script():
    spec = importlib.util.spec_from_file_location("loss_models", ROOT / "pipelines" / "loss_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "pipelines"))  # the script imports _params from its folder
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "pipelines"))
    return module


def test_the_fingerprinted_code_is_among_the_stage_deps_so_dvc_reruns_the_stage_when_it_changes():
    script = _stage_script()
    deps = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["models"]["do"]["deps"])
    assert set(script.TRAIN_CODE) <= deps and set(script.EVALUATE_CODE) <= deps
    for path in (*script.TRAIN_CODE, *script.EVALUATE_CODE):
        assert (ROOT / path).exists(), path


def test_tree_digest_hashes_relative_paths_and_bytes_and_skips_caches(tmp_path):
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "one.py").write_text("y = 2\n")
    (tmp_path / "pkg" / "__pycache__" / "a.cpython.pyc").write_bytes(b"junk")
    expected = hashlib.sha256()
    for rel, data in (("one.py", b"y = 2\n"), ("pkg/a.py", b"x = 1\n")):  # sorted by the listed path
        expected.update(rel.encode() + b"\0" + hashlib.md5(data).hexdigest().encode() + b"\0")
    first = tree_digest(["pkg", "one.py"], root=tmp_path)
    assert first == expected.hexdigest()
    assert first == tree_digest(["one.py", "pkg"], root=tmp_path)  # order of the list does not matter
    assert tree_digest(["one.py"], root=tmp_path) != first
    (tmp_path / "pkg" / "__pycache__" / "a.cpython.pyc").write_bytes(b"other")
    assert tree_digest(["pkg", "one.py"], root=tmp_path) == first
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert tree_digest(["pkg", "one.py"], root=tmp_path) != first
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    assert tree_digest(["pkg", "one.py", "missing"], root=tmp_path) == first  # a missing path adds nothing


def test_tree_digest_takes_a_folder_outside_the_root_by_its_absolute_path(tmp_path):
    """`loss_models.py --features /elsewhere/features` run from the project: the folder is hashed under
    its absolute path (it used to fail: not in the subpath of the project)."""
    outside = tmp_path / "elsewhere" / "features"
    outside.mkdir(parents=True)
    (outside / "train.npy").write_bytes(b"abc")
    (tmp_path / "project").mkdir()
    expected = hashlib.sha256()
    expected.update(f"{outside}/train.npy".encode() + b"\0" + hashlib.md5(b"abc").hexdigest().encode() + b"\0")
    assert tree_digest([outside], root=tmp_path / "project") == expected.hexdigest()


def test_layout_writes_per_loss_and_still_reads_a_flat_project(tmp_path):
    assert placed(tmp_path / "models", "csq-nhl-full", ".pt") == tmp_path / "models" / "csq" / "csq-nhl-full.pt"
    assert model_file(tmp_path / "models", "csq-nhl-full") == tmp_path / "models" / "csq" / "csq-nhl-full.pt"
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "dpn-baseline-8.json").write_text("{}")  # an older, flat project
    assert metrics_file(tmp_path / "metrics", "dpn-baseline-8") == tmp_path / "metrics" / "dpn-baseline-8.json"
    (tmp_path / "metrics" / "csq").mkdir()
    (tmp_path / "metrics" / "csq" / "csq-nhl-full.json").write_text("{}")
    assert metrics_files(tmp_path / "metrics") == [
        tmp_path / "metrics" / "csq" / "csq-nhl-full.json",
        tmp_path / "metrics" / "dpn-baseline-8.json",
    ]


def test_locked_file_md5_takes_the_file_then_the_flat_file_then_the_loss_folder():
    lock = {"models/csq/csq-nhl-full.pt": "a", "models/dpn-nhl-full.pt": "b", "models/dsh": "c.dir"}
    assert locked_file_md5(lock, "models", "csq-nhl-full", ".pt") == "a"
    assert locked_file_md5(lock, "models", "dpn-nhl-full", ".pt") == "b"
    assert locked_file_md5(lock, "models", "dsh-baseline-8", ".pt") == "c.dir"
    assert locked_file_md5(lock, "models", "dch-nhl-A", ".pt") is None
