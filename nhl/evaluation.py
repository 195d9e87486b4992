"""Evaluate a trained model on the query/database splits: the metrics file of architecture.md.

One forward pass encodes each split with the longest code; every length is then scored from its
prefix, so a nested model's five lengths cost one encoding. Model selection never happens here:
the checkpoint was chosen on the val split during training.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

from nhl.metrics import evaluate_nested, precision_recall_curve
from nhl.models.hasher import Hasher, encode_loader
from nhl.timing import phase

if TYPE_CHECKING:
    from nhl.data.dataset import ManifestDataset
    from nhl.features import FeatureSet


def encode_split(
    model: Hasher, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes int8 {-1,+1} [N, max bits], labels float [N, C]) of a dataset, in eval mode."""
    model = model.to(device).eval()
    codes, labels = encode_loader(model, DataLoader(dataset, batch_size=batch_size, shuffle=False), device)
    assert labels is not None, "encode_loader keeps the labels by default (keep_labels=True)"
    return codes, labels


def _encode_compact(model: Hasher, dataset: Dataset, batch_size: int, device: str | torch.device):
    """(codes, labels) with the dataset's compact labels (ids / CSR) when it has them."""
    compact = getattr(dataset, "compact_labels", None)
    if compact is None:
        return encode_split(model, dataset, batch_size, device)
    model = model.to(device).eval()
    codes, _ = encode_loader(
        model, DataLoader(dataset, batch_size=batch_size, shuffle=False), device, keep_labels=False
    )
    return codes, compact()


def _num_classes(dataset: ManifestDataset | FeatureSet) -> int:
    """Label columns of a split, read from its sparse labels when it has them (no dense matrix)."""
    labels = getattr(dataset, "label_csr", None)
    return int((labels if labels is not None else dataset.labels).shape[1])


def evaluate_model(
    model: Hasher,
    query: Dataset,
    database: Dataset,
    topk: int | None = None,
    pr_lengths: tuple[int, ...] = (16, 64),
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Per-length metrics {"16": {"map", "p_at_100", "p_at_r2"}} and PR-curve rows for `pr_lengths`.

    PR rows are `{"bits", "radius", "precision", "recall"}` for each Hamming radius (hash
    lookup), for the lengths in `pr_lengths` that the model has.
    """
    q_codes, q_labels = _encode_compact(model, query, batch_size, device)
    d_codes, d_labels = _encode_compact(model, database, batch_size, device)
    lengths = model.lengths
    per_length = evaluate_nested(q_codes, q_labels, d_codes, d_labels, lengths, topk=topk)
    bits = {str(k): values for k, values in per_length.items()}
    rows: list[dict[str, Any]] = []
    for k in (k for k in pr_lengths if k in lengths):
        curve = precision_recall_curve(q_codes[:, :k], q_labels, d_codes[:, :k], d_labels)
        rows += [
            {"bits": k, "radius": int(r), "precision": float(p), "recall": float(c)}
            for r, p, c in zip(curve["radius"], curve["precision"], curve["recall"], strict=True)
        ]
    return bits, rows


def metrics_record(
    model_id: str, extra: dict[str, Any], bits: dict[str, dict[str, float]], topk: int | None
) -> dict[str, Any]:
    """The `metrics/<model_id>.json` content (architecture.md), from a model file's metadata."""
    config = extra.get("config", {})
    return {
        "model_id": model_id,
        "loss": config.get("loss"),
        "mode": extra.get("mode"),
        "variant": model_id[len(str(config.get("loss"))) + 1 :] if config.get("loss") else None,
        "lengths": list(config.get("lengths", [])),
        "topk": topk,
        "bits": bits,
        "train_seconds": extra.get("train_seconds"),
        "peak_memory_mb": extra.get("peak_memory_mb"),
        "peak_memory_delta_mb": extra.get("peak_memory_delta_mb"),
        "epochs": extra.get("epochs"),
        "best_epoch": extra.get("best_epoch"),
        "best_val_map_mean": extra.get("best_val_map_mean"),
        "seconds_per_epoch": (extra["train_seconds"] / extra["epochs"]) if extra.get("epochs") else None,
        "mlflow_run_id": extra.get("mlflow_run_id"),
    }


def evaluate_file(
    model_path: str | os.PathLike,
    manifest: str | os.PathLike,
    topk: int | None = None,
    pr_lengths: tuple[int, ...] = (16, 64),
    device: str = "cpu",
    source: str | os.PathLike | None = None,
    features: str | os.PathLike | None = None,
    splits: tuple[ManifestDataset, ManifestDataset] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Load a model file, score it on the manifest's query vs database splits.

    A model trained with a frozen backbone is scored on the cached `features` (the features
    stage's directory) when given: the same codes as from images, without the backbone's cost.
    `splits` are the manifest's (query, database) image splits already loaded (shared by the
    models one process evaluates).
    Returns (metrics record, PR rows, per-epoch history rows of its training)."""
    from nhl.data.dataset import load_split
    from nhl.models.hasher import load_hasher

    query: ManifestDataset | FeatureSet
    database: ManifestDataset | FeatureSet
    with phase("data"):
        model, extra = load_hasher(model_path, map_location=device)
        config = extra.get("config") or {}
        if features is not None and config.get("freeze_backbone"):
            from nhl.features import load_features

            expect = {
                "backbone": model.spec.backbone,
                "backbone_params": dict(model.spec.backbone_kwargs),
                "input_size": model.spec.input_size,
            }
            query = load_features(features, manifest, "query", expect)
            database = load_features(features, manifest, "database", expect)
        elif splits is not None:
            query, database = splits
        else:
            query = load_split(manifest, "query", source=source)
            database = load_split(manifest, "database", source=source)
    if _num_classes(query) != _num_classes(database):
        raise ValueError(f"manifest {manifest}: query and database have different label widths")
    if getattr(query, "in_channels", None) is None and query[0][0].shape[0] != model.spec.in_channels:
        raise ValueError(
            f"model file {model_path}: expects {model.spec.in_channels}-channel images, "
            f"the manifest's images have {query[0][0].shape[0]}"
        )
    with phase("compute"):
        bits, rows = evaluate_model(model, query, database, topk=topk, pr_lengths=pr_lengths, device=device)
    model_id = extra.get("model_id") or os.path.splitext(os.path.basename(model_path))[0]
    return metrics_record(model_id, extra, bits, topk), rows, history_rows(extra)


def history_rows(extra: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per training epoch (loss, val mAP per length, mean adaptive weights), for plots."""
    rows = []
    for record in extra.get("history", []):
        row: dict[str, Any] = {"epoch": record["epoch"], "train_loss": record.get("train_loss")}
        for k, value in (record.get("val_map") or {}).items():
            row[f"val_map_{k}"] = value
        if "val_map_mean" in record:
            row["val_map_mean"] = record["val_map_mean"]
        weights = record.get("weights") or {}
        for i, value in enumerate(weights.get("mean_weights", [])):
            row[f"weight_{i}"] = value
        if "reduced_fraction" in weights:
            row["weights_reduced_fraction"] = weights["reduced_fraction"]
        rows.append(row)
    return rows


def pr_rows_csv(rows: list[dict[str, Any]]) -> str:
    """PR rows as CSV text (`bits,radius,precision,recall`), the format `dvc plots` reads."""
    lines = ["bits,radius,precision,recall"]
    lines += [f"{r['bits']},{r['radius']},{r['precision']:.6f},{r['recall']:.6f}" for r in rows]
    return "\n".join(lines) + "\n"
