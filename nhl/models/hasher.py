"""A complete hashing network (backbone + nested head), its codes, and its file format."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nhl.models.backbones import build_backbone
from nhl.models.head import NestedHashHead, check_lengths

MODEL_FORMAT = "nhl-hasher/1"


@dataclass(frozen=True)
class HasherSpec:
    """Everything needed to rebuild a `Hasher` before loading its weights."""

    backbone: str
    in_channels: int
    lengths: tuple[int, ...]
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: int | None = None  # resize inputs to this side first; None keeps their size


class Hasher(nn.Module):
    """Images in [0, 1] -> nested raw codes; `encode` gives the longest {-1, +1} code.

    The model carries its own preprocessing (optional resize, then the backbone's mean/std), so
    datasets stay model-agnostic and a single image is encoded exactly as it would be in a batch.
    The k-bit code of a nested model is `encode(x)[:, :k]`; only the longest code needs storing.
    """

    mean: torch.Tensor  # buffers (registered in __init__)
    std: torch.Tensor

    def __init__(self, spec: HasherSpec, pretrained: bool | str = False) -> None:
        super().__init__()
        if spec.input_size is not None and (not isinstance(spec.input_size, int) or spec.input_size < 1):
            raise ValueError(f"input_size: expected a positive integer or None, got {spec.input_size!r}")
        self.spec = HasherSpec(
            spec.backbone,
            spec.in_channels,
            tuple(check_lengths(spec.lengths)),
            dict(spec.backbone_kwargs),
            spec.input_size,
        )
        self.backbone = build_backbone(
            spec.backbone, in_channels=spec.in_channels, pretrained=pretrained, **spec.backbone_kwargs
        )
        self.head = NestedHashHead(self.backbone.feature_dim, list(self.spec.lengths))
        self.register_buffer("mean", torch.tensor(self.backbone.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(self.backbone.std, dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def lengths(self) -> list[int]:
        return list(self.spec.lengths)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Resize (if `input_size` is set) and normalise a batch of [0, 1] images `[B, C, H, W]`."""
        if x.dim() != 4 or x.shape[1] != self.spec.in_channels:
            raise ValueError(f"images: expected shape [B, {self.spec.in_channels}, H, W], got {list(x.shape)}")
        size = self.spec.input_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features `[B, d]` of a batch of [0, 1] images; a batch that already is pooled
        features `[B, d]` (a frozen backbone's cache, nhl.features) passes through unchanged."""
        if x.dim() == 2 and x.shape[1] == self.backbone.feature_dim:
            return x
        return self.backbone(self.prepare(x))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.head(self.features(x))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Binary codes `[B, max bits]` in {-1, +1} (sign, with 0 mapped to +1), in eval mode."""
        was_training = self.training
        self.eval()
        try:
            raw = self.head.linear(self.features(x))
        finally:
            self.train(was_training)
        return to_codes(raw)


def to_codes(raw: torch.Tensor) -> torch.Tensor:
    """Sign of raw outputs as int8 {-1, +1}; exact zeros become +1 so every bit is defined."""
    return torch.where(raw >= 0, 1, -1).to(torch.int8)


@torch.no_grad()
def encode_loader(
    model: Hasher, loader, device: torch.device | str = "cpu", keep_labels: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode every batch of a loader yielding `(images, labels, index)`: returns (codes int8, labels float).

    `keep_labels=False` returns None for the labels (callers that take compact labels from the
    dataset itself; with many classes the stacked multi-hot rows would be [N, C])."""
    codes, labels = [], []
    for images, batch_labels, *_ in loader:
        codes.append(model.encode(images.to(device)).cpu())
        if keep_labels:
            labels.append(batch_labels.float())
    if not codes:
        raise ValueError("encode: the data loader yielded no items (empty split?)")
    return torch.cat(codes), (torch.cat(labels) if keep_labels else None)


def save_hasher(model: Hasher, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write the model atomically (temp file in the same directory, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MODEL_FORMAT,
        "spec": asdict(model.spec),
        "state_dict": model.state_dict(),
        "extra": extra or {},
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_hasher(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[Hasher, dict[str, Any]]:
    """Rebuild a model saved by `save_hasher`; returns (model in eval mode, extra metadata).

    The file is read with `torch.load(weights_only=True)`: only tensors and plain values (dict,
    list, tuple, str, number, None) are accepted, so a crafted file cannot run code here. A file
    holding anything else is refused with a one-line error naming the offending object and the
    command that converts a trusted older file (`python -m nhl.models.convert`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    payload = safe_torch_load(path, "model file", map_location)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"model file {path}: not an nhl model (expected format {MODEL_FORMAT!r})")
    spec, state = payload.get("spec"), payload.get("state_dict")
    if (
        not isinstance(spec, dict)
        or not isinstance(state, dict)
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise ValueError(f"model file {path}: not an nhl model (expected a 'spec' dict and a 'state_dict' of tensors)")
    try:
        spec_dict = dict(spec)
        spec_dict["lengths"] = tuple(spec_dict["lengths"])
        with torch.device("meta"):  # shapes only: a spec claiming a huge network allocates nothing
            model = Hasher(HasherSpec(**spec_dict))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"model file {path}: not an nhl model (bad spec: {_first_line(err)})") from None
    expected = {key: (tuple(t.shape), t.dtype) for key, t in model.state_dict().items()}
    found = {key: (tuple(t.shape), t.dtype) for key, t in state.items()}
    if found != expected:
        key = sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found[k]]
        raise ValueError(
            f"model file {path}: weights do not match its configuration (first difference: "
            f"{key[0]}: file {found.get(key[0])}, spec {expected.get(key[0])})"
        )
    model.load_state_dict(state, assign=True)  # the file's tensors become the weights
    model.eval()
    extra = payload.get("extra", {})
    return model, dict(extra) if isinstance(extra, dict) else {}


def safe_torch_load(
    path: str | os.PathLike, what: str, map_location: str | torch.device = "cpu", fix: str | None = None
) -> Any:
    """`torch.load(path, weights_only=True)` with one-line errors: `what` names the file's role.

    A pickle that needs any other global (a class, a function such as `os.system`, a numpy
    scalar) is refused before anything is built from it; the error says which global and how a
    trusted file written by an older nhl can be converted (`fix` replaces that advice).
    """
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        held = f"the Python object {found.group(1)}" if found else "pickled Python objects"
        fix = fix or f"if you trust the file, convert it with: python -m nhl.models.convert {path}"
        raise ValueError(
            f"{what} {path}: refused, it holds {held} and loading it could run code "
            f"(an nhl file holds only tensors and plain values); {fix}"
        ) from None
    except Exception as err:  # noqa: BLE001 - truncated or not a torch file: any reader error is the one-line refusal
        reason = _first_line(err).split(". ")[0]
        tail = f"; {fix}" if fix else ""
        raise ValueError(
            f"{what} {path}: cannot be read as an nhl file ({type(err).__name__}: {reason}){tail}"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
