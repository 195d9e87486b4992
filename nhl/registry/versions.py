"""Registered models and their versions: naming, provenance tags, lookup by alias or number.

One registered model per (dataset, loss) (the name comes from a template such as
`nhl-{dataset}-{loss}`); every trained model that passes the gate's preconditions becomes one
version of it, pointing at the model its training run logged. A version carries, as tags, the
chain a reader needs to trust it: the data (dataset, protocol, seed, manifest content hash, DVC
md5), the validation result that passed on that data (its id = hash of `result.json`), the
training run's git revision and params hash, and the per-length metrics.

The store is the one of `nhl.tracking`: `sqlite:///<project root>/mlruns.db` by default (no
server needed; the registry lives in the same file), or a tracking server when
`MLFLOW_TRACKING_URI=http://host:port` is set. The registry follows the tracking URI unless
`MLFLOW_REGISTRY_URI` says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"
KIND_TAG = "nhl.kind"  # on registered models created here, so lookups skip foreign ones
KIND = "hasher"
MODEL_ARTIFACT = "model"  # the name `ModelRun.log_model` gives the logged model

# Version tags (the per-length metrics are tagged under their run-metric names: map_16, p_at_100_16, ...)
TAG_MODEL_ID = "nhl.model_id"
TAG_LENGTHS = "nhl.lengths"
TAG_DATASET = "nhl.data.dataset"
TAG_PROTOCOL = "nhl.data.protocol"
TAG_SEED = "nhl.data.seed"
TAG_CONTENT_HASH = "nhl.data.content_hash"
TAG_DVC_MD5 = "nhl.data.dvc_md5"
TAG_GIT_COMMIT = "nhl.git.commit"
TAG_GIT_DIRTY = "nhl.git.dirty"
TAG_PARAMS_HASH = "nhl.params_hash"
TAG_VALIDATION_ID = "nhl.validation.id"
TAG_VALIDATION_SUCCESS = "nhl.validation.success"
TAG_VALIDATION_HASH = "nhl.validation.content_hash"
TAG_VALIDATION_CHECKS = "nhl.validation.checks"
TAG_TOPK = "nhl.eval.topk"
TAG_DECISION = "nhl.promotion.decision"  # champion / challenger (what the gate decided)
TAG_REASON = "nhl.promotion.reason"
TAG_COMPARED = "nhl.promotion.compared_with"
TAG_TIME = "nhl.promotion.time"
TAG_TOLERANCE = "nhl.promotion.tolerance"
METRIC_NAMES = ("map", "p_at_100", "p_at_r2")
VALIDATION_ARTIFACT = "validation/result.json"  # copy of the gate's verdict in the training run

NAME_FIELDS = ("dataset", "loss", "variant", "protocol")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def registry_client(project_root: str | os.PathLike | None = None):
    """An `MlflowClient` on the project's store (see the module doc) for tracking and registry.

    MLflow's process-wide tracking URI is pointed at the same store: the sqlite registry looks
    up logged models through it when a version is created (the environment is left as it was).
    """
    import mlflow

    from nhl.envvars import keep_environ
    from nhl.tracking import tracking_uri

    uri = tracking_uri(project_root)
    with keep_environ("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri)


def model_name(template: str, **fields: Any) -> str:
    """The registered model's name from a template, e.g. `nhl-{dataset}-{loss}` -> `nhl-digits-csq`.

    Fields: dataset, loss, variant, protocol. The result may hold letters, digits, `.`, `_`, `-`.
    """
    try:
        name = template.format(**{key: str(value) for key, value in fields.items()})
    except KeyError as err:
        raise ValueError(
            f"registry.name: unknown field {{{err.args[0]}}} in {template!r}; known fields: {', '.join(NAME_FIELDS)}"
        ) from None
    except (IndexError, ValueError) as err:
        raise ValueError(f"registry.name: bad template {template!r} ({err})") from None
    if not _NAME.match(name):
        raise ValueError(f"registry.name: {name!r} (from {template!r}) must hold only letters, digits, '.', '_', '-'")
    return name


def canonical_hash(value: Any) -> str:
    """`sha256:<hex>` of a JSON value with sorted keys: the same content gives the same id."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def validation_id(result: Mapping[str, Any]) -> str:
    """The id of a validation result (`reports/validation/result.json`): the hash of its content."""
    return canonical_hash(dict(result))


def params_hash(params: Mapping[str, str]) -> str:
    """The id of a training configuration: the hash of its MLflow run's params (every training
    setting plus the data's dataset, protocol, seed and content hash)."""
    return canonical_hash(dict(params))


def run_lengths(params: Mapping[str, str]) -> list[int]:
    """The code lengths of a training run, from its `lengths` param (`(8, 16)` or `[8, 16]`)."""
    found = [int(k) for k in re.findall(r"\d+", str(params.get("lengths", "")))]
    if not found:
        raise ValueError(
            f"run params: expected a `lengths` param listing the code lengths, got {params.get('lengths')!r}"
        )
    return found


def version_tags(
    run,
    bits: Mapping[str, Mapping[str, float]],
    validation: Mapping[str, Any],
    topk: int | None = None,
    dvc_md5: str | None = None,
) -> dict[str, str]:
    """The provenance tags of a new version (module doc) from its training run, its per-length
    metrics `{"16": {"map": .., ...}}`, the validation result and the evaluation's `topk`."""
    params, tags = run.data.params, run.data.tags
    values: dict[str, Any] = {
        TAG_MODEL_ID: tags.get("nhl.model_id") or params.get("model_id"),
        TAG_LENGTHS: ",".join(str(k) for k in run_lengths(params)),
        TAG_DATASET: params.get("data.dataset"),
        TAG_PROTOCOL: params.get("data.protocol"),
        TAG_SEED: params.get("data.seed"),
        TAG_CONTENT_HASH: params.get("data.content_hash"),
        TAG_DVC_MD5: dvc_md5,
        TAG_GIT_COMMIT: tags.get("mlflow.source.git.commit"),
        TAG_GIT_DIRTY: tags.get("nhl.git_dirty"),
        TAG_PARAMS_HASH: params_hash(params),
        TAG_VALIDATION_ID: validation_id(validation),
        TAG_VALIDATION_SUCCESS: str(bool(validation.get("success"))).lower(),
        TAG_VALIDATION_HASH: validation.get("content_hash"),
        TAG_VALIDATION_CHECKS: len(validation.get("checks", [])),
        TAG_TOPK: "all" if topk is None else topk,
    }
    for k, metrics in bits.items():
        for metric in METRIC_NAMES:
            if metric in metrics:
                values[f"{metric}_{k}"] = repr(float(metrics[metric]))  # exact: the shortest round trip
    return {key: str(value) for key, value in values.items() if value is not None}


def version_maps(version) -> dict[int, float]:
    """mAP per code length, from a version's `map_<k>` tags."""
    maps = {}
    for key, value in version.tags.items():
        match = re.fullmatch(r"map_(\d+)", key)
        if match:
            maps[int(match.group(1))] = float(value)
    return dict(sorted(maps.items()))


def find_version(client, name: str, run_id: str):
    """The version of `name` registered from run `run_id`, or None."""
    if not _registered(client, name):
        return None
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if not found:
        return None
    first = min(found, key=lambda v: int(v.version))
    return client.get_model_version(name, first.version)  # search results may omit aliases


def logged_model(client, run):
    """The model a training run logged (an MLflow 3 `LoggedModel`; its URI is `models:/<model id>`)."""
    found = [
        m
        for m in client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        if m.name == MODEL_ARTIFACT
    ]
    if not found:
        raise ValueError(
            f"MLflow run {run.info.run_id} has no logged model {MODEL_ARTIFACT!r} "
            f"(was it trained with tracking off, or did logging the model fail?)"
        )
    return found[-1]


def register_version(client, name: str, run, tags: Mapping[str, str]):
    """A new version of `name` (created, tagged as ours, when missing) for the run's logged model."""
    from mlflow.exceptions import MlflowException

    model = logged_model(client, run)
    if not _registered(client, name):
        try:
            client.create_registered_model(
                name, tags={KIND_TAG: KIND}, description="nhl hashing models; aliases: champion, challenger"
            )
        except MlflowException as err:  # created meanwhile by a parallel promotion
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    elif client.get_registered_model(name).tags.get(KIND_TAG) != KIND:
        client.set_registered_model_tag(name, KIND_TAG, KIND)  # made by hand: mark it ours for lookups
    return client.create_model_version(
        name, model.model_uri, run_id=run.info.run_id, tags=dict(tags), model_id=model.model_id
    )


def alias_version(client, name: str, alias: str):
    """The version `alias` points to, or None (also when `name` is not registered)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return None
        raise


def get_version(client, name: str, alias_or_version: str | int):
    """A version by number (`3`) or alias (`champion`); a clear error when there is none."""
    from mlflow.exceptions import MlflowException

    if not _registered(client, name):
        known = ", ".join(nhl_model_names(client)) or "none"
        raise ValueError(f"registered model {name!r} not found in {client.tracking_uri} (nhl models: {known})")
    ref = str(alias_or_version)
    if ref.isdigit():
        try:
            return client.get_model_version(name, ref)
        except MlflowException:
            raise ValueError(f"registered model {name!r} has no version {ref}") from None
    version = alias_version(client, name, ref)
    if version is None:
        aliases = client.get_registered_model(name).aliases
        known = ", ".join(f"{a} (v{v})" for a, v in sorted(aliases.items())) or "none"
        raise ValueError(f"registered model {name!r} has no alias {ref!r} (aliases: {known})")
    return version


def nhl_model_names(client) -> list[str]:
    """Names of the registered models created by nhl (tag `nhl.kind=hasher`), sorted."""
    names, token = [], None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        names += [m.name for m in page if m.tags.get(KIND_TAG) == KIND]
        token = page.token
        if not token:
            return sorted(names)


def name_with_alias(client, alias: str) -> str:
    """The one nhl registered model that has `alias`; an error naming the candidates otherwise."""
    names = [name for name in nhl_model_names(client) if alias_version(client, name, alias) is not None]
    if len(names) == 1:
        return names[0]
    if not names:
        raise ValueError(
            f"no registered nhl model has a {alias!r} version in {client.tracking_uri} (run `nhl promote` first)"
        )
    raise ValueError(
        f"{len(names)} registered models have a {alias!r} version ({', '.join(names)}): "
        f"name one, e.g. `nhl audit --name {names[0]}` or `--model models:/{names[0]}@{alias}`"
    )


def ui_base(uri: str) -> str:
    """Where the MLflow UI of a store is: the server itself, or `nhl ui`'s default address."""
    from nhl.tracking import is_remote

    return uri.rstrip("/") if is_remote(uri) else "http://127.0.0.1:5000"


def run_ui_path(experiment_id: str, run_id: str) -> str:
    """The UI route of a run (append to the UI's address)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}"


def version_ui_path(name: str, version: str | int) -> str:
    """The UI route of a model version."""
    return f"#/models/{name}/versions/{version}"


def _registered(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return False
        raise
