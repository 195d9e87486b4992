"""The data of a run as MLflow dataset inputs, so the runs table's Dataset column shows it.

Each split a run used becomes one input: name `<dataset>/<split>`, digest the manifest's content
hash (its first 12 hex digits, as the split stage prints it; MLflow keeps at most 36 characters),
source the manifest directory, and the context MLflow's UI groups by: `training` (train split),
`validation` (val split: model selection) or `evaluation` (query and database splits).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

CONTEXTS = {"train": "training", "val": "validation", "query": "evaluation", "database": "evaluation"}
DIGEST_CHARS = 12


def manifest_digest(meta: Mapping[str, Any]) -> str:
    """The manifest's content hash as a short digest (`ec85d9ba6b2a`); `unknown` when absent."""
    value = str(meta.get("content_hash") or "")
    return value.split(":", 1)[-1][:DIGEST_CHARS] or "unknown"


def dataset_inputs(meta: Mapping[str, Any], manifest: str | os.PathLike, splits: Iterable[str]) -> list:
    """`mlflow.entities.DatasetInput`s of the manifest's `splits` (see the module docstring)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    name = str(meta.get("dataset") or Path(manifest).name)
    sizes = meta.get("sizes") or {}
    source = json.dumps({"uri": Path(manifest).resolve().as_uri()})
    inputs = []
    for split in splits:
        if split not in CONTEXTS:
            raise ValueError(f"split: expected one of {sorted(CONTEXTS)}, got {split!r}")
        profile = json.dumps({"num_rows": sizes[split]}) if split in sizes else None
        dataset = Dataset(
            name=f"{name}/{split}", digest=manifest_digest(meta), source_type="local", source=source, profile=profile
        )
        inputs.append(DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, CONTEXTS[split])]))
    return inputs
