"""Issue 18, items 2-3: paths stay inside their data root, and images are bounded in size."""

from __future__ import annotations

import resource
import struct
import time
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nhl.data.dataset import ManifestDataset
from nhl.data.sources import load
from nhl.images import MAX_PIXELS_ENV, decode, iter_image_batches, read_image


def bomb_png(path, width: int = 50_000, height: int = 50_000) -> None:
    """A valid PNG of a few hundred bytes whose header declares `width x height` RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def test_pixel_bomb_is_refused_before_decoding_and_memory_stays_flat(tmp_path):
    bomb_png(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 1000
    before, start = _peak_rss_mb(), time.monotonic()
    readers = [
        lambda: read_image(tmp_path / "bomb.png", 3),  # nhl encode / nhl search --query
        lambda: list(iter_image_batches([tmp_path / "bomb.png"], 3, size=8)),
        lambda: ManifestDataset(
            pd.DataFrame({"item_id": [0], "path": ["bomb.png"], "labels": ["0"], "split": ["train"]}), 1, root=tmp_path
        )[0],  # training, evaluation
    ]
    for reader in readers:
        with pytest.raises(ValueError, match=r"bomb\.png.*50000x50000 = 2,500,000,000 pixels is over the limit") as err:
            reader()
        assert "\n" not in str(err.value)
    assert time.monotonic() - start < 5
    # decoding it would need 50,000 * 50,000 * 3 bytes = 7.5 GB; the peak grew by far less than one decoded row band
    assert _peak_rss_mb() - before < 50


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((20, 30), dtype=np.uint8)).save(tmp_path / "a.png")
    assert decode(tmp_path / "a.png", "L").shape == (20, 30)
    with pytest.raises(ValueError, match=r"a\.png: declared size 30x20 = 600 pixels is over the limit of 599"):
        decode(tmp_path / "a.png", "L", max_pixels=599)
    monkeypatch.setenv(MAX_PIXELS_ENV, "500")
    with pytest.raises(ValueError, match="over the limit of 500"):
        read_image(tmp_path / "a.png", 1)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=f"{MAX_PIXELS_ENV}: expected a positive integer"):
        read_image(tmp_path / "a.png", 1)


@pytest.fixture()
def image_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(root / "ok.png")
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "secret.png")  # outside the root
    return root


@pytest.mark.parametrize("entry", ["../secret.png", "sub/../../secret.png", "ABSOLUTE", "link.png"])
def test_list_file_entries_must_stay_inside_the_root(image_root, entry):
    (image_root / "link.png").symlink_to(image_root.parent / "secret.png")
    if entry == "ABSOLUTE":
        entry = str(image_root.parent / "secret.png")
    (image_root / "list.txt").write_text(f"ok.png 0\n{entry} 1\n")
    with pytest.raises(ValueError) as err:
        load("imagelist", image_root, lists="list.txt")
    message = str(err.value)
    assert "\n" not in message and "list.txt line 2" in message and repr(entry) in message
    assert ("relative to the data root" if entry.startswith("/") else "leads outside the data root") in message


def test_a_symlink_inside_the_root_is_fine(image_root):
    (image_root / "sub").mkdir()
    (image_root / "sub" / "alias.png").symlink_to(image_root / "ok.png")
    (image_root / "list.txt").write_text("ok.png 0\nsub/alias.png 1\n")
    assert load("imagelist", image_root, lists="list.txt").paths == ("ok.png", "sub/alias.png")


def test_a_list_file_outside_the_root_is_refused(image_root):
    (image_root.parent / "outside.txt").write_text("ok.png 0\n")
    with pytest.raises(ValueError, match=r"imagelist lists.all: path '../outside.txt' leads outside"):
        load("imagelist", image_root, lists="../outside.txt")


def test_manifest_entries_must_stay_inside_the_root(image_root):
    frame = pd.DataFrame(
        {"item_id": [0, 1], "path": ["ok.png", "../secret.png"], "labels": ["0", "0"], "split": ["train", "train"]}
    )
    dataset = ManifestDataset(frame, 1, root=image_root)
    assert dataset[0][0].shape == (1, 4, 4)
    with pytest.raises(ValueError, match=r"manifest entry: path '../secret.png' leads outside .* \(item 1\)"):
        dataset[1]


def test_nhl_encode_and_search_refuse_a_bomb_in_one_line(tmp_path, capsys):
    import nhl.cli
    from nhl.models.hasher import Hasher, HasherSpec, save_hasher

    save_hasher(Hasher(HasherSpec("smallcnn", 3, (8,), {"width": 8})), tmp_path / "m.pt")
    (tmp_path / "good").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "good" / "a.png")
    assert (
        nhl.cli.main(
            ["encode", str(tmp_path / "good"), "--model", str(tmp_path / "m.pt"), "--out", str(tmp_path / "db.npz")]
        )
        == 0
    )
    (tmp_path / "bad").mkdir()
    bomb_png(tmp_path / "bad" / "bomb.png")
    capsys.readouterr()
    for argv in (
        ["encode", str(tmp_path / "bad"), "--model", str(tmp_path / "m.pt"), "--out", str(tmp_path / "x.npz")],
        ["search", str(tmp_path / "db.npz"), str(tmp_path / "bad" / "bomb.png"), "--model", str(tmp_path / "m.pt")],
    ):
        assert nhl.cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "bomb.png: declared size 50000x50000" in err, err
    assert not (tmp_path / "x.npz").exists()
