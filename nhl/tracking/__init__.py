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

from nhl.tracking.models import HASHER_ARTIFACT, MODEL_REQUIREMENTS, load_logged_model, log_hasher, pinned_requirements
from nhl.tracking.provenance import GENERATED_PATHS, PIPELINE_RUN_ENV, PIPELINE_RUN_TAG, git_state, pipeline_run_tag
from nhl.tracking.records import epoch_metrics, flatten_params, result_metrics
from nhl.tracking.run import ModelRun
from nhl.tracking.stale import STALE_TAG, mark_stale_runs
from nhl.tracking.store import (ARTIFACTS_DIR, DB_NAME, DEFAULT_EXPERIMENT, PROBE_ENV, artifact_root, configure,
                                find_project_root, is_remote, tracking_uri)

__all__ = [
    "ARTIFACTS_DIR", "DB_NAME", "DEFAULT_EXPERIMENT", "GENERATED_PATHS", "HASHER_ARTIFACT", "MODEL_REQUIREMENTS",
    "PIPELINE_RUN_ENV", "PIPELINE_RUN_TAG", "PROBE_ENV", "STALE_TAG", "ModelRun", "artifact_root", "configure",
    "epoch_metrics", "find_project_root", "flatten_params", "git_state", "is_remote", "load_logged_model",
    "log_hasher", "mark_stale_runs", "pinned_requirements", "pipeline_run_tag", "result_metrics", "tracking_uri",
]
