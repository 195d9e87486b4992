"""MLflow helpers: one run per trained model, on a store that lives with the project.

Split by job:
- `store`: where the store is (`sqlite:///<project root>/mlruns.db` by default, artifacts in
  `<project root>/mlartifacts/<experiment>`; `MLFLOW_TRACKING_URI` overrides) and selecting the experiment;
- `provenance`: the git state and the `nhl.pipeline_run` tag shared by every run of one `dvc repro`;
- `records`: training records and results as MLflow params and metrics;
- `models`: logging and loading trained models (our model file + a pyfunc flavour logged as code);
- `run`: `ModelRun`, the run of one trained model (a no-op with one warning when the store is unreachable);
- `stale`: runs left RUNNING by a process that died are marked KILLED, with the reason as a tag.

The names below are the package's public surface; import them from `nhl.tracking`.
"""

from __future__ import annotations

import importlib
from typing import Any

# Each public name and the module that defines it: imported on first use, so a stage that only
# logs a run (the report) does not import torch through `models`.
_EXPORTS = {
    **dict.fromkeys(
        ("HASHER_ARTIFACT", "MODEL_REQUIREMENTS", "load_logged_model", "log_hasher", "pinned_requirements"), "models"
    ),
    **dict.fromkeys(
        ("GENERATED_PATHS", "PIPELINE_RUN_ENV", "PIPELINE_RUN_TAG", "git_state", "pipeline_run_tag"), "provenance"
    ),
    **dict.fromkeys(("epoch_metrics", "flatten_params", "result_metrics"), "records"),
    "ModelRun": "run",
    **dict.fromkeys(("STALE_TAG", "mark_stale_runs"), "stale"),
    **dict.fromkeys(
        (
            "ARTIFACTS_DIR",
            "DB_NAME",
            "DEFAULT_EXPERIMENT",
            "PROBE_ENV",
            "artifact_root",
            "configure",
            "find_project_root",
            "is_remote",
            "tracking_uri",
        ),
        "store",
    ),
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nhl.tracking' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"nhl.tracking.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "ARTIFACTS_DIR",
    "DB_NAME",
    "DEFAULT_EXPERIMENT",
    "GENERATED_PATHS",
    "HASHER_ARTIFACT",
    "MODEL_REQUIREMENTS",
    "PIPELINE_RUN_ENV",
    "PIPELINE_RUN_TAG",
    "PROBE_ENV",
    "STALE_TAG",
    "ModelRun",
    "artifact_root",
    "configure",
    "epoch_metrics",
    "find_project_root",
    "flatten_params",
    "git_state",
    "is_remote",
    "load_logged_model",
    "log_hasher",
    "mark_stale_runs",
    "pinned_requirements",
    "pipeline_run_tag",
    "result_metrics",
    "tracking_uri",
]
