"""Add the evaluate stage's results to the training runs, all models from one process.

The pipeline's `evaluate` stages run with `--no-track`, so they never import MLflow (about half of
an evaluate process's wall time went to MLflow's import and store set-up); the `report` stage,
which opens the store anyway, adds each model's `metrics/<model_id>.json` to the run the record
names (`mlflow_run_id`): the per-length metrics, the evaluation splits as dataset inputs and the
file itself. The run is attached, not reopened, so its duration stays its training's. A run that
already holds the same numbers is left alone, so a report rerun does not repeat metric entries.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nhl.tracking.records import result_metrics
from nhl.tracking.run import ModelRun

EVALUATION_SPLITS = ("query", "database")


def log_evaluation(
    record: Mapping[str, Any],
    metrics_file: str | os.PathLike,
    meta: Mapping[str, Any],
    manifest: str | os.PathLike,
    project_root: str | os.PathLike | None = None,
) -> bool:
    """Add one metrics record to its training run; returns whether anything was logged."""
    run_id = record.get("mlflow_run_id")
    if not run_id:
        return False
    with ModelRun(str(record.get("model_id")), resume=run_id, project_root=project_root) as run:
        if not run.active:
            return False
        metrics = result_metrics(record["bits"])
        if _already_logged(run, metrics):
            return False
        run.log_results(record["bits"])
        run.log_datasets(meta, manifest, EVALUATION_SPLITS)
        run.log_artifact(metrics_file)
    return run.active


def log_evaluations(
    metrics_files: Iterable[str | os.PathLike],
    manifest: str | os.PathLike,
    project_root: str | os.PathLike | None = None,
) -> int:
    """`log_evaluation` for every existing metrics file; returns how many runs got new results."""
    from nhl.data.manifest import read_manifest

    files = [Path(f) for f in metrics_files if Path(f).is_file()]
    if not files:
        return 0
    meta = read_manifest(manifest)[1]
    return sum(log_evaluation(json.loads(f.read_text()), f, meta, manifest, project_root) for f in files)


def _already_logged(run: ModelRun, metrics: Mapping[str, float]) -> bool:
    def read() -> dict[str, float]:
        import mlflow

        assert run.run_id is not None, "_guard runs an action only while the run is active (run_id set)"
        return mlflow.MlflowClient(run.uri).get_run(run.run_id).data.metrics

    found = run._guard("get_run", read) or {}
    return bool(metrics) and all(found.get(key) == value for key, value in metrics.items())
