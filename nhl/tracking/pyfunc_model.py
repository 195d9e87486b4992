"""The MLflow pyfunc flavour of an nhl model, logged as code ("models from code"), not as a pickle.

`ModelRun.log_model` logs this file as the model's code and the model file (`save_hasher`'s
format) as the artifact `hasher`. MLflow runs this file when it loads the model
(`mlflow.pyfunc.load_model`, `mlflow models serve`); `load_context` then rebuilds the network
with `load_hasher`, which reads tensors and plain values only (`torch.load(weights_only=True)`).

Input (`predict` / `/invocations`): images as
- a float array `[B, C, H, W]` in [0, 1] (uint8 arrays are divided by 255), `[B, H, W]` for grey;
- base64-encoded image files: a list or array of strings, or a DataFrame column `image`,
  decoded exactly as `nhl encode` reads image files (resized to the model's input size if it has one).
Output: `{"<k>": codes [B, k] of -1/+1}` for every code length k of the model, the same codes as
`nhl encode` (the k-bit code of a nested model is the prefix of the longest).
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

from nhl.tracking.models import HASHER_ARTIFACT


class HasherModel(PythonModel):
    """Images in, the code at every length out (see the module doc)."""

    def load_context(self, context) -> None:
        from nhl.models.hasher import load_hasher

        self.model, _ = load_hasher(context.artifacts[HASHER_ARTIFACT])

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would turn them into a schema
        import torch

        images = to_images(model_input, self.model.spec.in_channels, self.model.spec.input_size)
        with torch.inference_mode():
            codes = self.model.encode(images).cpu().numpy()
        return {str(k): codes[:, :k] for k in self.model.lengths}


def to_images(model_input: Any, channels: int, size: int | None):
    """A float32 batch `[B, C, H, W]` in [0, 1] from arrays or base64-encoded image files."""
    import pandas as pd
    import torch

    if isinstance(model_input, pd.DataFrame):
        column = "image" if "image" in model_input.columns else model_input.columns[0]
        model_input = model_input[column].tolist()
    if isinstance(model_input, np.ndarray) and model_input.dtype.kind in "fiu":
        array = model_input.astype(np.float32) / (255.0 if model_input.dtype == np.uint8 else 1.0)
        if array.ndim == 3 and channels == 1:
            array = array[:, None]
        if array.ndim != 4 or array.shape[1] != channels:
            raise ValueError(f"images: expected an array [B, {channels}, H, W], got shape {list(array.shape)}")
        return torch.from_numpy(np.ascontiguousarray(array))
    if isinstance(model_input, np.ndarray):
        model_input = model_input.ravel().tolist()
    if (
        not isinstance(model_input, (list, tuple))
        or not model_input
        or not all(isinstance(item, (str, bytes)) for item in model_input)
    ):
        raise ValueError(
            "images: expected a float array [B, C, H, W] or a non-empty list of base64-encoded image files"
        )
    from nhl.images import read_image

    batch = []
    for position, item in enumerate(model_input):
        try:
            data = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"image {position}: not valid base64") from None
        batch.append(read_image(io.BytesIO(data), channels, size))
    shapes = {tuple(image.shape) for image in batch}
    if len(shapes) > 1:
        raise ValueError(f"images: expected images of one size (the model has no input size), got {sorted(shapes)}")
    return torch.stack(batch)


mlflow.models.set_model(HasherModel())
