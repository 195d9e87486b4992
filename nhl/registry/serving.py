"""Serve a registered version: `--model champion` or `models:/<name>@champion` loads the model behind
the alias through MLflow, so nobody copies checkpoint paths by hand. The network is rebuilt from
the model file logged with the version (`load_hasher`, tensors and plain values only), never from
a pickled module.

The alias is resolved to a version number first and that exact version is loaded, so a
promotion running meanwhile cannot hand over half of one model; `extra["model_uri"]` pins it
(`models:/<name>/<version>`) for codes files and logs. Works on the local sqlite store and on a
tracking server (`MLFLOW_TRACKING_URI`).
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from nhl.registry.versions import CHALLENGER, CHAMPION, get_version, name_with_alias, registry_client

BARE_ALIASES = (CHAMPION, CHALLENGER)
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))$")


def parse_model_spec(spec: str | os.PathLike) -> tuple[str | None, str] | None:
    """What a `--model` value names in the registry, or None for anything else (a file path).

    `models:/<name>@<alias>` -> (name, alias); `models:/<name>/<version>` -> (name, "3");
    a bare `champion` / `challenger` -> (None, alias): the one nhl registered model with that
    alias. Callers should try an existing file of the same name first.
    """
    text = str(spec)
    if text in BARE_ALIASES:
        return None, text
    if not text.startswith("models:/"):
        return None
    match = _MODELS_URI.match(text)
    if match is None:
        raise ValueError(f"--model: {text!r} is not models:/<name>@<alias> or models:/<name>/<version>")
    return match.group("name"), match.group("alias") or match.group("version")


def load_model_version(
    name: str | None,
    alias_or_version: str | int = CHAMPION,
    project_root: str | os.PathLike | None = None,
    map_location: str = "cpu",
) -> tuple[Any, dict[str, Any]]:
    """(Hasher in eval mode, extra) of a registered version, by alias or number.

    `name` None means the one nhl registered model that has the alias. `extra` holds
    `model_id`, `mlflow_run_id`, `registered_model`, `version`, `aliases`, `model_uri` (the pinned
    `models:/<name>/<version>`), `requested` (what was asked for), `source` (the logged model) and
    `sha256` (of the weights, see `state_sha256`).
    """
    from nhl.models.hasher import Hasher
    from nhl.tracking import load_logged_model

    client = registry_client(project_root)
    if name is None:
        name = name_with_alias(client, str(alias_or_version))
    version = get_version(client, name, alias_or_version)
    pinned = f"models:/{name}/{version.version}"
    model = load_logged_model(pinned, project_root=project_root, map_location=map_location)  # our file, no pickles
    if not isinstance(model, Hasher):
        raise ValueError(f"{pinned}: not an nhl model (the logged model is a {type(model).__name__})")
    ref = str(alias_or_version)
    extra = {
        "model_id": version.tags.get("nhl.model_id") or name,
        "mlflow_run_id": version.run_id,
        "registered_model": name,
        "version": int(version.version),
        "aliases": sorted(version.aliases),
        "model_uri": pinned,
        "requested": pinned if ref.isdigit() else f"models:/{name}@{ref}",
        "source": version.source,
        "sha256": state_sha256(model),
    }
    return model, extra


def state_sha256(model) -> str:
    """`sha256:<hex>` over a module's state dict (names, shapes, dtypes, values in order): one id
    for the same weights however they were stored."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{tuple(array.shape)}:{array.dtype}\0".encode())
        digest.update(array.numpy().tobytes())
    return "sha256:" + digest.hexdigest()
