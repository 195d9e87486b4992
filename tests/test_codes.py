"""Codes files: round trip, bit layout against a hand-written packing, atomic writes, bad files."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch

from nhl.codes import CODES_FORMAT, Codes, encode_batches, file_sha256, load_codes, model_from_file, save_codes
from nhl.models.hasher import Hasher, HasherSpec, save_hasher
from nhl.serving import resolve_model


def random_codes(n: int, bits: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array([-1, 1], dtype=np.int8), size=(n, bits))


def reference_pack(codes: np.ndarray) -> np.ndarray:
    """Bit j of a code -> bit j % 8 (least significant first) of byte j // 8; +1 -> 1."""
    out = np.zeros((codes.shape[0], -(-codes.shape[1] // 8)), dtype=np.uint8)
    for i, row in enumerate(codes):
        for j, value in enumerate(row):
            if value > 0:
                out[i, j // 8] |= 1 << (j % 8)
    return out


@pytest.mark.parametrize("bits", [8, 12, 64, 128])
def test_round_trip_keeps_codes_ids_names_labels_and_model(tmp_path, bits):
    codes = random_codes(7, bits, seed=bits)
    ids = np.array([10, 3, 99, 4, 5, 6, 1000])
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2, 0]]
    model = {"model_id": "m", "lengths": [bits // 2 or 1, bits], "sha256": "sha256:00"}
    original = Codes.from_codes(codes, ids, model, names=[f"img{i}.png" for i in range(7)], labels=labels)
    np.testing.assert_array_equal(original.packed, reference_pack(codes))
    save_codes(tmp_path / "c.npz", original)
    loaded = load_codes(tmp_path / "c.npz")
    assert loaded.bits == bits and len(loaded) == 7
    np.testing.assert_array_equal(loaded.codes(), codes)
    np.testing.assert_array_equal(loaded.codes(bits // 2 or 1), codes[:, : bits // 2 or 1])
    np.testing.assert_array_equal(loaded.ids, ids)
    assert list(loaded.names) == [f"img{i}.png" for i in range(7)]
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.model == model and loaded.lengths == model["lengths"]


def test_default_ids_are_positions_and_lengths_default_to_the_width():
    codes = Codes.from_codes(random_codes(4, 16))
    np.testing.assert_array_equal(codes.ids, np.arange(4))
    assert codes.lengths == [16] and codes.names is None and codes.labels is None


def test_save_is_atomic_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    save_codes(path, Codes.from_codes(random_codes(3, 8)))
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_codes(path, Codes.from_codes(random_codes(5, 8, seed=1)))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]  # no temp file left


def test_bad_fields_are_one_line_errors():
    with pytest.raises(ValueError, match="packed: expected uint8"):
        Codes(np.zeros((2, 3), np.uint8), [0, 1], 16, {})
    with pytest.raises(ValueError, match="ids: expected 2 integer ids"):
        Codes(np.zeros((2, 2), np.uint8), [0, 1, 2], 16, {})
    with pytest.raises(ValueError, match="names: expected 2 names"):
        Codes(np.zeros((2, 2), np.uint8), [0, 1], 16, {}, names=["a"])
    with pytest.raises(ValueError, match="bits: expected a prefix length in 1..16"):
        Codes.from_codes(random_codes(2, 16)).codes(17)
    with pytest.raises(ValueError, match="only -1 and \\+1"):
        Codes.from_codes(np.zeros((2, 8)))


def test_load_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="codes file .*nope.npz does not exist"):
        load_codes(tmp_path / "nope.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="text.npz: cannot be read"):
        load_codes(tmp_path / "text.npz")
    np.savez(tmp_path / "other.npz", format=np.array("something-else"))
    with pytest.raises(ValueError, match="other.npz: format field .* expected 'nhl-codes/1'"):
        load_codes(tmp_path / "other.npz")
    np.savez(tmp_path / "partial.npz", format=np.array(CODES_FORMAT), packed=np.zeros((1, 1), np.uint8))
    with pytest.raises(ValueError, match=r"partial.npz: missing field\(s\) \['ids', 'bits', 'model'\]"):
        load_codes(tmp_path / "partial.npz")
    np.savez(
        tmp_path / "wide.npz",
        format=np.array(CODES_FORMAT),
        packed=np.zeros((1, 2), np.uint8),
        ids=np.array([0]),
        bits=np.array(64),
        model=np.array(json.dumps({})),
    )
    with pytest.raises(ValueError, match="wide.npz: packed: expected uint8 \\[N, 8\\] for 64-bit codes"):
        load_codes(tmp_path / "wide.npz")


def test_resolve_model_and_encode_batches(tmp_path):
    torch.manual_seed(0)
    model = Hasher(HasherSpec("smallcnn", 1, (8, 16), {"width": 8})).eval()
    save_hasher(model, tmp_path / "m.pt", extra={"model_id": "tiny"})
    loaded, info = resolve_model(tmp_path / "m.pt")
    assert model_from_file(tmp_path / "m.pt")[1] == info
    assert info["model_id"] == "tiny" and info["lengths"] == [8, 16] and info["in_channels"] == 1
    assert info["sha256"] == file_sha256(tmp_path / "m.pt")
    assert info["sha256"] == "sha256:" + hashlib.sha256((tmp_path / "m.pt").read_bytes()).hexdigest()
    images = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    packed = encode_batches(loaded, [images[:3], images[3:]])
    with torch.no_grad():
        raw = loaded.head.linear(loaded.features(images))
    expected = np.where(raw.numpy() >= 0, 1, -1)  # sign, 0 -> +1
    np.testing.assert_array_equal(packed, reference_pack(expected))
    with pytest.raises(FileNotFoundError, match="model file .*missing.pt does not exist"):
        resolve_model(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="no images"):
        encode_batches(loaded, [])


def test_codes_file_has_no_pickles(tmp_path):
    save_codes(tmp_path / "c.npz", Codes.from_codes(random_codes(2, 8), model={"a": 1}, names=["x", "y"]))
    with np.load(tmp_path / "c.npz", allow_pickle=False) as data:  # would raise on object arrays
        assert set(data.files) == {"format", "packed", "ids", "bits", "model", "names"}


def test_labels_may_be_class_ids(tmp_path):
    """The compact single-label form (nhl.labels) round-trips as int64 ids; bad shapes are refused."""
    codes = np.where(np.random.default_rng(1).random((4, 16)) < 0.5, 1, -1)
    original = Codes.from_codes(codes, np.arange(4), {"model_id": "m"}, labels=np.array([3, 0, 3, 1]))
    assert original.labels.dtype == np.int64
    save_codes(tmp_path / "c.npz", original)
    np.testing.assert_array_equal(load_codes(tmp_path / "c.npz").labels, [3, 0, 3, 1])
    with pytest.raises(ValueError, match=r"labels: expected class ids \[4\] or a multi-hot matrix"):
        Codes.from_codes(codes, np.arange(4), {}, labels=np.array([1, 2]))
