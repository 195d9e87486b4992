"""Where a model's files live: one folder per loss under each output directory.

The pipeline trains all of a loss's variants in one process (stage `models@<loss>`), so each
output directory has one DVC-tracked folder per loss:

    models/<loss>/<model_id>.pt          the model file
    models/<loss>/<model_id>.json        its fingerprint (nhl.modelset: what it was trained from)
    metrics/<loss>/<model_id>.json       its metrics record (names the model and its MLflow run)
    plots/pr/<loss>/<model_id>.csv       precision-recall of hash lookup
    plots/history/<loss>/<model_id>.json per-epoch training history

Readers also accept the flat layout of older checkouts (`models/<model_id>.pt`, ...), so a
project trained before the change still reports and promotes.
"""

from __future__ import annotations

import os
from pathlib import Path


def loss_of(model_id: str) -> str:
    """The loss part of a model id (`csq-nhl-full` -> `csq`); loss names hold no `-`."""
    return model_id.split("-", 1)[0]


def placed(folder: str | os.PathLike, model_id: str, suffix: str) -> Path:
    """`folder/<loss>/<model_id><suffix>`: where a stage writes a model's file."""
    return Path(folder) / loss_of(model_id) / f"{model_id}{suffix}"


def _placed(folder: str | os.PathLike, model_id: str, suffix: str) -> Path:
    """`placed(...)`, or the flat `folder/<model_id><suffix>` of an older project when only it exists."""
    nested = placed(folder, model_id, suffix)
    flat = Path(folder) / f"{model_id}{suffix}"
    return flat if flat.is_file() and not nested.exists() else nested


def model_file(models_dir: str | os.PathLike, model_id: str) -> Path:
    """`models/<loss>/<model_id>.pt` (the flat `models/<model_id>.pt` of an older project if only it exists)."""
    return _placed(models_dir, model_id, ".pt")


def fingerprint_file(models_dir: str | os.PathLike, model_id: str) -> Path:
    """`models/<loss>/<model_id>.json`: what the model file was trained from (nhl.modelset)."""
    return placed(models_dir, model_id, ".json")


def metrics_file(metrics_dir: str | os.PathLike, model_id: str) -> Path:
    """`metrics/<loss>/<model_id>.json` (or the flat file of an older project)."""
    return _placed(metrics_dir, model_id, ".json")


def pr_file(plots_dir: str | os.PathLike, model_id: str) -> Path:
    """`plots/pr/<loss>/<model_id>.csv` (or the flat file of an older project)."""
    return _placed(Path(plots_dir) / "pr", model_id, ".csv")


def history_file(plots_dir: str | os.PathLike, model_id: str) -> Path:
    """`plots/history/<loss>/<model_id>.json` (or the flat file of an older project)."""
    return _placed(Path(plots_dir) / "history", model_id, ".json")


def metrics_files(metrics_dir: str | os.PathLike) -> list[Path]:
    """Every metrics record under `metrics_dir`: `<loss>/*.json` and the flat `*.json`, sorted."""
    folder = Path(metrics_dir)
    return sorted([*folder.glob("*.json"), *folder.glob("*/*.json")])
