"""The torch Dataset over a manifest split: shapes, scaling, normalisation, index, files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from nhl.data.dataset import ManifestDataset, load_split
from nhl.data.manifest import write_manifest
from nhl.data.raw import save_source
from nhl.data.sources import SourceData, one_hot
from nhl.data.splits import Protocol, make_split


def _frame(rows, labels, split="train", column="row"):
    return pd.DataFrame({"item_id": list(range(len(rows))), column: rows, "labels": labels, "split": split})


def test_grey_rows_give_one_channel_scaled_to_unit_range():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 4, 5), dtype=np.uint8)
    dataset = ManifestDataset(_frame([5, 2, 0], ["1", "0 2", "2"]), 3, images=images)
    assert len(dataset) == 3
    image, labels, index = dataset[1]
    assert image.shape == (1, 4, 5) and image.dtype == torch.float32
    for i in range(4):
        for j in range(5):
            assert image[0, i, j].item() == pytest.approx(images[2, i, j] / 255.0)
    assert labels.tolist() == [1.0, 0.0, 1.0] and index == 1


def test_colour_rows_are_channels_first_and_normalised():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 2, 2, 3), dtype=np.uint8)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    dataset = ManifestDataset(_frame([2], ["0"]), 1, images=images, mean=mean, std=std)
    image, _, _ = dataset[0]
    assert image.shape == (3, 2, 2)
    for c in range(3):
        for i in range(2):
            for j in range(2):
                expected = (images[2, i, j, c] / 255.0 - mean[c]) / std[c]
                assert image[c, i, j].item() == pytest.approx(expected, rel=1e-5)


def test_transform_runs_on_the_unit_range_tensor_before_normalising():
    images = np.full((1, 2, 2), 255, dtype=np.uint8)
    seen = []

    def transform(tensor):
        seen.append(tensor.max().item())
        return tensor * 0.5

    dataset = ManifestDataset(_frame([0], ["0"]), 1, images=images, transform=transform, mean=0.25, std=0.5)
    image, _, _ = dataset[0]
    assert seen == [1.0]
    assert torch.allclose(image, torch.full((1, 2, 2), (0.5 - 0.25) / 0.5))


def test_channels_converts_grey_to_rgb():
    images = np.arange(4, dtype=np.uint8).reshape(1, 2, 2) * 60
    image, _, _ = ManifestDataset(_frame([0], ["0"]), 1, images=images, channels=3)[0]
    assert image.shape == (3, 2, 2)
    for c in range(3):
        assert torch.allclose(image[c], torch.from_numpy(images[0]).float() / 255)


def test_file_images_grey_and_colour(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    colour = np.arange(36, dtype=np.uint8).reshape(3, 4, 3) * 7
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    Image.fromarray(colour, mode="RGB").save(tmp_path / "c.png")
    frame = _frame(["g.png", "c.png"], ["0", "1"], column="path")
    dataset = ManifestDataset(frame, 2, root=tmp_path)
    g, _, _ = dataset[0]
    c, _, _ = dataset[1]
    assert g.shape == (1, 3, 4) and torch.allclose(g[0], torch.from_numpy(grey).float() / 255)
    assert c.shape == (3, 3, 4) and torch.allclose(c, torch.from_numpy(colour).permute(2, 0, 1).float() / 255)
    forced = ManifestDataset(frame, 2, root=tmp_path, channels=3)
    assert forced[0][0].shape == (3, 3, 4)


def test_corrupt_image_names_the_file(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    dataset = ManifestDataset(_frame(["bad.jpg"], ["0"], column="path"), 1, root=tmp_path)
    with pytest.raises(ValueError, match=r"bad\.jpg \(item 0\) cannot be decoded") as err:
        dataset[0]
    assert "\n" not in str(err.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="raw image array"):
        ManifestDataset(_frame([0], ["0"]), 1)
    with pytest.raises(ValueError, match="image root"):
        ManifestDataset(_frame(["a.png"], ["0"], column="path"), 1)
    with pytest.raises(ValueError, match="channels"):
        ManifestDataset(_frame([0], ["0"]), 1, images=np.zeros((1, 2, 2), np.uint8), channels=2)
    with pytest.raises(ValueError, match="std must be positive"):
        ManifestDataset(_frame([0], ["0"]), 1, images=np.zeros((1, 2, 2), np.uint8), std=0.0)


@pytest.fixture()
def manifest_dir(tmp_path):
    rng = np.random.default_rng(2)
    targets = np.repeat(np.arange(3), 10)
    images = rng.integers(0, 256, (30, 4, 4), dtype=np.uint8)
    source = SourceData("s", one_hot(targets, 3), ("a", "b", "c"), images=images)
    save_source(source, tmp_path / "raw")
    frame, meta = make_split(source, Protocol("p", 2, 4, 1), seed=0)
    write_manifest(tmp_path / "splits", frame, dict(meta, raw_dir=str(tmp_path / "raw")))
    return tmp_path / "splits", frame, images, targets


def test_load_split_index_is_the_position_within_the_split(manifest_dir):
    directory, frame, images, targets = manifest_dir
    train = load_split(directory, "train")
    rows = frame[frame["split"] == "train"]["row"].tolist()
    assert len(train) == len(rows) == 12
    loader = DataLoader(train, batch_size=5, shuffle=False)
    positions = []
    for batch_images, batch_labels, batch_index in loader:
        assert batch_images.shape[1:] == (1, 4, 4) and batch_labels.shape[1] == 3
        for image, labels, index in zip(batch_images, batch_labels, batch_index.tolist(), strict=True):
            row = rows[index]
            assert torch.allclose(image[0], torch.from_numpy(images[row]).float() / 255)
            assert int(labels.argmax()) == targets[row]
            positions.append(index)
    assert positions == list(range(12))
    assert train.labels.shape == (12, 3)


def test_load_split_from_a_frame_needs_num_classes(manifest_dir):
    directory, frame, images, _ = manifest_dir
    with pytest.raises(ValueError, match="num_classes"):
        load_split(frame, "query", images)
    query = load_split(frame, "query", images, num_classes=3)
    assert len(query) == 6
    with pytest.raises(ValueError, match="unknown split"):
        load_split(frame, "test", images, num_classes=3)
