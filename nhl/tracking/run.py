"""`ModelRun`: the MLflow run of one trained model.

Tracking is a side channel: if the store cannot be reached, `ModelRun` logs one warning and
becomes a no-op, so training and the DVC stage carry on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nhl.envvars import keep_environ
from nhl.tracking.provenance import PIPELINE_RUN_TAG, git_state, pipeline_run_tag
from nhl.tracking.records import epoch_metrics, flatten_params, result_metrics
from nhl.tracking.stale import mark_stale_runs, process_tags
from nhl.tracking.store import DEFAULT_EXPERIMENT, fail_fast, find_project_root, setup_experiment, tracking_uri

# The package's logger name, stable for users filtering it; its own level is set so our one-line
# warnings show even after `mlflow.pytorch` ran `logging.basicConfig(level=ERROR)` (it does so on
# import): a logger's own level decides, the root level does not.
log = logging.getLogger("nhl.tracking")
if log.level == logging.NOTSET:
    log.setLevel(logging.WARNING)


class ModelRun:
    """Context manager for the MLflow run of one trained model.

    ```
    with ModelRun("csq-nhl-full", params=config, tags={"nhl.loss": "csq"}) as run:
        result = train_model(..., on_epoch=run.log_epoch)
        run.log_results(metrics["bits"], {"train_seconds": ..., "peak_memory_mb": ...})
        run.log_model(model_path)
    ```
    The run is named after `model_id` and tagged with it, the DVC stage (`stage` or
    `$DVC_STAGE`), the git commit, `nhl.pipeline_run` and the process id and host (`nhl.pid`,
    `nhl.host`); an earlier RUNNING run of the same model whose process is gone is first marked
    KILLED (`nhl.tracking.stale`). `resume=<run id>` attaches to an earlier
    run instead (e.g. evaluation adding its metrics to the training run): metrics, artifacts,
    datasets and `tags` are added through the client, the run is never reopened, so its status,
    start and end time stay those of its training (its duration means training). If the store cannot be reached on
    entry, one warning is logged, `skipped` is True, `run_id` None and every method does
    nothing; if a later call fails, one warning is logged and the rest is skipped. Errors in
    the caller's own input (a record without `epoch`, a non-numeric metric) still raise.
    """

    def __init__(
        self,
        model_id: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        *,
        stage: str | None = None,
        project_root: str | os.PathLike | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        resume: str | None = None,
        enabled: bool = True,
    ) -> None:
        self.model_id = model_id
        self.enabled = enabled
        self.resume = resume
        self._attached = False
        self.params = flatten_params(params or {})
        self.tags = {key: str(value) for key, value in (tags or {}).items()}
        self.stage = stage if stage is not None else os.environ.get("DVC_STAGE")
        self.project_root = Path(project_root).resolve() if project_root is not None else find_project_root()
        self.experiment = experiment
        self.uri = tracking_uri(self.project_root)
        self.run_id: str | None = None
        self.skipped = False
        self.model_uri: str | None = None

    # context manager
    def __enter__(self) -> ModelRun:
        if not self.enabled:  # tracking switched off by the caller: a silent no-op
            self.skipped = True
            return self
        try:
            self._start()
        except _RunNotFound as err:
            self._skip(f"MLflow tracking skipped: run {self.resume} not found in {self.uri} ({err})")
        except Exception as err:  # noqa: BLE001 - any store failure degrades to a no-op
            self._skip(f"MLflow tracking skipped: {self.uri} unreachable ({_short(err)})")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.run_id is None or self._attached:
            return
        import mlflow

        status = "FINISHED" if exc_type is None else "FAILED"
        try:
            with fail_fast(self.uri) if self.skipped else contextlib.nullcontext():
                active = mlflow.active_run()
                if active is not None and active.info.run_id == self.run_id:
                    mlflow.end_run(status)  # pops the run before telling the store
                else:
                    mlflow.MlflowClient(self.uri).set_terminated(self.run_id, status=status)
        except Exception as err:  # noqa: BLE001 - closing the run must never fail the training
            if not self.skipped:
                self._skip(f"MLflow tracking: could not close run {self.run_id} ({_short(err)})")

    def _start(self) -> None:
        import mlflow
        from mlflow.entities import Param, RunTag
        from mlflow.exceptions import MlflowException

        client = mlflow.MlflowClient(self.uri)
        if self.resume is not None:
            with fail_fast(self.uri):
                try:
                    client.get_run(self.resume)  # must exist
                except MlflowException as err:
                    if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                        raise
                    raise _RunNotFound(err.error_code) from err
            # attached, not reopened: the run's start, end and status stay those of its training
            self.run_id = self.resume
            self._attached = True
            if self.tags:
                client.log_batch(self.run_id, tags=[RunTag(key, value) for key, value in self.tags.items()])
            return
        _, experiment_id = setup_experiment(self.project_root, self.experiment)
        commit, diff = git_state(self.project_root)
        tags = {
            "nhl.model_id": self.model_id,
            PIPELINE_RUN_TAG: pipeline_run_tag(self.project_root),
            **({"nhl.stage": self.stage} if self.stage else {}),
            **({"mlflow.source.git.commit": commit, "nhl.git_dirty": str(bool(diff)).lower()} if commit else {}),
            **process_tags(),
            **self.tags,
        }
        with fail_fast(self.uri):  # an earlier run of this model whose process died is no longer RUNNING
            for run_id in mark_stale_runs(client, [experiment_id], self.model_id):
                log.warning(
                    f"MLflow run {run_id} of {self.model_id} was left RUNNING by a process that is gone; marked KILLED"
                )
        # An inherited MLFLOW_RUN_ID would make start_run reopen that run for every model.
        with fail_fast(self.uri), keep_environ("MLFLOW_RUN_ID"):
            os.environ.pop("MLFLOW_RUN_ID", None)
            run = mlflow.start_run(experiment_id=experiment_id, run_name=self.model_id, tags=tags)
        self.run_id = run.info.run_id
        items = [Param(key, value) for key, value in self.params.items()]
        for start in range(0, len(items), 100):  # MLflow's batch limit for params
            client.log_batch(self.run_id, params=items[start : start + 100])

    def _skip(self, message: str) -> None:
        log.warning(message)
        self.skipped = True

    @property
    def active(self) -> bool:
        return self.run_id is not None and not self.skipped

    def _guard(self, what: str, action) -> Any:
        """Run one MLflow call; on failure warn once and skip everything after."""
        if not self.active:
            return None
        try:
            return action()
        except Exception as err:  # noqa: BLE001 - any store failure degrades to a no-op
            self._skip(f"MLflow tracking stopped: {what} failed for run {self.run_id} ({_short(err)})")
            return None

    # logging
    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log numbers at one step, in one request."""

        def send() -> None:
            import mlflow
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            items = [Metric(key, float(value), now, step) for key, value in metrics.items()]
            mlflow.MlflowClient(self.uri).log_batch(str(self.run_id), metrics=items)  # set while active

        if self.active and metrics:
            self._guard("log_metrics", send)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """Log one training-history record at step = its epoch (see `epoch_metrics`)."""
        step, metrics = epoch_metrics(record)
        self.log_metrics(metrics, step=step)

    def log_results(
        self, bits_metrics: Mapping[str, Mapping[str, float]], extra: Mapping[str, float] | None = None
    ) -> None:
        """Final metrics: per length (`map_16`, `p_at_100_16`, ...) and run-wide (`train_seconds`, ...)."""
        self.log_metrics(result_metrics(bits_metrics, extra))

    def log_datasets(self, meta: Mapping[str, Any], manifest: str | os.PathLike, splits: tuple[str, ...]) -> None:
        """Log the manifest's `splits` as dataset inputs (see `nhl.tracking.datasets`)."""

        def send() -> None:
            import mlflow

            from nhl.tracking.datasets import dataset_inputs

            assert self.run_id is not None, "_guard runs an action only while the run is active (run_id set)"
            mlflow.MlflowClient(self.uri).log_inputs(self.run_id, datasets=dataset_inputs(meta, manifest, splits))

        self._guard("log_datasets", send)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Copy a file or directory into the run's artifacts."""
        if not Path(path).exists():
            raise FileNotFoundError(f"artifact: {path} does not exist")

        def send() -> None:
            import mlflow

            mlflow.MlflowClient(self.uri).log_artifact(self.run_id, str(path), artifact_path)

        self._guard("log_artifact", send)

    def log_model(self, model: Any, name: str = "model") -> str | None:
        """Log a trained model: our model file (`save_hasher`'s format) with a pyfunc flavour
        logged as code (see `nhl.tracking.models`), and pinned requirements.

        `model` is the model file to log (its exact bytes), or a `Hasher`, which is saved to a
        temporary file first. Returns the model URI, or None when tracking is skipped.
        """
        if not self.active:
            return None
        from nhl.tracking.models import log_hasher

        def send() -> str:
            if isinstance(model, (str, os.PathLike)):
                return log_hasher(model, name).model_uri
            from nhl.models.hasher import save_hasher

            with tempfile.TemporaryDirectory(prefix="nhl-log-") as tmp:
                path = Path(tmp) / f"{self.model_id}.pt"
                save_hasher(model, path, extra={"model_id": self.model_id, "mlflow_run_id": self.run_id})
                return log_hasher(path, name).model_uri

        self.model_uri = self._guard("log_model", send)
        return self.model_uri


class _RunNotFound(Exception):
    """`ModelRun(resume=...)` names a run the store does not have."""


def _short(err: BaseException) -> str:
    """First line of an exception, for a one-line warning."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__
