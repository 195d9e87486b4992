"""Image files -> [0, 1] tensors `[N, C, H, W]` for a model, as the dataset would give them.

Pixels are read with PIL, converted to grey ("L") or RGB to match the model's channel count and
scaled by 1/255, exactly as `nhl.data.dataset.ManifestDataset` does, so a file encodes to the
same code as the same image in a manifest. A folder may mix image sizes only when `size` is
given: every image is then resized to `size x size` on its own with the resize `Hasher.prepare`
uses (bilinear, align_corners=False), so an image gives the same tensor alone or in a batch.

Every reader of image files in the project opens them through `open_image`, which refuses an
image whose declared size is over the pixel limit before any pixel is decoded (a decompression
bomb), and decodes them through `decode`, which applies the EXIF orientation and converts any
mode (palette, CMYK, RGBA, 16-bit, grey) to grey or RGB.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
_MODES = {1: "L", 3: "RGB"}
DEFAULT_MAX_PIXELS = 100_000_000  # 10,000 x 10,000; a photo of 50 megapixels still passes
MAX_PIXELS_ENV = "NHL_MAX_IMAGE_PIXELS"
_LOCK = threading.Lock()
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
# What PIL's Image.open takes: a file path, or an open binary file (uploaded bytes wrapped in BytesIO).
ImageSource = str | os.PathLike[str] | IO[bytes]


def pixel_limit(max_pixels: int | None = None) -> int:
    """The pixel limit: `max_pixels`, else $NHL_MAX_IMAGE_PIXELS, else `DEFAULT_MAX_PIXELS`."""
    if max_pixels is None:
        text = os.environ.get(MAX_PIXELS_ENV)
        if not text:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(text)
        except ValueError:
            raise ValueError(f"{MAX_PIXELS_ENV}: expected a positive integer, got {text!r}") from None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels: expected a positive integer, got {max_pixels!r}")
    return max_pixels


@contextlib.contextmanager
def open_image(path: ImageSource, max_pixels: int | None = None):
    """The PIL image at `path`, opened lazily: only its header is read here.

    An image declaring more than `pixel_limit(max_pixels)` pixels is refused with a one-line
    ValueError naming the file, before its pixels are decoded; so is a file PIL cannot open.
    """
    from PIL import Image

    limit = pixel_limit(max_pixels)
    try:
        with _LOCK, warnings.catch_warnings():  # PIL's own bomb check steps aside for ours, below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(path)  # reads the header only
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except OSError as err:
        raise ValueError(f"image {path}: cannot be decoded ({err})") from None
    with image:
        width, height = image.size
        if width * height > limit:
            raise ValueError(
                f"image {path}: declared size {width}x{height} = {width * height:,} pixels is over "
                f"the limit of {limit:,} (set {MAX_PIXELS_ENV} to allow it)"
            )
        yield image


def convert(image, mode: str):
    """`image` in `mode` ("L" or "RGB") with its EXIF orientation applied.

    16-bit grey is scaled to 8 bits (not clipped, as PIL's own conversion does); transparent
    images (RGBA, LA, palette with transparency) are composed over white; palette, CMYK, YCbCr,
    bilevel and the rest go through PIL's RGB conversion.
    """
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode in _SIXTEEN_BIT or values.max(initial=0) > 255:
            values = values / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    return image if image.mode == mode else image.convert(mode)


def decode(path: ImageSource, mode: str, max_pixels: int | None = None) -> np.ndarray:
    """uint8 pixels `[H, W]` ("L") or `[H, W, 3]` ("RGB") of the image file at `path`.

    Refuses images over the pixel limit (`open_image`); a file that cannot be decoded is a
    one-line ValueError naming it.
    """
    with open_image(path, max_pixels) as image:
        try:
            return np.asarray(convert(image, mode))
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"image {path}: cannot be decoded ({err})") from None


def list_images(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Image files named by `paths`: files as given, folders searched recursively (sorted)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            inside = sorted(p for p in entry.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise ValueError(f"image folder {entry}: no image files ({', '.join(IMAGE_SUFFIXES)})")
            found += inside
        elif entry.is_file():
            found.append(entry)
        else:
            raise FileNotFoundError(f"image {entry} does not exist")
    return found


def read_image(path: ImageSource, channels: int, size: int | None = None) -> torch.Tensor:
    """One image as float32 `[channels, H, W]` in [0, 1] (`[channels, size, size]` with `size`)."""
    if channels not in _MODES:
        raise ValueError(f"channels: expected 1 or 3, got {channels!r}")
    pixels = np.array(decode(path, _MODES[channels]), dtype=np.float32)
    tensor = torch.from_numpy(pixels).div_(255.0)
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()
    if size is not None and tuple(tensor.shape[-2:]) != (size, size):
        tensor = resize(tensor, size)
    return tensor


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """`[C, H, W]` -> `[C, size, size]`, bilinear (align_corners=False) as `Hasher.prepare` resizes."""
    return torch.nn.functional.interpolate(
        image.unsqueeze(0), size=(size, size), mode="bilinear", align_corners=False
    ).squeeze(0)


def iter_image_batches(
    paths: Sequence[str | os.PathLike], channels: int, size: int | None = None, batch_size: int = 256
) -> Iterator[torch.Tensor]:
    """Batches `[B, channels, H, W]` of the images in `paths`, in order.

    Without `size` every image must have the first image's size (a one-line error names the
    first that differs); with `size` each is resized to `size x size`.
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size: expected a positive integer, got {size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    first: tuple[int, ...] | None = None
    batch: list[torch.Tensor] = []
    for path in paths:
        tensor = read_image(path, channels, size)
        shape = tuple(tensor.shape[-2:])
        first = first or shape
        if shape != first:
            raise ValueError(
                f"image {path}: size {shape[1]}x{shape[0]} differs from the first image's "
                f"{first[1]}x{first[0]}; resize them to one side (--size)"
            )
        batch.append(tensor)
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def load_images(
    paths: str | os.PathLike | Sequence[str | os.PathLike], channels: int, size: int | None = None
) -> torch.Tensor:
    """Every image named by `paths` (files and/or folders) as one tensor `[N, channels, H, W]`."""
    files = list_images(paths)
    return torch.cat(list(iter_image_batches(files, channels, size, batch_size=max(len(files), 1))))
