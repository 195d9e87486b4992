"""The Prefect `retrain` flow (pipelines/flows.py) on the tiny project, under Prefect's test
harness: it reproduces through DVC, stops at a failed validation before any training, retries a
transient failure but not a permanent one; and its deployment carries the cron of params.yaml."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # DVC repros of the tiny project (tens of seconds each)

ROOT = Path(__file__).resolve().parents[2]
DPN = ["models@dpn"]  # one stage trains and evaluates all of a loss's models
MODELS = ["csq-baseline-8", "csq-nhl-full", "dpn-baseline-8", "dpn-nhl-full"]


@pytest.fixture(scope="session")
def flows():
    """pipelines/flows.py, loaded the way `nhl schedule` loads it."""
    from nhl.commands.schedule import load_flows

    return load_flows(ROOT)


@pytest.fixture(scope="session")
def prefect():
    """A temporary Prefect API for the session (its start takes about 30 s on 2 cores). Its server runs
    Prefect's code only, so it starts without coverage's tracer (see `unmeasured` in tests/conftest.py)."""
    from contextlib import ExitStack

    from prefect.testing.utilities import prefect_test_harness

    with ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            patch.delenv("COVERAGE_PROCESS_CONFIG", raising=False)
            stack.enter_context(prefect_test_harness(server_startup_timeout=120))
        yield


@pytest.fixture
def project(built_project, tmp_path, monkeypatch):
    """A copy of the built tiny project; the flow's stages log to its own MLflow store and import its nhl/."""
    copy = built_project.copy(tmp_path / "project")
    for name in ("MLFLOW_TRACKING_URI", "PYTHONPATH"):
        monkeypatch.setenv(name, copy.env[name])
    monkeypatch.delenv("NHL_PIPELINE_RUN", raising=False)
    return copy


def _task_runs(flow_run_id, expected: int, timeout: float = 60) -> dict:
    """{task run name: task run} of a flow run, once `expected` of them are recorded in a final state
    (the API records task runs from events, shortly after the flow returns)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=100,
            )
        if (len(runs) >= expected and all(r.state and r.state.is_final() for r in runs)) or time.monotonic() > deadline:
            return {r.name: r for r in runs}
        time.sleep(0.5)


def _stages(project) -> list[str]:
    return project.dvc("stage", "list", "--name-only").stdout.split()


def test_flow_reproduces_only_changed_stages_through_dvc(prefect, flows, project):
    params = project.params()
    params["losses"]["dpn"]["margin"] = 0.5
    project.set_params(params)
    has_report = "report" in _stages(project)

    state = flows.retrain(project=str(project.root), return_state=True)

    assert state.is_completed(), state.message
    summary = state.result()
    assert [s for s in summary["stages_run"] if s != "scan"] == DPN + (["report"] if has_report else [])
    assert summary["validation"]["success"] is True and summary["validation"]["failed"] == []
    assert summary["validation"]["sizes"] == {"train": 500, "val": 100, "query": 100, "database": 1097}
    assert summary["models"] == MODELS
    assert summary["metrics"] == [f"metrics/{m.split('-')[0]}/{m}.json" for m in MODELS]
    assert summary["report"] == ("reports/comparison.md" if has_report else None)
    # The flow shared DVC's lock file: a manual `dvc status` sees nothing left to do (scan always runs).
    assert json.loads(project.dvc("status", "--json").stdout) == {"scan": ["always changed"]}
    # the last task registered each nhl-full model and promoted it (first versions become champion)
    promoted = {d["model_id"]: (d["registered"], d["promoted"], d["alias"]) for d in summary["promotion"]}
    assert promoted == {"csq-nhl-full": (True, True, "champion"), "dpn-nhl-full": (True, True, "champion")}
    assert (project.root / "reports" / "promotion.md").is_file()
    runs = _task_runs(state.state_details.flow_run_id, expected=6)
    expected = {"data", "validate", "report", "promote", *(f"train-evaluate[{loss}]" for loss in ("csq", "dpn"))}
    assert {name.rsplit("-", 1)[0] if not name.startswith("train-") else name for name in runs} == expected
    assert all(run.state.is_completed() for run in runs.values())
    # The retrained models' MLflow runs carry the flow run's id as their pipeline-run tag.
    import mlflow

    client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
    tagged = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`nhl.pipeline_run` = 'prefect-{state.state_details.flow_run_id}'",
    )
    retrained = {"dpn-baseline-8", "dpn-nhl-full"} | ({"report"} if has_report else set())
    assert sorted(r.data.tags.get("nhl.model_id") for r in tagged) == sorted(retrained)


def test_failed_validation_stops_the_flow_before_training(prefect, flows, project):
    from nhl.orchestration import ValidationFailed

    root = project.root
    lines = (root / "data/splits/manifest.csv").read_text().splitlines()
    (root / "data/splits/manifest.csv").write_text("\n".join(lines[:-1]) + "\n")  # lose one database row
    project.dvc("commit", "--force", "split")  # as if the split stage had produced it
    models_before = {p.name: p.stat().st_mtime_ns for p in (root / "models").glob("*/*.pt")}

    state = flows.retrain(project=str(root), return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ValidationFailed)
    for message in (str(error), state.message):
        assert "database has 1097 rows as protocol digits says" in message
        assert "content hash matches manifest.json" in message
    assert [c["check"] for c in error.failed] == [
        "database has 1097 rows as protocol digits says",
        "content hash matches manifest.json",
    ]
    assert json.loads((root / "reports/validation/result.json").read_text())["success"] is False
    runs = _task_runs(state.state_details.flow_run_id, expected=2)
    assert sorted(name.rsplit("-", 1)[0] for name in runs) == ["data", "validate"]  # no train, no report
    validate = next(run for name, run in runs.items() if name.startswith("validate"))
    assert validate.state.is_failed() and validate.run_count == 1  # a data failure is not retried
    assert {p.name: p.stat().st_mtime_ns for p in (root / "models").glob("*/*.pt")} == models_before


def test_validate_task_logic_without_prefect(flows, project):
    """`.fn` is the plain function: no API, DVC's output goes to a plain logger."""
    import shutil

    shutil.rmtree(project.root / "reports/validation")  # an output lost: DVC must run the stage again
    ran, verdict = flows.validate.fn(str(project.root))
    assert ran == ["scan", "validate"]  # scan (always run) hashes data.root; fetch and split are skipped
    assert verdict["success"] is True and verdict["failed"] == [] and verdict["protocol"] == "digits"
    assert json.loads(project.dvc("status", "--json").stdout) == {"scan": ["always changed"]}  # nothing to retrain
    assert flows.validate.fn(str(project.root)) == (["scan"], verdict)  # up to date: DVC skips it


def test_a_held_dvc_lock_is_retried_and_bad_input_is_not(prefect, flows, project):
    import zc.lockfile
    from prefect import flow

    from nhl.orchestration import StageFailed

    failures: list[BaseException] = []
    lock = zc.lockfile.LockFile(str(project.root / ".dvc/tmp/lock"))  # held, as by a manual `dvc repro`

    def release_then_decide(task, task_run, state) -> bool:
        failures.append(state.data)
        lock.close()  # no-op once released
        return flows.retry_if_transient(task, task_run, state)

    @flow
    def one_step(name: str, root: str) -> str:
        step = getattr(flows, name).with_options(retry_delay_seconds=0, retry_condition_fn=release_then_decide)
        return step(root, return_state=True).type.value  # the task's final state, the flow completes

    assert one_step("report", str(project.root)) == "COMPLETED"  # the second try, once the lock was free
    assert len(failures) == 1 and isinstance(failures[0], StageFailed)
    assert failures[0].stage is None and failures[0].transient
    assert "Unable to acquire lock" in str(failures[0])

    params = project.params()
    params["data"]["query"] = 500  # more than digits has: split exits 2 (bad input)
    project.set_params(params)
    assert one_step("data", str(project.root)) == "FAILED"
    assert len(failures) == 2  # failed once, not retried
    assert (failures[1].stage, failures[1].exit_code, failures[1].transient) == ("split", 2, False)
    assert "needs 500 (query 500)" in str(failures[1])


def test_retry_condition_tells_transient_from_permanent(flows):
    from prefect.states import Failed

    from nhl.orchestration import StageFailed, ValidationFailed

    def retries(error: BaseException) -> bool:
        return flows.retry_if_transient(None, None, Failed(data=error))

    killed = StageFailed(
        ["evaluate@m"], 255, "ERROR: failed to reproduce 'train@m': failed to run: python x, exited with -9\n"
    )
    bad_input = StageFailed(
        ["evaluate@m"], 255, "ERROR: failed to reproduce 'train@m': failed to run: python x, exited with 2\n"
    )
    lock = StageFailed(["split"], 255, "ERROR: Unable to acquire lock. Most likely another DVC process is running\n")
    gate = ValidationFailed(
        {"success": False, "checks": [{"check": "no empty labels", "observed": "3 unexpected", "success": False}]}
    )
    assert (killed.stage, killed.exit_code) == ("train@m", -9)
    assert [retries(e) for e in (killed, lock, OSError("disk"), bad_input, gate)] == [True, True, True, False, False]
    assert str(gate) == (
        "manifest validation failed 1 of 1 checks: no empty labels (3 unexpected); see reports/validation/audit.md"
    )
    for step in (flows.data, flows.validate, flows.train_evaluate, flows.report):
        assert step.retries == 2 and step.retry_condition_fn is flows.retry_if_transient


def test_nhl_schedule_once_runs_the_flow_and_reports_a_failure(prefect, project, monkeypatch, capfd):
    import argparse

    from nhl.commands import schedule

    for name, value in schedule.prefect_environment(project.root).items():
        monkeypatch.setenv(name, value)  # what the command would set, undone after the test
    params = project.params()
    params["data"]["query"] = 500  # split fails at once with bad input: no retry, no training
    project.set_params(params)
    parser = argparse.ArgumentParser(prog="nhl")
    schedule.register(parser.add_subparsers(dest="command"))
    assert schedule.run(parser.parse_args(["schedule", "--once", "--project-root", str(project.root)])) == 1
    err = capfd.readouterr().err  # Prefect's log lines may come first
    assert "nhl schedule: retrain failed: dvc repro split: stage 'split' exited with 2" in err.splitlines()
    assert "needs 500 (query 500)" in err.split("nhl schedule: retrain failed")[1]
    assert "`dvc checkout split` restores the last good ones" in err.split("nhl schedule: retrain failed")[1]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_local_prefect_server_answers_and_stops(tmp_path, unmeasured):
    import urllib.request

    from nhl.commands.schedule import _port_in_use, local_prefect_server

    port = _free_port()
    with local_prefect_server(port, tmp_path / "server.log") as api_url:
        assert api_url == f"http://127.0.0.1:{port}/api"
        with urllib.request.urlopen(f"{api_url}/health", timeout=10) as response:
            assert response.status == 200
    assert not _port_in_use(port)  # stopped with the block
    assert (tmp_path / "server.log").stat().st_size > 0


def test_local_prefect_server_refuses_a_busy_port(tmp_path):
    import socket

    from nhl.cli import CLIError
    from nhl.commands.schedule import local_prefect_server

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(CLIError, match=f"127.0.0.1:{port} is already in use"):
            with local_prefect_server(port, tmp_path / "server.log"):
                pass
    assert not (tmp_path / "server.log").exists()


def test_prefect_settings_default_to_the_project(tmp_path):
    from nhl.commands.schedule import prefect_environment

    env = prefect_environment(tmp_path, {"PREFECT_SERVER_ANALYTICS_ENABLED": "true"})
    assert env["PREFECT_HOME"] == str(tmp_path / ".prefect")
    assert env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "120"
    assert "PREFECT_SERVER_ANALYTICS_ENABLED" not in env  # a setting already made is kept
    assert prefect_environment(tmp_path, {"PREFECT_HOME": "/elsewhere"}).get("PREFECT_HOME") is None


def test_stage_environment_runs_this_interpreter(tmp_path):
    import os
    import sys

    from nhl.orchestration import dvc_env

    env = dvc_env({"NHL_PIPELINE_RUN": "x"}, base={"PATH": "/usr/bin:/bin", "MLFLOW_DISABLE_TELEMETRY": "false"})
    assert env["PATH"] == os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "false" and env["NHL_PIPELINE_RUN"] == "x"  # the caller's choice wins
    assert dvc_env(base={})["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert dvc_env(base=env)["PATH"] == env["PATH"]  # not prepended twice


def test_deployment_carries_the_configured_cron(flows, tmp_path):
    configured = yaml.safe_load((ROOT / "params.yaml").read_text())["schedule"]
    deployment = flows.deployment(ROOT)
    schedule = deployment.schedules[0].schedule
    assert (schedule.cron, schedule.timezone) == (configured["cron"], configured["timezone"])
    assert deployment.name == "retrain" and deployment.parameters == {"project": str(ROOT)}

    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"schedule": {"cron": "30 2 * * *", "timezone": "Europe/Paris"}})
    )
    schedule = flows.deployment(tmp_path).schedules[0].schedule
    assert (schedule.cron, schedule.timezone) == ("30 2 * * *", "Europe/Paris")


@pytest.mark.parametrize(
    "section, fragment",
    [
        ({"cron": "61 3 * * 1", "timezone": "UTC"}, "schedule.cron: Invalid cron string"),
        ({"cron": "", "timezone": "UTC"}, "schedule.cron: expected a cron string"),
        ({"cron": "0 3 * * 1", "timezone": "Mars/Olympus"}, "schedule.timezone: expected an IANA name"),
        (None, "has no `schedule` section"),
    ],
)
def test_bad_schedule_is_a_one_line_error(flows, tmp_path, section, fragment):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"schedule": section} if section else {"data": {}}))
    with pytest.raises(ValueError, match=fragment) as caught:
        flows.deployment(tmp_path)
    assert "\n" not in str(caught.value)
