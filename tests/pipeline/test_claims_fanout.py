"""The claims plan fanned out over a Dask LocalCluster through Prefect (`--executor dask`).

One run of `pipelines/claims.py --executor dask` on a 2-cell plan (digits, 1 epoch, one model per
cell) with 2 worker processes, each with its own clone of the tiny project made from a bare git
repository, and a local-folder DVC remote; while a cell trains, its worker process is killed. The
collected metrics are checked against the tiny project's own sequential `dvc repro` (the `built`
fixture trains the same two models with the same parameters and seed), then a rerun must skip
both cells. The commit check and the option rules run without a cluster.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nhl.claims.fanout import CloneMismatch, prepare_clone, remote_experiments
from nhl.layout import metrics_file

ROOT = Path(__file__).resolve().parents[2]
# Two settings of one loss: cell `base` trains csq-baseline-8, cell `nested` csq-nhl-full, both with
# the tiny project's own parameters and seed, so `dvc repro` of the tiny project is their reference.
PLAN = """\
experiment:
  prefix: fan
  datasets: {digits: {}}
  seeds: [0]
  losses: [csq]
  loss_params: {csq: {quant_weight: 0.0001}}
  settings:
    base: {variants: [baseline-8], overrides: {report.examples.variant: baseline-8}}
    nested: {variants: [nhl-full]}
report: {baseline_setting: base, centres_setting: null, faithful_setting: null}
"""
CELLS = {"digits-s0-base": "csq-baseline-8", "digits-s0-nested": "csq-nhl-full"}  # cell id: its model
STATUS = re.compile(r"^claims: \[\d/2\] fan-(digits-s0-\w+)-[0-9a-f]{8}: (\w+)", re.MULTILINE)


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True)
    return done.stdout.strip()


@dataclass
class Fanout:
    base: Path
    project: Path
    env: dict[str, str]
    first: subprocess.CompletedProcess
    seconds: float
    killed: dict = field(default_factory=dict)

    def claims(self, *extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "pipelines/claims.py", "--params", "plan.yaml", "--executor", "dask"]
        command += ["--workers", "2", "--git-remote", str(self.base / "remote.git")]
        command += ["--dvc-remote", str(self.base / "dvc-remote"), "--workdir", str(self.base / "clones" / "{worker}")]
        return subprocess.run(command + list(extra), cwd=self.project, env=self.env, capture_output=True, text=True)


def _kill_a_worker_mid_training(clones: Path, killed: dict, stop: threading.Event) -> None:
    """When a cell's training stage starts, SIGKILL the Dask worker process that runs it."""
    while not stop.wait(0.2):
        for pidfile in clones.glob("*/.dvc/tmp/nhl-claims/cell.pid"):
            logs = list(pidfile.parent.glob("*.log"))
            if not any("Running stage 'models@" in p.read_text(errors="replace") for p in logs):
                continue
            try:
                dvc_pid = int(pidfile.read_text().split()[1])
                worker = int(Path(f"/proc/{dvc_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                os.kill(worker, signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                continue
            killed.update(worker=worker, clone=pidfile.parents[3].name, cell=logs[0].stem)
            return


@pytest.fixture(scope="module")
def fanout(tiny_project, tmp_path_factory) -> Fanout:
    base = tmp_path_factory.mktemp("fanout")
    project = tiny_project.copy(base / "project").root
    (project / "plan.yaml").write_text(PLAN)
    git(project, "add", "-A")
    git(project, "-c", "user.name=nhl", "-c", "user.email=nhl@example.org", "commit", "-qm", "tiny project")
    git(base, "init", "-q", "--bare", "remote.git")
    git(project, "push", "-q", str(base / "remote.git"), "HEAD:refs/heads/main")
    (base / "dvc-remote").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # each clone: its own store
    env.update(PYTHONPATH=str(project), MLFLOW_DISABLE_TELEMETRY="true", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    killed: dict = {}
    stop = threading.Event()
    killer = threading.Thread(target=_kill_a_worker_mid_training, args=(base / "clones", killed, stop), daemon=True)
    result = Fanout(base, project, env, subprocess.CompletedProcess([], 0), 0.0, killed)
    killer.start()
    start = time.monotonic()
    result.first = result.claims()
    result.seconds = time.monotonic() - start
    (base / "first.log").write_text(result.first.stdout + result.first.stderr)
    stop.set()
    killer.join()
    return result


def _statuses(output: str) -> list[tuple[str, str]]:
    return STATUS.findall(output)


@pytest.mark.slow  # the fixture: one 2-cell run on a 2-worker LocalCluster (minutes on 2 busy cores)
def test_every_cell_runs_once_despite_a_killed_worker(fanout):
    out = fanout.first.stdout + fanout.first.stderr
    assert fanout.first.returncode == 0, out[-4000:]
    assert fanout.killed, "no worker was killed during a cell"
    assert "claims: 2 of 2 models" in fanout.first.stdout
    # one status line per cell, each run (or pushed after a killed attempt) once
    statuses = _statuses(fanout.first.stdout)
    assert sorted(cell for cell, _ in statuses) == sorted(CELLS)
    assert {status for _, status in statuses} <= {"ran", "pushed"}
    head = git(fanout.project, "rev-parse", "HEAD")
    remote = remote_experiments(fanout.project, str(fanout.base / "remote.git"), head)
    assert sorted(name.removeprefix("fan-").rsplit("-", 1)[0] for name in remote) == sorted(CELLS)
    claims = json.loads((fanout.project / "reports/claims/claims.json").read_text())
    assert sorted(c["cell_id"] for c in claims["cells"]) == sorted(CELLS)
    assert all(c["machine"] and "CPU core" in c["machine"] for c in claims["cells"])
    assert claims["warnings"] == []  # both cells ran on this machine


@pytest.mark.slow
def test_collected_metrics_equal_the_sequential_run(fanout, built_project):
    for cell, model in CELLS.items():
        collected = json.loads((fanout.project / f"reports/claims/runs/{cell}/metrics/{model}.json").read_text())
        sequential = json.loads(metrics_file(built_project.root / "metrics", model).read_text())
        assert collected["bits"].keys() == sequential["bits"].keys()
        for bits, values in sequential["bits"].items():
            for metric in ("map", "p_at_100", "p_at_r2"):
                assert collected["bits"][bits][metric] == pytest.approx(values[metric], abs=1e-6), (model, bits, metric)
        assert collected["train_seconds"] > 0  # measured inside the cell, on the worker


@pytest.mark.slow
def test_a_rerun_skips_finished_cells(fanout):
    logs = {p: p.stat().st_mtime for p in (fanout.base / "clones").glob("*/.dvc/tmp/nhl-claims/*.log")}
    again = fanout.claims()
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(_statuses(again.stdout)) == sorted((cell, "skipped") for cell in CELLS)
    assert "claims: 2 of 2 models" in again.stdout
    assert {p: p.stat().st_mtime for p in logs} == logs  # no cell ran again


def test_a_clone_at_another_commit_is_refused(tmp_path):
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q")
    for text in ("one", "two"):
        (origin / "file.txt").write_text(text)
        git(origin, "add", "file.txt")
        git(origin, "-c", "user.name=nhl", "-c", "user.email=nhl@example.org", "commit", "-qm", text)
    first, second = git(origin, "rev-parse", "HEAD~1"), git(origin, "rev-parse", "HEAD")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    with pytest.raises(CloneMismatch, match=f"is at commit {second[:10]}, the plan at {first[:10]}") as err:
        prepare_clone(clone, str(origin), first, None)
    assert "\n" not in str(err.value)
    (clone / "file.txt").write_text("changed")
    with pytest.raises(CloneMismatch, match="uncommitted changes"):
        prepare_clone(clone, str(origin), second, None)
    with pytest.raises(CloneMismatch, match="is not in"):
        prepare_clone(tmp_path / "new", str(origin), "0" * 40, None)


def _claims_flow():
    spec = importlib.util.spec_from_file_location("claims_flow", ROOT / "pipelines" / "claims_flow.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["claims_flow"] = module
    spec.loader.exec_module(module)
    return module


def test_options_and_retry_rule(tmp_path):
    flow = _claims_flow()
    local = flow.resolve(flow.FanoutOptions(), tmp_path)
    assert local.git_remote == str(tmp_path) and local.cache_dir == str(tmp_path / ".dvc" / "cache")
    assert local.workdir == str(tmp_path / ".dvc/tmp/claims-workers/{worker}")
    with pytest.raises(ValueError, match="2 local workers need a clone each; add {worker}"):
        flow.resolve(flow.FanoutOptions(workdir="clones/one"), tmp_path)
    with pytest.raises(ValueError, match="--scheduler: also give --git-remote, --dvc-remote and --workdir"):
        flow.resolve(flow.FanoutOptions(scheduler="tcp://127.0.0.1:8786"), tmp_path)
    remote = flow.resolve(
        flow.FanoutOptions("tcp://h:8786", 2, "git@host:nhl.git", "s3://bucket/nhl", "/srv/nhl"), tmp_path
    )
    assert (remote.git_remote, remote.dvc_remote, remote.workdir, remote.cache_dir) == (
        "git@host:nhl.git",
        "s3://bucket/nhl",
        "/srv/nhl",
        None,
    )

    from prefect.states import Failed

    from nhl.claims.fanout import CellFailed

    def failed(err: Exception):
        return Failed(data=err)

    assert flow.retry_unless_refused(None, None, failed(CloneMismatch("other commit"))) is False
    assert flow.retry_unless_refused(None, None, failed(CellFailed("exit 2", permanent=True))) is False
    assert flow.retry_unless_refused(None, None, failed(CellFailed("killed"))) is True
    assert flow.retry_unless_refused(None, None, failed(OSError("lock"))) is True


@pytest.mark.slow
def test_worker_steps_in_process(fanout):
    """The worker's steps on the clones the run left: a cell in the remote is skipped, one only in the
    clone is pushed (not rerun), a clone is re-checked, the machine is read back from the commit."""
    from nhl.claims.fanout import machine_of, run_cell_in_clone
    from nhl.claims.machine import describe_machine
    from nhl.claims.plan import Cell

    remote_git = str(fanout.base / "remote.git")
    head = git(fanout.project, "rev-parse", "HEAD")
    remote = remote_experiments(fanout.project, remote_git, head)
    clone = next(c for c in (fanout.base / "clones").iterdir() if git(c, "for-each-ref", "refs/exps"))
    assert prepare_clone(clone, remote_git, head, str(fanout.base / "dvc-remote")) == clone
    name = git(clone, "for-each-ref", "--format=%(refname:short)", "refs/exps").splitlines()[0].rsplit("/", 1)[1]
    cell = Cell("digits", 0, name.split("-")[3], ("csq",), (), {})
    assert machine_of(fanout.project, remote[name]) == describe_machine()
    assert run_cell_in_clone(clone, cell, name, remote_git, "m").status == "skipped"
    git(fanout.base / "remote.git", "update-ref", "-d", f"refs/exps/{head[:2]}/{head[2:]}/{name}")
    run = run_cell_in_clone(clone, cell, name, remote_git, "m")
    assert (run.status, run.rev) == ("pushed", remote[name])
    assert remote_experiments(fanout.project, remote_git, head)[name] == remote[name]


@pytest.mark.slow
def test_a_failed_cell_names_its_log(fanout):
    from nhl.claims.fanout import CellFailed, run_cell_in_clone
    from nhl.claims.plan import Cell

    clone = next((fanout.base / "clones").iterdir())
    with pytest.raises(CellFailed, match=r"dvc exp run exited with \d+ in .*last lines of .*bad\.\.name\.log") as err:
        run_cell_in_clone(
            clone, Cell("digits", 0, "x", ("csq",), (), {}), "bad..name", str(fanout.base / "remote.git"), "m"
        )
    assert not err.value.permanent  # DVC itself refused: no stage's bad-input exit


def test_a_dead_workers_cell_is_reaped(tmp_path):
    import socket

    from nhl.claims.fanout import PIDFILE, reap_leftover

    left = subprocess.Popen(["sleep", "60"], start_new_session=True)
    (tmp_path / PIDFILE).parent.mkdir(parents=True)
    (tmp_path / PIDFILE).write_text(f"{socket.gethostname()} {left.pid}\n")
    assert reap_leftover(tmp_path) is True
    assert left.wait(timeout=10) == -signal.SIGKILL and not (tmp_path / PIDFILE).exists()
    assert reap_leftover(tmp_path) is False  # nothing recorded
