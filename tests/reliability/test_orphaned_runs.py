"""No orphaned MLflow runs: a training killed with SIGKILL does not stay RUNNING.

The train stage runs in a subprocess with tracking on and is killed with SIGKILL once its first
epoch checkpoint exists (its MLflow run is RUNNING then, and nothing can end it). The next start
of the same stage marks that run KILLED with an `nhl.stale` tag saying why; `nhl audit` does the
same for the run of a registered version and reports its training link as broken, never as the
version's training run. States are read back from the sqlite store with MlflowClient.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
MODEL_ID = "csq-nhl-full"
SECTION = {
    "backbone": "smallcnn",
    "backbone_params": {"width": 8},
    "lengths": [8, 16],
    "epochs": 1,
    "batch_size": 100,
    "lr": 0.003,
    "seed": 0,
    "device": "cpu",
}


def runs_named(client, name: str):
    experiments = [e.experiment_id for e in client.search_experiments()]
    return [r for r in client.search_runs(experiments) if r.info.run_name == name]


@pytest.mark.slow
def test_a_sigkilled_stage_leaves_no_running_run_after_the_rerun(tmp_path, digits_manifest_dir, fresh_store):
    import mlflow

    uri = fresh_store(tmp_path / "mlruns.db")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    env.pop("DVC_STAGE", None)

    def stage(epochs: int) -> list[str]:
        params = tmp_path / f"params-{epochs}.yaml"
        params.write_text(yaml.safe_dump({"train": {**SECTION, "epochs": epochs}, "losses": {}}))
        return [
            sys.executable,
            str(PIPELINES / "train.py"),
            "--params",
            str(params),
            "--loss",
            "csq",
            "--variant",
            "nhl-full",
            "--manifest",
            str(digits_manifest_dir),
            "--out",
            str(tmp_path / "models"),
        ]

    checkpoint = tmp_path / "models" / "checkpoints" / MODEL_ID / "last.pt"
    proc = subprocess.Popen(stage(500), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    client = mlflow.MlflowClient(uri)
    (killed,) = runs_named(client, MODEL_ID)
    assert killed.info.status == "RUNNING"  # the orphan, as SIGKILL leaves it
    assert killed.data.tags["nhl.pid"] == str(proc.pid)

    done = subprocess.run(stage(1), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"MLflow run {killed.info.run_id} of {MODEL_ID} was left RUNNING" in done.stderr
    runs = {r.info.run_id: r for r in runs_named(client, MODEL_ID)}
    assert len(runs) == 2 and [r for r in runs.values() if r.info.status == "RUNNING"] == []
    old = runs.pop(killed.info.run_id)
    assert old.info.status == "KILLED"
    assert f"left RUNNING by process {proc.pid}" in old.data.tags["nhl.stale"]
    (new,) = runs.values()
    assert new.info.status == "FINISHED" and "nhl.stale" not in new.data.tags


KILLED_AFTER_LOGGING = textwrap.dedent("""
    import os, signal, sys, torch
    from nhl.models.hasher import Hasher, HasherSpec
    from nhl.tracking import ModelRun
    torch.manual_seed(0)
    with ModelRun("csq-nhl-full", {"lengths": [8, 16]}, project_root=sys.argv[1]) as run:
        run.log_model(Hasher(HasherSpec("smallcnn", 1, (8, 16), {"width": 8})))
        print(run.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.slow
def test_audit_marks_a_dead_run_and_never_cites_it_as_the_training_run(tmp_path, fresh_store, monkeypatch):
    """A version registered from a run whose process then died: `audit_trail` ends the run as
    KILLED and its training link is broken with the reason."""

    from nhl.registry import audit_trail
    from nhl.registry import versions as v

    uri = fresh_store(tmp_path / "mlruns.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_LOGGING, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    run_id = done.stdout.split()[-1]
    client = v.registry_client(tmp_path)  # also MLflow's process-wide URI, which registering reads
    assert client.get_run(run_id).info.status == "RUNNING"
    version = v.register_version(client, "nhl-orphan", client.get_run(run_id), {})
    client.set_registered_model_alias("nhl-orphan", v.CHAMPION, version.version)

    trail = audit_trail("nhl-orphan", v.CHAMPION, project_root=tmp_path)
    training = next(link for link in trail.links if link.name == "training run")
    assert not training.ok and not trail.complete
    assert "KILLED" in training.problem and "left RUNNING by process" in training.problem
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and "is gone" in run.data.tags["nhl.stale"]
