"""Frozen-backbone features: computed once per split, cached, and trained on by the hash head alone.

With `train.freeze_backbone`, every model of the comparison matrix shares one pretrained
backbone that is never updated, so its pooled features can be computed once (the `features`
stage) and each model trains only its hash head on them: seconds per model on a CPU instead of
hours of fine-tuning. The cache is keyed by what fixes the features: backbone, its options,
weights, input size, channels, and the manifest's content hash (which covers image content).

A `Hasher` maps a batch of pooled features `[B, d]` straight to its head (see `Hasher.features`),
so the training loop and the evaluation run unchanged on a `FeatureSet`; the saved model still
holds the backbone and encodes images exactly as the head saw their features.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nhl import atomic
from nhl.data.manifest import SPLITS, read_manifest

META_NAME = "features.json"
FORMAT = "nhl-features/1"


class FeatureSet(Dataset):
    """Cached features of one split: items `(features float32 [d], labels float32 [C], index)`;
    `in_channels` is the channel count of the images they came from."""

    def __init__(self, features: np.ndarray, labels: torch.Tensor, in_channels: int) -> None:
        if len(features) != len(labels):
            raise ValueError(f"features: {len(features)} rows for {len(labels)} labelled items")
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.labels = labels
        self.in_channels = in_channels  # of the images the features came from (the model's input)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.features[index], self.labels[index], index


def weights_id(pretrained: bool | str, seed: int) -> str:
    """What fixes the backbone's weights: the default pretrained file, a given file's content, or
    the seed of a random initialisation."""
    if pretrained is True:
        return "pretrained:default"
    if pretrained is False:
        return f"random:seed={seed}"
    from nhl.data.filesource import file_digest

    return f"file:sha256:{file_digest(pretrained)}"


def feature_key(
    backbone: str,
    backbone_params: dict,
    pretrained: bool | str,
    input_size: int | None,
    in_channels: int,
    content_hash: str,
    seed: int = 0,
) -> dict[str, Any]:
    """The fields that fix the features, plus `key`, a short hash of them."""
    fields = {
        "backbone": backbone,
        "backbone_params": dict(backbone_params),
        "weights": weights_id(pretrained, seed),
        "input_size": input_size,
        "in_channels": in_channels,
        "content_hash": content_hash,
    }
    text = json.dumps(fields, sort_keys=True)
    return {**fields, "key": hashlib.sha256(text.encode()).hexdigest()[:20]}


@torch.no_grad()
def extract_features(model, dataset: Dataset, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Pooled backbone features `[N, d]` of a dataset of images, the backbone in eval mode."""
    model = model.to(device).eval()
    out = [
        model.features(images.to(device)).cpu().numpy()
        for images, *_ in DataLoader(dataset, batch_size=batch_size, shuffle=False)
    ]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.backbone.feature_dim), np.float32)


def build_features(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    backbone: str,
    backbone_params: dict,
    pretrained: bool | str,
    input_size: int | None,
    seed: int = 0,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Write `<split>.npy` for every split and `features.json` into `out` (replaced atomically).

    With `cache_dir`, features are first looked up in `<cache_dir>/<key>/` and stored there after
    computing, so a rerun with the same backbone, weights, input size and data reuses them.
    Returns the meta written (with `reused` and `seconds`).
    """
    from nhl.data.dataset import ManifestDataset, load_split
    from nhl.models.hasher import Hasher, HasherSpec
    from nhl.training import seed_everything

    _, meta = read_manifest(manifest)
    probe = load_split(manifest, "train")
    in_channels = int(probe[0][0].shape[0])
    key = feature_key(backbone, backbone_params, pretrained, input_size, in_channels, meta["content_hash"], seed)
    start = time.monotonic()
    cached = Path(cache_dir) / key["key"] if cache_dir is not None else None
    reused = cached is not None and (cached / META_NAME).is_file()
    with atomic.directory(out) as tmp:
        if reused:
            assert cached is not None, "reused implies a cache directory holding this key"
            for split in SPLITS:
                shutil.copyfile(cached / f"{split}.npy", tmp / f"{split}.npy")
            dim = int(np.load(tmp / "train.npy", mmap_mode="r").shape[1])
        else:
            seed_everything(seed)  # the Trainer's own initialisation: the same backbone weights
            model = Hasher(
                HasherSpec(backbone, in_channels, (8,), dict(backbone_params), input_size), pretrained=pretrained
            )
            dim = model.backbone.feature_dim
            frame, _ = read_manifest(manifest)
            unique = frame.drop_duplicates("item_id").reset_index(drop=True)
            everything = ManifestDataset(
                unique,
                probe.labels.shape[1],
                images=probe.images,
                root=probe.root,
                channels=probe.channels,
                size=probe.size,
            )
            computed = extract_features(model, everything, batch_size, device)  # an item in two splits: once
            row = {item: n for n, item in enumerate(unique["item_id"])}
            for split in SPLITS:
                ids = frame.loc[frame["split"] == split, "item_id"]
                np.save(tmp / f"{split}.npy", computed[[row[i] for i in ids]])
        record = {"format": FORMAT, "enabled": True, **key, "feature_dim": dim}
        (tmp / META_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    if cached is not None and not reused:
        with atomic.directory(cached) as tmp:
            for split in SPLITS:
                shutil.copyfile(Path(out) / f"{split}.npy", tmp / f"{split}.npy")
            (tmp / META_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return {**record, "reused": reused, "seconds": time.monotonic() - start}


def write_disabled(out: str | os.PathLike) -> None:
    """The `features` stage's output when `train.freeze_backbone` is off: a marker file only."""
    with atomic.directory(out) as tmp:
        (tmp / META_NAME).write_text(json.dumps({"format": FORMAT, "enabled": False}) + "\n")


def load_features(
    features: str | os.PathLike, manifest: str | os.PathLike, split: str, expect: dict[str, Any]
) -> FeatureSet:
    """The cached features of `split`, checked against `expect` (backbone, backbone_params,
    input_size, and the manifest's content hash): a stale cache is a one-line error."""
    from nhl.data.dataset import load_split

    path = Path(features) / META_NAME
    if not path.is_file():
        raise FileNotFoundError(f"feature cache {path} not found: run the features stage first")
    record = json.loads(path.read_text())
    if not record.get("enabled"):
        raise ValueError(f"feature cache {features} is disabled: set train.freeze_backbone: true and rerun features")
    _, meta = read_manifest(manifest)
    expect = {**expect, "content_hash": meta["content_hash"]}
    stale = sorted(k for k, v in expect.items() if record.get(k) != v)
    if stale:
        raise ValueError(
            f"feature cache {features} was computed for other settings ({', '.join(stale)} differ); "
            f"rerun the features stage"
        )
    labels = load_split(manifest, split).labels
    return FeatureSet(np.load(Path(features) / f"{split}.npy"), labels, int(record["in_channels"]))
