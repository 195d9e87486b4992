"""Resolve a `--model` value to a model: a model file, or a registered version (`champion`,
`models:/<name>@<alias>`, `models:/<name>/<version>`).

It sits above the codes layer (which takes a model and returns codes) and the registry, so that
neither depends on the other; `nhl encode`, `nhl search`, the report's retrieval grids and `nhl serve`
call `resolve_model`. `model_version(spec)` says which exact model a spec names *now* without
loading it, so a running server can poll a registry alias cheaply.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nhl.codes import model_from_file


def resolve_model(spec: str | os.PathLike, map_location: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Load the model a `--model` value names: (Hasher in eval mode, model info for codes files).

    A file path loads that file (`load_hasher`: tensors and plain values only); `champion` /
    `challenger` or `models:/<name>@<alias>` / `models:/<name>/<version>` load a registered
    version through MLflow, rebuilt from its logged model file the same safe way (an existing file
    of the same name wins). An alias is pinned to its version number in the info (`path` is
    `models:/<name>/<version>`), so a codes file always records the exact model that made it.
    Info keys: `spec`, `path`, `model_id`, `lengths`, `in_channels`, `input_size`, `sha256`, and
    for registered versions `registered_model`, `version`, `mlflow_run_id`.
    """
    reference = None if Path(spec).is_file() else registry_reference(spec)
    if reference is None:
        return model_from_file(spec, map_location=map_location)
    from nhl.registry import load_model_version

    model, extra = load_model_version(*reference, map_location=map_location)
    return model, {
        "spec": str(spec),
        "path": extra["model_uri"],
        "model_id": extra["model_id"],
        "lengths": model.lengths,
        "in_channels": model.spec.in_channels,
        "input_size": model.spec.input_size,
        "sha256": extra["sha256"],
        "registered_model": extra["registered_model"],
        "version": extra["version"],
        "mlflow_run_id": extra["mlflow_run_id"],
    }


def registry_reference(spec: str | os.PathLike) -> tuple[str | None, str] | None:
    """(registered model name or None, alias or version) when `spec` names the registry, else None."""
    from nhl.registry import parse_model_spec

    return parse_model_spec(spec)


def model_version(spec: str | os.PathLike) -> str:
    """What `spec` points to now: `<name>/<version>` for a registry reference, the file's sha256
    for a model file. A spec that names nothing is a one-line ValueError / FileNotFoundError."""
    from nhl.codes import file_sha256, resolve_model_path

    reference = None if Path(spec).is_file() else registry_reference(spec)
    if reference is None:
        return file_sha256(resolve_model_path(spec))
    from nhl.registry.versions import get_version, name_with_alias, registry_client

    name, ref = reference
    client = registry_client()
    if name is None:
        name = name_with_alias(client, ref)
    return f"{name}/{get_version(client, name, ref).version}"


def version_of(info: dict[str, Any]) -> str:
    """The same identity as `model_version`, read from a loaded model's info."""
    if info.get("registered_model"):
        return f"{info['registered_model']}/{info['version']}"
    return str(info["sha256"])
