"""Train one model from a split manifest: the shared path of `pipelines/train.py`, `nhl train` and flows.

It wires the pieces together (datasets of the manifest, the one training loop, the model file,
the MLflow run) and keeps the stage scripts down to argument parsing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nhl.data.dataset import ManifestDataset, load_split
from nhl.models.hasher import save_hasher
from nhl.timing import phase
from nhl.training import TrainConfig, TrainResult, train_model
from nhl.variants import parse_variant

if TYPE_CHECKING:
    from nhl.features import FeatureSet

# Training settings a loss may set for itself (`losses.<name>.train`): they change how long and how
# fast a model learns, never what is compared (lengths, backbone, data, seed, centres, A/D settings).
LOSS_TRAIN_KEYS = ("lr", "epochs", "patience", "weight_decay", "batch_size")


def split_loss_settings(loss: str, settings: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyper-parameters, training overrides) of one loss's settings (`losses.<loss>` in params.yaml).

    The optional `train` sub-mapping holds the loss's own training settings (keys in
    `LOSS_TRAIN_KEYS`); they apply to every model of that loss, baselines and nested alike, so a
    comparison within a loss stays at equal budget. Bad input is a one-line ValueError naming
    `losses.<loss>.train.<key>`.
    """
    settings = dict(settings or {})
    overrides = settings.pop("train", None)
    if overrides is None:
        return settings, {}
    if not isinstance(overrides, dict):
        raise ValueError(
            f"losses.{loss}.train: expected a mapping of training settings "
            f"({', '.join(LOSS_TRAIN_KEYS)}), got {overrides!r}"
        )
    for key in overrides:
        if key not in LOSS_TRAIN_KEYS:
            raise ValueError(
                f"losses.{loss}.train.{key}: not a per-loss setting; expected some of {', '.join(LOSS_TRAIN_KEYS)}"
            )
    return settings, dict(overrides)


def build_train_config(
    section: dict[str, Any], loss: str, variant: str, loss_params: dict[str, Any] | None = None
) -> TrainConfig:
    """A `TrainConfig` from the shared settings (`section`), a loss name and a variant name.

    `section["lengths"]` lists the nested lengths; the variant picks one of them (baseline) or
    all of them with its A/D switches. `loss_params` is the loss's settings (`losses.<loss>`):
    its hyper-parameters, and in an optional `train` sub-mapping training settings that replace
    the shared ones for every model of this loss (`split_loss_settings`).
    """
    from nhl.losses.base import get_loss_class

    get_loss_class(loss)  # unknown loss: one-line error listing the known ones, before any work
    loss_params, overrides = split_loss_settings(loss, loss_params)
    if overrides:
        # validate the overrides on their own, so an error names losses.<loss>.train.<key>
        probe = {key: value for key, value in section.items() if key in LOSS_TRAIN_KEYS}
        probe.update(overrides)
        TrainConfig.from_mapping(probe, where=f"losses.{loss}.train")
    values = {**dict(section), **overrides}
    if "lengths" not in values:
        raise ValueError("train.lengths: missing; expected the list of nested code lengths, e.g. [8, 16, 32, 64, 128]")
    try:
        chosen = parse_variant(variant, values["lengths"])
    except ValueError as err:  # name the params key: "train.lengths: ..."
        raise ValueError(f"train.{err}" if str(err).startswith("lengths:") else str(err)) from None
    for key in ("loss", "adaptive", "distill", "loss_params"):
        if key in values:
            raise ValueError(f"train.{key}: set per model (loss/variant arguments, losses section), not in train")
    values.update(
        loss=loss,
        lengths=list(chosen.lengths),
        adaptive=chosen.adaptive,
        distill=chosen.distill,
        loss_params=dict(loss_params or {}),
    )
    return TrainConfig.from_mapping(values)


def check_output_dir(directory: str | os.PathLike, what: str = "output directory") -> None:
    """Fail before any work when `directory` cannot be created or written: its nearest existing
    ancestor must be a writable folder (a one-line ValueError naming both otherwise)."""
    directory = Path(directory)
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what} {directory}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {directory}: {existing} is not writable")


def train_from_manifest(
    config: TrainConfig,
    manifest: str | os.PathLike,
    model_path: str | os.PathLike,
    model_id: str,
    workdir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    source: str | os.PathLike | None = None,
    track: bool = True,
    tags: dict[str, str] | None = None,
    features: str | os.PathLike | None = None,
    datasets: tuple[ManifestDataset, ManifestDataset] | None = None,
) -> TrainResult:
    """Train on the manifest's `train` split, select on `val` (database: `train`), save the model.

    Under `torchrun` every process trains its share of each global batch; only rank 0 writes the
    model and logs to MLflow. The model file is written atomically and only after training succeeded; the per-epoch
    checkpoints in `workdir` (default: `<model dir>/checkpoints/<model_id>`) are removed once the
    model file exists, so a finished run never leaves a stale checkpoint for `resume` to pick up.
    With `track`, the run is logged to MLflow (params, per-epoch curves, the model); its run id
    is stored in the model file so evaluation can add its metrics to the same run. With
    `config.freeze_backbone` and `features` (the features stage's directory), the head trains on
    the cached features instead of images. `datasets` are the manifest's (train, val) splits
    already loaded (several models trained in one process share them).
    """
    model_path = Path(model_path)
    is_main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes and tracks
    workdir = Path(workdir) if workdir is not None else model_path.parent / "checkpoints" / model_id
    if is_main:
        check_output_dir(model_path.parent, "model directory")
        check_output_dir(workdir, "checkpoint directory")
    train_set: ManifestDataset | FeatureSet
    val_set: ManifestDataset | FeatureSet
    with phase("data"):
        if config.freeze_backbone and features is not None:  # the head alone, on the features stage's cache
            from nhl.features import load_features

            expect = {
                "backbone": config.backbone,
                "backbone_params": dict(config.backbone_params),
                "input_size": config.input_size,
            }
            train_set = load_features(features, manifest, "train", expect)
            val_set = load_features(features, manifest, "val", expect)
        elif datasets is not None:
            train_set, val_set = datasets
        else:
            train_set = load_split(manifest, "train", source=source)
            val_set = load_split(manifest, "val", source=source)
    for name, split in (("train", train_set), ("val", val_set)):
        if len(split) == 0:
            raise ValueError(f"manifest {manifest}: the {name} split is empty; expected at least one item")

    from nhl.tracking import ModelRun  # MLflow is imported only when a model is trained

    params: dict[str, Any] = {
        "model_id": model_id,
        "mode": config.mode,
        "num_train": len(train_set),
        "num_val": len(val_set),
        **asdict(config),
    }
    meta = _manifest_meta(manifest)
    params.update({f"data.{key}": meta.get(key) for key in ("dataset", "protocol", "seed", "content_hash")})
    run = ModelRun(model_id, params=params, tags=tags or {}, enabled=track and is_main)
    with phase("tracking"), run:  # what is not inside an inner phase here is MLflow's
        run.log_datasets(meta, manifest, ("train", "val"))
        with phase("compute"):
            result = train_model(
                config, train_set, val_set, train_set, workdir, resume=resume, progress=progress, on_epoch=run.log_epoch
            )
        extra = {
            "model_id": model_id,
            "config": asdict(config),
            "mode": config.mode,
            "best_epoch": result.best_epoch,
            "best_val_map_mean": result.best_score,
            "epochs": result.epochs_run,
            "train_seconds": result.train_seconds,
            "peak_memory_mb": result.peak_memory_mb,
            "peak_memory_delta_mb": result.peak_memory_delta_mb,
            "cuda_peak_memory_mb": result.cuda_peak_memory_mb,
            "history": result.history,
            "mlflow_run_id": run.run_id,
        }
        if not is_main:
            return result
        with phase("outputs"):
            save_hasher(result.model, model_path, extra=extra)
        run.log_metrics(
            {
                "train_seconds": result.train_seconds,
                "peak_memory_mb": result.peak_memory_mb,
                "best_epoch": result.best_epoch,
                "best_val_map_mean": result.best_score,
            }
        )
        run.log_model(model_path)  # the exact file written above, loaded back with `load_hasher`
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def _manifest_meta(manifest: str | os.PathLike) -> dict[str, Any]:
    """The split's `manifest.json` (dataset, protocol, seed, content hash, sizes), for the run."""
    from nhl.data.manifest import read_manifest

    return read_manifest(manifest)[1]
