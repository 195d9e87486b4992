"""Image files -> [0, 1] tensors: pixel values, channel conversion, folders, resizing, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nhl.images import iter_image_batches, list_images, load_images, read_image


def save(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_grey_png_values_are_pixels_over_255(tmp_path):
    pixels = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    save(tmp_path / "a.png", pixels)
    x = read_image(tmp_path / "a.png", channels=1)
    assert x.shape == (1, 6, 8) and x.dtype == torch.float32
    np.testing.assert_array_equal(x[0].numpy(), pixels.astype(np.float32) / 255.0)


def test_channel_conversion_follows_the_model(tmp_path):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    save(tmp_path / "c.png", rgb)
    x3 = read_image(tmp_path / "c.png", channels=3)
    assert x3.shape == (3, 4, 4)
    np.testing.assert_allclose(x3[:, 0, 0].numpy(), [200 / 255, 100 / 255, 50 / 255], rtol=0, atol=1e-7)
    grey = read_image(tmp_path / "c.png", channels=1)
    # PIL's L = (299 R + 587 G + 114 B) / 1000, rounded
    expected = round((299 * 200 + 587 * 100 + 114 * 50) / 1000) / 255
    assert grey.shape == (1, 4, 4) and abs(float(grey[0, 0, 0]) - expected) < 1e-7
    save(tmp_path / "g.png", np.full((4, 4), 77, dtype=np.uint8))
    g3 = read_image(tmp_path / "g.png", channels=3)
    assert g3.shape == (3, 4, 4) and torch.all(g3 == 77 / 255)


def test_folders_are_recursive_and_sorted_and_skip_other_files(tmp_path):
    for name in ["b.png", "a.png", "sub/c.jpg"]:
        save(tmp_path / "imgs" / name, np.zeros((3, 3), dtype=np.uint8))
    (tmp_path / "imgs" / "notes.txt").write_text("x")
    files = list_images(tmp_path / "imgs")
    assert [f.relative_to(tmp_path / "imgs").as_posix() for f in files] == ["a.png", "b.png", "sub/c.jpg"]
    assert list_images([tmp_path / "imgs" / "b.png", tmp_path / "imgs"])[0].name == "b.png"


def test_batches_keep_order_and_equal_single_reads(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 7, 7), dtype=np.uint8)
    for i, p in enumerate(pixels):
        save(tmp_path / f"{i}.png", p)
    files = list_images(tmp_path)
    batches = list(iter_image_batches(files, 1, batch_size=2))
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    stacked = torch.cat(batches)
    np.testing.assert_array_equal(stacked[:, 0].numpy(), pixels.astype(np.float32) / 255)
    torch.testing.assert_close(load_images(tmp_path, 1), stacked, rtol=0, atol=0)


def test_mixed_sizes_need_a_size_and_resize_each_image_alone(tmp_path):
    save(tmp_path / "a.png", np.full((8, 8), 255, dtype=np.uint8))
    save(tmp_path / "b.png", np.tile(np.arange(0, 240, 20, dtype=np.uint8), (6, 1)))  # 6 x 12
    with pytest.raises(ValueError, match="b.png: size 12x6 differs from the first image's 8x8; .*--size"):
        load_images(tmp_path, 1)
    x = load_images(tmp_path, 1, size=4)
    assert x.shape == (2, 1, 4, 4)
    alone = read_image(tmp_path / "b.png", 1, size=4)
    torch.testing.assert_close(x[1], alone, rtol=0, atol=0)
    # independent reference: the model's own resize of the unresized image
    raw = read_image(tmp_path / "b.png", 1).unsqueeze(0)
    ref = torch.nn.functional.interpolate(raw, size=(4, 4), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(alone, ref, rtol=0, atol=0)
    assert torch.all(x[0] == 1.0)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="image .*missing.png does not exist"):
        list_images(tmp_path / "missing.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="image folder .*empty: no image files"):
        list_images(tmp_path / "empty")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="image .*bad.png: cannot be decoded"):
        read_image(tmp_path / "bad.png", 1)
    save(tmp_path / "ok.png", np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="channels: expected 1 or 3"):
        read_image(tmp_path / "ok.png", 2)
    with pytest.raises(ValueError, match="size: expected a positive integer"):
        list(iter_image_batches([tmp_path / "ok.png"], 1, size=0))
