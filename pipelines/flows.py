"""Prefect flow `retrain`: the DVC pipeline as tasks, and its scheduled deployment.

Every task runs `dvc repro <target>` (see nhl.orchestration), so a scheduled run and a manual
`dvc repro` share one cache and one dvc.lock, and a stage that is up to date is skipped. Order:
data (fetch, split) -> validate (the gate: a failure stops the flow before any training, naming
the failed checks) -> train + evaluate, one task per loss (stage `models@<loss>`, which redoes
only the models that changed) -> report (every stage still out of
date, the report included). Tasks retry transient failures (a held DVC lock, a killed or crashed
command), never a rejected data set or a stage's bad-input exit.

    python pipelines/flows.py     # run the flow once, now (Prefect starts a temporary local API)
    nhl schedule [--once]         # serve the deployment (cron from params.yaml `schedule`) / run once
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _params import read_section  # pipelines/ is on sys.path when this file is run or loaded by Prefect
from prefect import flow, task
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from nhl.orchestration import (
    VALIDATION_RESULT,
    StageFailed,
    ValidationFailed,
    read_validation,
    repro,
    stage_names,
    validation_summary,
)

PROJECT = Path(__file__).resolve().parents[1]
RETRIES = 2
RETRY_DELAY_S = 30
DEPLOYMENT_NAME = "retrain"
REPORT = Path("reports/comparison.md")


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry unless the failure is in the data or the input.

    A `ValidationFailed` never retries (the data will not change by waiting), nor a
    `StageFailed` whose stage exited with its bad-input status; anything else may be transient.
    """
    error = getattr(state, "data", None)
    if isinstance(error, ValidationFailed):
        return False
    if isinstance(error, StageFailed):
        return error.transient
    return True


def _log() -> Callable[[str], None]:
    """The task run's logger (the flow UI shows DVC's output), or a plain one outside Prefect."""
    try:
        return get_run_logger().info
    except MissingContextError:
        return logging.getLogger("nhl.flows").info


def _env() -> dict[str, str]:
    """Tag every MLflow run of this flow run alike (`nhl.pipeline_run` = the flow run id)."""
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    return {"NHL_PIPELINE_RUN": f"prefect-{run_id}"} if run_id else {}


_retrying = dict(retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=retry_if_transient)


@task(name="data", **_retrying)
def data(project: str) -> list[str]:
    """Stages fetch and split; returns the stages DVC ran."""
    return repro(["split"], project, _env(), _log()).ran


@task(name="validate", **_retrying)
def validate(project: str) -> tuple[list[str], dict]:
    """Stage validate; returns the stages DVC ran and the verdict's summary, or raises
    `ValidationFailed` naming the failed checks."""
    started = time.time() - 1.0  # file times may be coarser than the clock
    try:
        ran = repro(["validate"], project, _env(), _log()).ran
    except StageFailed:
        result = read_validation(project, since=started)
        if result is not None and not result.get("success"):
            raise ValidationFailed(result) from None
        raise
    result = read_validation(project)
    if result is None:
        raise FileNotFoundError(f"{Path(project) / VALIDATION_RESULT} is missing after the validate stage")
    return ran, validation_summary(result)


@task(name="train-evaluate", task_run_name="train-evaluate[{loss}]", **_retrying)
def train_evaluate(project: str, loss: str) -> list[str]:
    """Stage models@<loss>: trains and evaluates the loss's changed models; returns the stages DVC ran."""
    return repro([f"models@{loss}"], project, _env(), _log()).ran


@task(name="report", **_retrying)
def report(project: str) -> list[str]:
    """Every stage still out of date: the report, and any stage added to dvc.yaml later."""
    return repro([], project, _env(), _log()).ran


@task(name="promote")  # no retries: a bad-input error is permanent, and a rerun is safe anyway
def promote(project: str) -> list[dict]:
    """Last task: register each `registry.variant` model and run the promotion gate
    (writes reports/promotion.md; says why a model was not promoted)."""
    from promote import promote_project  # pipelines/promote.py

    decisions = promote_project(project)
    for decision in decisions:
        _log()(decision.summary())
    return [decision.to_dict() for decision in decisions]


# Stages DVC runs on every repro (`always_changed`): the scan of data.root, which reruns nothing
# downstream unless an image changed. Reporting them would make every run look like work.
ALWAYS_RUN = ("scan",)


@flow(name="retrain")
def retrain(project: str | None = None) -> dict:
    """Reproduce the project's pipeline through DVC; returns what ran and what it produced.

    `project` is the project directory (default: the checkout holding this file). The result:
    `stages_run` (in order; skipped stages and the always-run `scan` stage are absent, so an
    up-to-date project reports nothing), `validation` (verdict, failed checks,
    split sizes), `models`, `metrics` (files relative to the project), `report` (or None) and
    `promotion` (the gate's decision per registered model).
    """
    from nhl.layout import metrics_file

    root = Path(project or PROJECT).resolve()
    losses = [name.split("@", 1)[1] for name in stage_names(root) if name.startswith("models@")]
    variants = read_section(root / "params.yaml", "models").get("variants") or []
    models = [f"{loss}-{variant}" for loss in losses for variant in variants]
    ran = data(str(root))
    validated, verdict = validate(str(root))
    ran += validated
    for loss in losses:
        ran += train_evaluate(str(root), loss)
    ran += report(str(root))
    promotion = promote(str(root))
    found = [metrics_file(root / "metrics", m) for m in models]
    metrics = [str(path.relative_to(root)) for path in found if path.is_file()]
    return {
        "project": str(root),
        "stages_run": [stage for stage in ran if stage not in ALWAYS_RUN],
        "validation": verdict,
        "models": models,
        "metrics": metrics,
        "report": str(REPORT) if (root / REPORT).is_file() else None,
        "promotion": promotion,
    }


def schedule_settings(params: Path) -> tuple[str, str]:
    """(cron, timezone) from the `schedule` section of a params file, checked."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    section = read_section(params, "schedule")
    cron, timezone = section.get("cron"), section.get("timezone", "UTC")
    if not isinstance(cron, str) or not cron.strip():
        raise ValueError(f"{params}: schedule.cron: expected a cron string such as '0 3 * * 1', got {cron!r}")
    try:
        ZoneInfo(timezone)
    except (TypeError, ValueError, ZoneInfoNotFoundError):
        raise ValueError(
            f"{params}: schedule.timezone: expected an IANA name such as 'UTC', got {timezone!r}"
        ) from None
    return cron, timezone


def deployment(project: str | Path | None = None, name: str = DEPLOYMENT_NAME):
    """The retraining deployment (a Prefect `RunnerDeployment`) on the cron of `<project>/params.yaml`.

    Building it needs no server. `prefect.serve(deployment(...))` runs it on schedule, against a
    Prefect server whose scheduler runs (Prefect's temporary one has none; `nhl schedule` starts one).
    """
    from prefect.schedules import Cron

    root = Path(project or PROJECT).resolve()
    cron, timezone = schedule_settings(root / "params.yaml")
    try:
        schedule = Cron(cron, timezone=timezone)
    except ValueError as err:
        raise ValueError(f"{root / 'params.yaml'}: schedule.cron: {str(err).splitlines()[0]}") from None
    return retrain.to_deployment(
        name=name,
        schedule=schedule,
        parameters={"project": str(root)},
        description=f"Reproduce the DVC pipeline of {root} ({cron}, {timezone}).",
        tags=["nhl"],
    )


if __name__ == "__main__":
    print(retrain())
