"""Sources `imagefolder` and `imagecsv`: every image mode becomes the right RGB pixels, and each
kind of bad input is a one-line error naming the file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nhl.data.dataset import ManifestDataset
from nhl.data.sources import load

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _pixels(source, rel: str, size: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3] of one item as the training dataset gives it (channels=3)."""
    frame = pd.DataFrame(
        {"item_id": range(len(source)), "path": source.paths, "labels": source.frame()["labels"], "split": "train"}
    )
    dataset = ManifestDataset(frame, source.num_classes, root=source.root, channels=3, size=size)
    image = dataset[source.paths.index(rel)][0]
    return np.rint(image.permute(1, 2, 0).numpy() * 255).astype(np.int64)


def _halves(height: int, width: int) -> np.ndarray:
    """Left half red, right half blue."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = BLUE
    return pixels


@pytest.fixture()
def folder(tmp_path):
    """A class folder per mode: EXIF-rotated JPEG, palette, CMYK, 16-bit, grey, RGBA; plus noise."""
    root = tmp_path / "photos"
    for name in ("cat", "dog", "owl"):
        (root / name).mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: rotate 90 degrees clockwise to display
    Image.fromarray(_halves(16, 32)).save(root / "cat" / "rotated.jpg", exif=exif, quality=95)
    palette = Image.new("P", (4, 2))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putdata([0, 1, 1, 0, 1, 1, 0, 0])
    palette.save(root / "cat" / "palette.png")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(root / "dog" / "cmyk.jpg", quality=95)  # pure red ink
    Image.fromarray(np.array([[0, 257 * 100], [65535, 257 * 7]], dtype=np.uint16)).save(root / "dog" / "deep.png")
    Image.fromarray(np.full((3, 5), 77, dtype=np.uint8)).save(root / "owl" / "grey.PNG")
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 255, 0, 255)  # opaque green; the rest fully transparent
    Image.fromarray(rgba, "RGBA").save(root / "owl" / "alpha.png")
    (root / "owl" / "notes.txt").write_text("not an image, and not an image name")
    (root / "owl" / ".hidden.png").write_bytes(b"ignored: hidden")
    (root / ".thumbnails").mkdir()
    return root


def test_imagefolder_classes_sorted_and_noise_ignored(folder):
    source = load("imagefolder", folder)
    assert source.class_names == ("cat", "dog", "owl")
    assert source.paths == (
        "cat/palette.png",
        "cat/rotated.jpg",
        "dog/cmyk.jpg",
        "dog/deep.png",
        "owl/alpha.png",
        "owl/grey.PNG",
    )
    np.testing.assert_array_equal(source.labels.argmax(1), [0, 0, 1, 1, 2, 2])
    assert source.channels == 3 and source.images_hash.startswith("sha256:")


def test_every_mode_becomes_the_right_rgb_pixels(folder):
    source = load("imagefolder", folder)
    rotated = _pixels(source, "cat/rotated.jpg")
    assert rotated.shape == (32, 16, 3)  # displayed upright: 16 wide, 32 high
    assert np.abs(rotated[2, 8] - RED).max() < 12  # the red left half is now on top
    assert np.abs(rotated[-3, 8] - BLUE).max() < 12
    np.testing.assert_array_equal(
        _pixels(source, "cat/palette.png")[0, :, :], [[10, 20, 30], [200, 100, 50], [200, 100, 50], [10, 20, 30]]
    )
    assert np.abs(_pixels(source, "dog/cmyk.jpg") - RED).max() < 12
    np.testing.assert_array_equal(_pixels(source, "dog/deep.png")[..., 0], [[0, 100], [255, 7]])
    assert np.all(_pixels(source, "owl/grey.PNG") == 77)
    np.testing.assert_array_equal(
        _pixels(source, "owl/alpha.png")[:, :, :].reshape(4, 3),
        [[0, 255, 0], [255, 255, 255], [255, 255, 255], [255, 255, 255]],
    )


def test_any_size_is_resized_for_the_model(folder):
    source = load("imagefolder", folder, size=8)
    assert source.image_size == 8
    assert _pixels(source, "cat/rotated.jpg", size=8).shape == (8, 8, 3)
    assert _pixels(source, "owl/grey.PNG", size=8).shape == (8, 8, 3)


def test_imagefolder_bad_input_names_the_file(folder):
    (folder / "owl" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
    with pytest.raises(ValueError) as err:
        load("imagefolder", folder)
    assert "\n" not in str(err.value) and "owl/broken.jpg: cannot be decoded" in str(err.value)
    assert "allow_missing" in str(err.value)
    skipped = load("imagefolder", folder, allow_missing=True)
    assert skipped.missing == ("owl/broken.jpg",) and "owl/broken.jpg" not in skipped.paths
    (folder / "owl" / "broken.jpg").unlink()
    (folder / "empty").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*photos/empty has no image files"):
        load("imagefolder", folder)


def test_imagecsv_multi_label_vocabulary_and_errors(folder):
    (folder / "tags.csv").write_text(
        "path,label\ncat/palette.png,cat|indoor\ndog/cmyk.jpg, dog \nowl/grey.PNG,owl|indoor|night\n"
    )
    source = load("imagecsv", folder, csv="tags.csv")
    assert source.class_names == ("cat", "dog", "indoor", "night", "owl")
    np.testing.assert_array_equal(source.labels, [[1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 1, 1]])
    assert np.all(_pixels(source, "owl/grey.PNG") == 77)

    (folder / "tags.csv").write_text("path,label\ncat/palette.png,cat\ngone/missing.jpg,dog\n")
    with pytest.raises(ValueError, match=r"image .*gone/missing.jpg not found \(.*tags.csv line 3\)"):
        load("imagecsv", folder, csv="tags.csv")
    assert load("imagecsv", folder, csv="tags.csv", allow_missing=True).missing == ("gone/missing.jpg",)
    (folder / "tags.csv").write_text("path,label\ncat/palette.png,\n")
    with pytest.raises(ValueError, match=r"tags.csv line 2: image cat/palette.png has no label"):
        load("imagecsv", folder, csv="tags.csv")
    (folder / "tags.csv").write_text("file,tag\ncat/palette.png,cat\n")
    with pytest.raises(ValueError, match=r"tags.csv: no column 'path'; columns are \['file', 'tag'\]"):
        load("imagecsv", folder, csv="tags.csv")
    assert load("imagecsv", folder, csv="tags.csv", path_column="file", label_column="tag").paths == (
        "cat/palette.png",
    )
    (folder / "tags.csv").write_text("path,label\n../outside.png,cat\n")
    with pytest.raises(ValueError, match=r"tags.csv line 2: path '../outside.png' leads outside the data root"):
        load("imagecsv", folder, csv="tags.csv")
