"""Uploaded bytes -> an image tensor the model takes, refusing bad uploads before decoding them.

The pixel limit is checked on the size the file's header declares (PIL reads only the header
on `open`), so a decompression bomb (a small file declaring a huge image) is refused without
allocating its pixels. (`nhl.images` may grow a shared reader limit; this one can use it then.)
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from nhl.service.engine import RequestError

DEFAULT_MAX_PIXELS = 16_000_000  # 4,000 x 4,000: far above any dataset image here
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_MODES = {1: "L", 3: "RGB"}


def decode_upload(data: bytes, shape: tuple[int, int, int] | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """float32 tensor [C, H, W] in [0, 1] resized to `shape` (the database images' [C, H, W]).

    Raises `RequestError`: 400 for an empty upload or a file that is not an image, 413 for an
    image declaring more than `max_pixels` pixels.
    """
    import torch
    from PIL import Image

    if not data:
        raise RequestError(400, "file: the upload is empty")
    if shape is None:
        raise RequestError(400, "file: this server has no database images to size an upload like (query by item)")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size  # from the header only: nothing decoded yet
    except Image.DecompressionBombError:
        raise RequestError(413, "file: the image declares too many pixels (decompression bomb)") from None
    except (OSError, ValueError, SyntaxError):  # PIL's "cannot identify image file" is an OSError
        raise RequestError(400, "file: not an image PIL can read") from None
    if width * height > max_pixels:
        raise RequestError(413, f"file: image of {width} x {height} pixels is over the limit of {max_pixels:,}")
    channels, h, w = shape
    try:
        pixels = np.asarray(image.convert(_MODES[channels]), dtype=np.float32)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise RequestError(400, "file: the image data cannot be decoded") from None
    tensor = torch.from_numpy(pixels).div_(255.0)
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()
    if tuple(tensor.shape[-2:]) != (h, w):  # the resize nhl.images and Hasher.prepare use
        tensor = torch.nn.functional.interpolate(
            tensor.unsqueeze(0), size=(h, w), mode="bilinear", align_corners=False
        ).squeeze(0)
    return tensor
