"""A complete hashing network (backbone + nested head), its codes, and its file format."""

from __future__ import annotations

import os
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

    def __init__(self, spec: HasherSpec, pretrained: bool | str = False) -> None:
        super().__init__()
        if spec.input_size is not None and (not isinstance(spec.input_size, int) or spec.input_size < 1):
            raise ValueError(f"input_size: expected a positive integer or None, got {spec.input_size!r}")
        self.spec = HasherSpec(spec.backbone, spec.in_channels, tuple(check_lengths(spec.lengths)),
                               dict(spec.backbone_kwargs), spec.input_size)
        self.backbone = build_backbone(spec.backbone, in_channels=spec.in_channels,
                                       pretrained=pretrained, **spec.backbone_kwargs)
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
def encode_loader(model: Hasher, loader, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Encode every batch of a loader yielding `(images, labels, index)`: returns (codes int8, labels float)."""
    codes, labels = [], []
    for images, batch_labels, *_ in loader:
        codes.append(model.encode(images.to(device)).cpu())
        labels.append(batch_labels.float())
    if not codes:
        raise ValueError("encode: the data loader yielded no items (empty split?)")
    return torch.cat(codes), torch.cat(labels)


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
    """Rebuild a model saved by `save_hasher`; returns (model in eval mode, extra metadata)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated or not a torch file
        reason = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else ""
        raise ValueError(f"model file {path}: cannot be read as an nhl model ({type(err).__name__}: {reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"model file {path}: not an nhl model (expected format {MODEL_FORMAT!r})")
    spec_dict = dict(payload["spec"])
    spec_dict["lengths"] = tuple(spec_dict["lengths"])
    model = Hasher(HasherSpec(**spec_dict))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"model file {path}: weights do not match its configuration ({first})") from None
    model.eval()
    return model, dict(payload.get("extra", {}))
