"""MLflow helpers: one run per trained model, on a store that lives with the project.

The default store is `sqlite:///<project root>/mlruns.db` and artifacts go to
`<project root>/mlartifacts/<experiment>`, whatever the working directory; `MLFLOW_TRACKING_URI`
overrides the store. Tracking is a side channel: if the store cannot be reached, `ModelRun`
logs one warning and becomes a no-op, so training and the DVC stage carry on.

All runs of one `dvc repro` carry the same `nhl.pipeline_run` tag (see `pipeline_run_tag`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from nhl.envvars import keep_environ, scoped_environ

log = logging.getLogger(__name__)
if log.level == logging.NOTSET:
    # Our one-line warnings must show even after `mlflow.pytorch` ran `logging.basicConfig(level=ERROR)`
    # (it does so on import): a logger's own level decides, the root level does not.
    log.setLevel(logging.WARNING)

DEFAULT_EXPERIMENT = "nhl"
DB_NAME = "mlruns.db"
ARTIFACTS_DIR = "mlartifacts"
PIPELINE_RUN_TAG = "nhl.pipeline_run"
PIPELINE_RUN_ENV = "NHL_PIPELINE_RUN"     # set it to force one tag value (e.g. a scheduler's run id)
# Tracked files that a `dvc repro` itself rewrites: they must not make the tree look dirty halfway.
GENERATED_PATHS = ("dvc.lock", "reports")
# Fail fast while probing a tracking server: MLflow's defaults (7 retries, 120 s timeout) take minutes.
PROBE_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
MODEL_REQUIREMENTS = ("torch", "numpy", "cloudpickle")
_MAX_PARAM_CHARS = 6000                   # MLflow's limit on one param value


# -- where the store is ----------------------------------------------------------------------------
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


def _fail_fast(uri: str) -> contextlib.AbstractContextManager:
    """Within the block, MLflow HTTP calls to a server try once with a short timeout."""
    return scoped_environ(PROBE_ENV) if is_remote(uri) else contextlib.nullcontext()


@contextlib.contextmanager
def _quiet(logger: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise one logger's level for the block."""
    target = logging.getLogger(logger)
    saved = target.level
    target.setLevel(level)
    try:
        yield
    finally:
        target.setLevel(saved)


def _pytorch_flavor():
    """`mlflow.pytorch`, imported without letting it reconfigure the root logger.

    Its import calls `logging.basicConfig(level=logging.ERROR)`, which would hide every other
    warning of the process; the root logger's level and handlers are put back.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    import mlflow.pytorch

    root.setLevel(level)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    return mlflow.pytorch


def _setup(project_root: str | os.PathLike | None, experiment: str) -> tuple[str, str]:
    """(tracking URI, experiment id) after pointing MLflow at the store; see `configure`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(project_root)
    with keep_environ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"), _fail_fast(uri):
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = None
            if not is_remote(uri):
                safe = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment)
                location = (artifact_root(project_root) / safe).as_uri()
            try:
                experiment_id = client.create_experiment(experiment, artifact_location=location)
            except MlflowException:       # created meanwhile by a parallel stage
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
    return _setup(project_root, experiment)[0]


# -- which pipeline run ----------------------------------------------------------------------------
def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=30)


def git_state(project_root: str | os.PathLike) -> tuple[str | None, bytes]:
    """(HEAD commit or None, `git diff HEAD` of tracked files except `GENERATED_PATHS`)."""
    root = Path(project_root)
    try:
        head = _git(root, "rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None, b""
    if head.returncode != 0:
        return None, b""
    excludes = [f":(exclude){path}" for path in GENERATED_PATHS]
    diff = _git(root, "diff", "HEAD", "--no-ext-diff", "--binary", "--", ".", *excludes)
    return head.stdout.decode().strip(), diff.stdout if diff.returncode == 0 else b""


def pipeline_run_tag(project_root: str | os.PathLike | None = None) -> str:
    """A value shared by every run of one `dvc repro`: `<commit[:10]>[-dirty]-<digest[:8]>`.

    The digest hashes params.yaml's bytes and the uncommitted diff of tracked files, so the same
    code and parameters give the same tag in every stage of a pipeline run, and a change in
    either gives a new one. Stage outputs never change it: they are ignored by git or listed in
    `GENERATED_PATHS`. Untracked files are not considered. Two `dvc repro` of an unchanged
    project share a tag (they tell apart by start time); `$NHL_PIPELINE_RUN`, when set, is used
    as is (e.g. a scheduler's run id). Outside git the commit part reads `nogit`.
    """
    if os.environ.get(PIPELINE_RUN_ENV):
        return os.environ[PIPELINE_RUN_ENV]
    root = Path(project_root).resolve() if project_root is not None else find_project_root()
    params = root / "params.yaml"
    commit, diff = git_state(root)
    digest = hashlib.sha256()
    digest.update(params.read_bytes() if params.is_file() else b"")
    digest.update(b"\0")
    digest.update(diff)
    dirty = "-dirty" if diff else ""
    return f"{(commit or 'nogit')[:10]}{dirty}-{digest.hexdigest()[:8]}"


# -- turning records into MLflow keys --------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys (`loss_params.alpha`); values become strings."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)[:_MAX_PARAM_CHARS]
    return flat


def epoch_metrics(record: Mapping[str, Any]) -> tuple[int, dict[str, float]]:
    """(step, metrics) from one training-history record.

    Numbers are kept under their own key; dicts and lists are flattened with `_`
    (`val_map: {"8": x}` -> `val_map_8`). The per-length weights `weights.mean[i]` are named
    `weight_i`. Other values (strings, None) are not metrics and are left out.
    """
    if "epoch" not in record or not _is_number(record["epoch"]):
        raise ValueError(f"epoch record: expected an integer 'epoch' field, got {record.get('epoch')!r}")
    metrics: dict[str, float] = {}

    def add(name: str, value: Any) -> None:
        if _is_number(value):
            metrics[name] = float(value)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                add(f"{name}_{key}", item)
        elif isinstance(value, (list, tuple, np.ndarray, torch.Tensor)):
            for i, item in enumerate(np.asarray(value, dtype=float).ravel().tolist()):
                add(f"{name}_{i}", item)

    for key, value in record.items():
        if key == "epoch":
            continue
        if key == "weights" and isinstance(value, Mapping):
            add("weight", value.get("mean", []))
            add("weights", {k: v for k, v in value.items() if k != "mean"})
        else:
            add(key, value)
    return int(record["epoch"]), metrics


def result_metrics(bits_metrics: Mapping[str, Mapping[str, float]],
                   extra: Mapping[str, float] | None = None) -> dict[str, float]:
    """`{"16": {"map": x}}` -> `{"map_16": x}`, plus the `extra` numbers under their own names."""
    metrics: dict[str, float] = {}
    for bits, values in bits_metrics.items():
        for name, value in values.items():
            if not _is_number(value):
                raise ValueError(f"bits metrics: expected a number for {name!r} at {bits} bits, got {value!r}")
            metrics[f"{name}_{bits}"] = float(value)
    for name, value in (extra or {}).items():
        if value is None:
            continue
        if not _is_number(value):
            raise ValueError(f"extra metrics: expected a number for {name!r}, got {value!r}")
        metrics[name] = float(value)
    return metrics


# -- logging models --------------------------------------------------------------------------------
class LongestOutput(nn.Module):
    """Serve a nested model as one tensor: the raw output of its longest code `[B, k_max]`.

    A `Hasher` returns one output per length, each the prefix of the longest, so nothing is lost;
    MLflow's pytorch flavour (and `mlflow models serve`) needs a single output tensor. The
    trained model is `.model`.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.model(x)
        return max(outputs, key=lambda out: out.shape[-1])


def pinned_requirements(packages: tuple[str, ...] = MODEL_REQUIREMENTS) -> list[str]:
    """`name==version` of installed packages (local labels such as `+cu130` dropped), given to
    MLflow explicitly because inferring them costs 10-40 s a model."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in packages]


def serving_model(model: nn.Module, input_example: np.ndarray) -> tuple[nn.Module, np.ndarray]:
    """A CPU copy of `model` in eval mode with one output tensor, and its output on `input_example`.

    The copy leaves the caller's model untouched (device, train mode, batch-norm statistics).
    """
    module = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        output = module(torch.as_tensor(input_example))
    if isinstance(output, (list, tuple)):
        module = LongestOutput(module)
        output = max(output, key=lambda out: out.shape[-1])
    return module, output.detach().cpu().numpy()


def load_logged_model(run_id: str, name: str = "model", project_root: str | os.PathLike | None = None,
                      map_location: str | torch.device = "cpu") -> nn.Module:
    """Load the torch module logged by `ModelRun.log_model`; `run_id` may also be a full model
    URI (`runs:/...`, `models:/...`). A nested model comes back wrapped in `LongestOutput`."""
    import mlflow

    flavor = _pytorch_flavor()
    with keep_environ("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(tracking_uri(project_root))
    uri = run_id if ":/" in run_id else f"runs:/{run_id}/{name}"
    with scoped_environ({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
        return flavor.load_model(uri, map_location=map_location)


# -- one run per trained model ---------------------------------------------------------------------
class ModelRun:
    """Context manager for the MLflow run of one trained model.

    ```
    with ModelRun("csq-nhl-full", params=config, tags={"nhl.loss": "csq"}) as run:
        result = train_model(..., on_epoch=run.log_epoch)
        run.log_results(metrics["bits"], {"train_seconds": ..., "peak_memory_mb": ...})
        run.log_model(result.model, input_example=images[:2].numpy())
    ```
    The run is named after `model_id` and tagged with it, the DVC stage (`stage` or
    `$DVC_STAGE`), the git commit and `nhl.pipeline_run`. `resume=<run id>` reopens an earlier
    run instead (e.g. evaluation adding its metrics to the training run): only `tags` are
    added, and the run keeps its status if the block raises. If the store cannot be reached on
    entry, one warning is logged, `skipped` is True, `run_id` None and every method does
    nothing; if a later call fails, one warning is logged and the rest is skipped. Errors in
    the caller's own input (a record without `epoch`, a non-numeric metric) still raise.
    """

    def __init__(self, model_id: str, params: Mapping[str, Any] | None = None,
                 tags: Mapping[str, Any] | None = None, *, stage: str | None = None,
                 project_root: str | os.PathLike | None = None, experiment: str = DEFAULT_EXPERIMENT,
                 resume: str | None = None, enabled: bool = True) -> None:
        self.model_id = model_id
        self.enabled = enabled
        self.resume = resume
        self._resumed_status: str | None = None
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
    def __enter__(self) -> "ModelRun":
        if not self.enabled:           # tracking switched off by the caller: a silent no-op
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
        if self.run_id is None:
            return
        import mlflow

        status = "FINISHED" if exc_type is None else self._resumed_status or "FAILED"
        try:
            with _fail_fast(self.uri) if self.skipped else contextlib.nullcontext():
                active = mlflow.active_run()
                if active is not None and active.info.run_id == self.run_id:
                    mlflow.end_run(status)     # pops the run before telling the store
                else:
                    mlflow.MlflowClient(self.uri).set_terminated(self.run_id, status=status)
        except Exception as err:  # noqa: BLE001
            if not self.skipped:
                self._skip(f"MLflow tracking: could not close run {self.run_id} ({_short(err)})")

    def _start(self) -> None:
        import mlflow
        from mlflow.entities import Param, RunTag
        from mlflow.exceptions import MlflowException

        _, experiment_id = _setup(self.project_root, self.experiment)
        client = mlflow.MlflowClient(self.uri)
        if self.resume is not None:
            with _fail_fast(self.uri):
                try:
                    self._resumed_status = client.get_run(self.resume).info.status
                except MlflowException as err:
                    if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                        raise
                    raise _RunNotFound(err.error_code) from err
                run = mlflow.start_run(run_id=self.resume)
            self.run_id = run.info.run_id
            if self.tags:
                client.log_batch(self.run_id, tags=[RunTag(key, value) for key, value in self.tags.items()])
            return
        commit, diff = git_state(self.project_root)
        tags = {
            "nhl.model_id": self.model_id,
            PIPELINE_RUN_TAG: pipeline_run_tag(self.project_root),
            **({"nhl.stage": self.stage} if self.stage else {}),
            **({"mlflow.source.git.commit": commit, "nhl.git_dirty": str(bool(diff)).lower()} if commit else {}),
            **self.tags,
        }
        # An inherited MLFLOW_RUN_ID would make start_run reopen that run for every model.
        with _fail_fast(self.uri), keep_environ("MLFLOW_RUN_ID"):
            os.environ.pop("MLFLOW_RUN_ID", None)
            run = mlflow.start_run(experiment_id=experiment_id, run_name=self.model_id, tags=tags)
        self.run_id = run.info.run_id
        items = [Param(key, value) for key, value in self.params.items()]
        for start in range(0, len(items), 100):      # MLflow's batch limit for params
            client.log_batch(self.run_id, params=items[start:start + 100])

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
        except Exception as err:  # noqa: BLE001
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
            mlflow.MlflowClient(self.uri).log_batch(self.run_id, metrics=items)

        if self.active and metrics:
            self._guard("log_metrics", send)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """Log one training-history record at step = its epoch (see `epoch_metrics`)."""
        step, metrics = epoch_metrics(record)
        self.log_metrics(metrics, step=step)

    def log_results(self, bits_metrics: Mapping[str, Mapping[str, float]],
                    extra: Mapping[str, float] | None = None) -> None:
        """Final metrics: per length (`map_16`, `p_at_100_16`, ...) and run-wide (`train_seconds`, ...)."""
        self.log_metrics(result_metrics(bits_metrics, extra))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Copy a file or directory into the run's artifacts."""
        if not Path(path).exists():
            raise FileNotFoundError(f"artifact: {path} does not exist")

        def send() -> None:
            import mlflow

            mlflow.MlflowClient(self.uri).log_artifact(self.run_id, str(path), artifact_path)

        self._guard("log_artifact", send)

    def log_model(self, model: nn.Module, input_example: np.ndarray, name: str = "model",
                  serialization_format: str = "pickle") -> str | None:
        """Log the model (pytorch flavour) with its signature, input example and pinned requirements.

        "pickle" (default) saves the module object: about 0.3 s, and loading needs `nhl`
        importable; "pt2" exports a traced graph (no code needed to load) but costs 3-5 s.
        Returns the model URI, or None when tracking is skipped.
        """
        if not self.active:
            return None
        input_example = np.asarray(input_example)
        if serialization_format == "pt2" and len(input_example) == 1:
            input_example = np.concatenate([input_example] * 2)  # a batch of 1 would fix the batch size
        module, output = serving_model(model, input_example)

        def send() -> str:
            from mlflow.models import infer_signature

            flavor = _pytorch_flavor()
            with _quiet("mlflow.pytorch"):     # its pickle-safety warning: the format is our choice
                info = flavor.log_model(
                    module, name=name, signature=infer_signature(input_example, output),
                    input_example=input_example, pip_requirements=pinned_requirements(),
                    serialization_format=serialization_format)
            return info.model_uri

        self.model_uri = self._guard("log_model", send)
        return self.model_uri


class _RunNotFound(Exception):
    """`ModelRun(resume=...)` names a run the store does not have."""


def _short(err: BaseException) -> str:
    """First line of an exception, for a one-line warning."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__
