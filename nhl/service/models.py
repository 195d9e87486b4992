"""Model resolution for the service, kept to two small functions so the resolver can move.

`load_model(spec)` is the only call the service makes to load a model (through
`nhl.serving.resolve_model`); `model_version(spec)` says which exact model a spec names *now*
without loading it, so a running server can poll a registry alias cheaply.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def load_model(spec: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """(Hasher in eval mode, info) for a model file, `champion`, or `models:/<name>@<alias>`."""
    from nhl.serving import resolve_model

    return resolve_model(spec)


def model_version(spec: str | os.PathLike) -> str:
    """What `spec` points to now: `<name>/<version>` for a registry reference, the file's sha256
    for a model file. A spec that names nothing is a one-line ValueError / FileNotFoundError."""
    from nhl.codes import file_sha256, resolve_model_path
    from nhl.serving import registry_reference

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
