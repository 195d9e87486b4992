"""Where the MLflow store is, and pointing MLflow at it.

The default store is `sqlite:///<project root>/mlruns.db` and artifacts go to
`<project root>/mlartifacts/<experiment>`, whatever the working directory; `MLFLOW_TRACKING_URI`
overrides the store. A tracking server is probed with no retries and a short timeout.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from nhl.envvars import keep_environ, scoped_environ

DEFAULT_EXPERIMENT = "nhl"
DB_NAME = "mlruns.db"
ARTIFACTS_DIR = "mlartifacts"
# Fail fast while probing a tracking server: MLflow's defaults (7 retries, 120 s timeout) take minutes.
# MLflow 3's UI opens an experiment of this kind on its runs table, not on the GenAI overview
# (the values are the UI's own: genai_development, custom_model_development, ...).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PROBE_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}


def find_project_root(start: str | os.PathLike | None = None) -> Path:
    """The project root: `$DVC_ROOT` inside a DVC stage, else the nearest parent holding a
    `dvc.yaml` or `params.yaml`, else the working directory."""
    if start is None and os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() or (folder / "params.yaml").is_file():
            return folder
    return here


def tracking_uri(project_root: str | os.PathLike | None = None) -> str:
    """`$MLFLOW_TRACKING_URI` if set, else the project's sqlite store (an absolute path)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(project_root).resolve() if project_root is not None else find_project_root()
    return f"sqlite:///{root / DB_NAME}"


def artifact_root(project_root: str | os.PathLike | None = None) -> Path:
    """Where local stores keep artifacts: `<project root>/mlartifacts`."""
    root = Path(project_root).resolve() if project_root is not None else find_project_root()
    return root / ARTIFACTS_DIR


def is_remote(uri: str) -> bool:
    """True for a tracking server (http/https), which decides its own artifact location."""
    return uri.split(":", 1)[0].lower() in ("http", "https")


def fail_fast(uri: str) -> contextlib.AbstractContextManager:
    """Within the block, MLflow HTTP calls to a server try once with a short timeout."""
    return scoped_environ(PROBE_ENV) if is_remote(uri) else contextlib.nullcontext()


def setup_experiment(project_root: str | os.PathLike | None, experiment: str) -> tuple[str, str]:
    """(tracking URI, experiment id) after pointing MLflow at the store; see `configure`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(project_root)
    with keep_environ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"), fail_fast(uri):
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
            if EXPERIMENT_KIND_TAG not in found.tags:  # made before the kind was set
                client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        else:
            location = None
            if not is_remote(uri):
                safe = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment)
                location = (artifact_root(project_root) / safe).as_uri()
            try:
                experiment_id = client.create_experiment(
                    experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
                )
            except MlflowException:  # created meanwhile by a parallel stage
                found = client.get_experiment_by_name(experiment)
                if found is None:
                    raise
                experiment_id = found.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
    return uri, experiment_id


def configure(project_root: str | os.PathLike | None = None, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Point MLflow at the project's store and select `experiment`, creating it if needed.

    On a local store a new experiment gets `<project root>/mlartifacts/<experiment>` as its
    artifact location, so nothing lands in `./mlruns`; a server keeps its own default. A server
    is probed with no retries and a short timeout; any failure raises (`ModelRun` turns it into
    a warning). The process environment is left as it was. Returns the tracking URI.
    """
    return setup_experiment(project_root, experiment)[0]
