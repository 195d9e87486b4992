"""Logging and loading trained models in MLflow: our own model file plus a pyfunc flavour logged as code.

A logged model holds the model file written by `save_hasher` (tensors and plain values, read
back with `torch.load(weights_only=True)`) as the artifact `hasher`, and `pyfunc_model.py` as
its code ("models from code"): nothing in it is a pickled Python object. `load_logged_model`
downloads the model file and rebuilds the network with `load_hasher`, without running any
logged code; `mlflow models serve` runs `pyfunc_model.py`, which loads the same file the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from nhl.envvars import keep_environ, scoped_environ
from nhl.tracking.store import tracking_uri

MODEL_REQUIREMENTS = ("torch", "numpy", "pillow", "pandas")
HASHER_ARTIFACT = "hasher"  # the model file inside a logged model
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


@contextlib.contextmanager
def quiet_logger(logger: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise one logger's level for the block."""
    target = logging.getLogger(logger)
    saved = target.level
    target.setLevel(level)
    try:
        yield
    finally:
        target.setLevel(saved)


def pinned_requirements(packages: tuple[str, ...] = MODEL_REQUIREMENTS) -> list[str]:
    """`name==version` of installed packages (local labels such as `+cu130` dropped), given to
    MLflow explicitly because inferring them costs 10-40 s a model."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in packages]


def log_hasher(model_file: str | os.PathLike, name: str = "model") -> Any:
    """Log a model file as a pyfunc model of the active run; returns MLflow's `ModelInfo`."""
    import warnings

    import mlflow

    # MLflow resets warning filters around its "add type hints to predict" warning (our input is
    # images or base64 files, checked by the model itself), so warnings are recorded and the
    # others passed on.
    with (
        quiet_logger("mlflow.models.model"),
        quiet_logger("mlflow.pyfunc"),
        warnings.catch_warnings(record=True) as caught,
        scoped_environ({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}),
    ):
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PYFUNC_CODE),
            artifacts={HASHER_ARTIFACT: str(model_file)},
            pip_requirements=pinned_requirements(),
        )
    for item in caught:
        if "type hint" not in str(item.message):
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return info


def load_logged_model(
    run_id: str, name: str = "model", project_root: str | os.PathLike | None = None, map_location: str = "cpu"
) -> Any:
    """The `Hasher` (eval mode) logged by `ModelRun.log_model`; `run_id` may also be a full model
    URI (`runs:/...`, `models:/...`). Only the model file is read, with `load_hasher`; no logged
    code runs. A logged model without our model file is a one-line "not an nhl model" error."""
    import mlflow
    from mlflow.models import Model

    from nhl.models.hasher import load_hasher

    with keep_environ("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(tracking_uri(project_root))
    uri = run_id if ":/" in run_id else f"runs:/{run_id}/{name}"
    with (
        tempfile.TemporaryDirectory(prefix="nhl-model-") as tmp,
        scoped_environ({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}),
    ):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        try:
            conf = Model.load(str(local)).flavors["python_function"]["artifacts"][HASHER_ARTIFACT]
            path = (local / conf["path"]).resolve()
        except (OSError, KeyError, TypeError) as err:
            raise ValueError(
                f"{uri}: not an nhl model (no {HASHER_ARTIFACT!r} model file, {type(err).__name__})"
            ) from None
        if not path.is_relative_to(local.resolve()):
            raise ValueError(f"{uri}: not an nhl model (its model file points outside the model)")
        model, _ = load_hasher(path, map_location=map_location)
    return model
