"""Frozen-backbone features: the cache is reused and invalidated by what fixes the features, and
head-only training on cached features gives the codes the full model gives on images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nhl.data.dataset import load_split
from nhl.data.manifest import read_manifest, write_manifest
from nhl.features import build_features, feature_key, load_features
from nhl.models.hasher import to_codes
from nhl.training import TrainConfig, train_model

SMALL = {"backbone": "smallcnn", "backbone_params": {"width": 8}, "pretrained": False, "input_size": None}
EXPECT = {k: SMALL[k] for k in ("backbone", "backbone_params", "input_size")}


def _build(manifest, out, cache, **changes):
    settings = {**SMALL, **changes}
    return build_features(
        manifest,
        out,
        settings["backbone"],
        settings["backbone_params"],
        settings["pretrained"],
        settings["input_size"],
        seed=0,
        cache_dir=cache,
    )


def test_cache_is_reused_and_invalidated_by_backbone_input_size_and_manifest(digits_manifest_dir, tmp_path):
    cache = tmp_path / "cache"
    first = _build(digits_manifest_dir, tmp_path / "a", cache)
    again = _build(digits_manifest_dir, tmp_path / "b", cache)
    assert not first["reused"] and again["reused"] and again["key"] == first["key"]
    np.testing.assert_array_equal(np.load(tmp_path / "a/query.npy"), np.load(tmp_path / "b/query.npy"))
    sizes = dict(json.loads((digits_manifest_dir / "manifest.json").read_text())["sizes"])
    assert np.load(tmp_path / "a/database.npy").shape == (sizes["database"], 256)  # smallcnn's feature_dim
    for changes in ({"input_size": 16}, {"backbone_params": {"width": 16}}, {"pretrained": True}):
        if changes.get("pretrained"):  # smallcnn has no pretrained weights: compare keys only
            key = feature_key("smallcnn", {"width": 8}, True, None, 1, first["content_hash"])
            assert key["key"] != first["key"]
            continue
        other = _build(digits_manifest_dir, tmp_path / "c", cache, **changes)
        assert not other["reused"] and other["key"] != first["key"]
    assert feature_key("efficientnet_lite0", {"width": 8}, False, None, 1, first["content_hash"])["key"] != first["key"]
    frame, meta = read_manifest(digits_manifest_dir)
    frame.loc[0, "labels"] = "9" if frame.loc[0, "labels"] != "9" else "8"  # another manifest, same settings
    write_manifest(tmp_path / "m2", frame, meta)
    changed = _build(tmp_path / "m2", tmp_path / "d", cache)
    assert not changed["reused"] and changed["content_hash"] != first["content_hash"]


def test_a_stale_cache_is_a_one_line_error(digits_manifest_dir, tmp_path):
    _build(digits_manifest_dir, tmp_path / "f", None)
    with pytest.raises(ValueError, match=r"computed for other settings \(input_size differ\); rerun the features"):
        load_features(tmp_path / "f", digits_manifest_dir, "train", {**EXPECT, "input_size": 16})


def test_head_on_cached_features_gives_the_full_models_codes(digits_manifest_dir, tmp_path):
    _build(digits_manifest_dir, tmp_path / "f", None)
    sets = {s: load_features(tmp_path / "f", digits_manifest_dir, s, EXPECT) for s in ("train", "val", "query")}
    config = TrainConfig(
        loss="csq",
        lengths=(8, 16),
        epochs=2,
        batch_size=64,
        seed=0,
        freeze_backbone=True,
        backbone="smallcnn",
        backbone_params={"width": 8},
        centers="prefix",
    )
    cached = train_model(config, sets["train"], sets["val"], sets["train"], tmp_path / "w1", progress=False)
    images = load_split(digits_manifest_dir, "query")
    live_codes = cached.model.encode(torch.stack([images[i][0] for i in range(len(images))]))
    head_codes = to_codes(cached.model.head.linear(sets["query"].features))
    assert torch.equal(live_codes, head_codes)  # the saved model encodes images as its head saw them
    # the same frozen training on images (features computed live in every step) gives the same model
    live = train_model(
        config,
        load_split(digits_manifest_dir, "train"),
        load_split(digits_manifest_dir, "val"),
        load_split(digits_manifest_dir, "train"),
        tmp_path / "w2",
        progress=False,
    )
    torch.testing.assert_close(live.model.head.linear.weight, cached.model.head.linear.weight, rtol=1e-4, atol=1e-5)
    assert torch.equal(live.model.encode(torch.stack([images[i][0] for i in range(len(images))])), live_codes)
    for name, value in live.model.backbone.state_dict().items():  # the backbone never moved
        torch.testing.assert_close(value, cached.model.backbone.state_dict()[name], rtol=0, atol=0)


def test_retrieval_grids_encode_a_frozen_model_from_the_cache(digits_manifest_dir, tmp_path, monkeypatch):
    """The report's grids give the same hits from cached features as from images, and with the
    cache they never run the backbone (the cost that made an own-images report take minutes)."""
    from dataclasses import asdict

    from nhl.models.hasher import Hasher, save_hasher
    from nhl.report.retrieval import collect_examples

    _build(digits_manifest_dir, tmp_path / "f", None)
    sets = {s: load_features(tmp_path / "f", digits_manifest_dir, s, EXPECT) for s in ("train", "val")}
    config = TrainConfig(
        loss="csq",
        lengths=(8, 16),
        epochs=1,
        batch_size=64,
        seed=0,
        freeze_backbone=True,
        backbone="smallcnn",
        backbone_params={"width": 8},
        centers="prefix",
    )
    result = train_model(config, sets["train"], sets["val"], sets["train"], tmp_path / "w", progress=False)
    (tmp_path / "models" / "csq").mkdir(parents=True)
    save_hasher(result.model, tmp_path / "models" / "csq" / "csq-nhl-full.pt", extra={"config": asdict(config)})

    def grids(**kwargs):
        return collect_examples(
            tmp_path / "models", digits_manifest_dir, ["csq"], ["nhl-full"], queries=2, topk=5, **kwargs
        ).data["losses"]["csq"]["rows"]

    from_images = grids()
    calls = []
    backbone_forward = Hasher.features
    monkeypatch.setattr(
        Hasher, "features", lambda self, x: calls.append(x.dim()) or backbone_forward(self, x)
    )  # records whether images (4-d) or cached features (2-d) reach the model
    from_cache = grids(features=tmp_path / "f")
    assert from_cache == from_images
    assert calls and set(calls) == {2}
