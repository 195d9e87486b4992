"""A tiny copy of the project (digits, 1 epoch, 2 losses x 2 variants) to run DVC and the flow on.

`tiny_project` is the fresh copy; `built_project` is it after one `dvc repro` (12 stages with report).
Tests that change a project work on `built_project.copy(tmp_path)`, which is cheap, so the one
full build is shared by the whole session.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

# Prefect keeps profiles and local state in PREFECT_HOME (~/.prefect by default): keep tests out of it.
# Prefect reads its settings when imported, so this must run before any test module imports it.
# Each pytest-xdist worker gets its own: two ephemeral Prefect servers on one sqlite file lock each other.
if "PREFECT_HOME" not in os.environ or os.environ.get("PYTEST_XDIST_WORKER"):
    _home = tempfile.mkdtemp(prefix="nhl-test-prefect-")
    atexit.register(shutil.rmtree, _home, True)
    os.environ["PREFECT_HOME"] = _home
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "data": {
        "dataset": "digits",
        "protocol": "digits",
        "query": None,
        "train": None,
        "val": None,
        "train_in_database": None,
        "validate_sample": 8,
    },
    "train": {"epochs": 1, "backbone_params": {"width": 8}, "lengths": [8, 16], "batch_size": 64},
    "models": {"losses": ["csq", "dpn"], "variants": ["baseline-8", "nhl-full"]},
    "evaluate": {"pr_lengths": [8, 16]},
}


@dataclass
class Project:
    """A project directory and the environment its stages run in (this venv, its own MLflow store)."""

    root: Path

    @property
    def env(self) -> dict[str, str]:
        from nhl.orchestration import dvc_env

        return dvc_env(
            {
                "MLFLOW_TRACKING_URI": f"sqlite:///{self.root / 'mlruns.db'}",
                "PYTHONPATH": str(self.root),  # stages import this copy's nhl/, the one DVC hashes
                "NHL_PIPELINE_RUN": "",
            }
        )

    def dvc(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run `dvc *args` here; with `check`, a failure raises showing DVC's output."""
        done = subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"dvc {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def set_params(self, params: dict) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def copy(self, dest: Path) -> Project:
        """A full copy (git, DVC cache, outputs, MLflow store) at `dest`, file times kept."""
        shutil.copytree(self.root, dest, symlinks=True)
        return Project(dest)


def _merge(base: dict, changes: dict) -> dict:
    return {
        key: ({**value, **changes[key]} if isinstance(value, dict) and key in changes else value)
        for key, value in base.items()
    }


def make_tiny_project(dest: Path) -> Project:
    """Copy dvc.yaml, params.yaml (shrunk to `TINY`), pipelines/ and nhl/ to `dest`; git and DVC init."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "dvc.yaml", dest / "dvc.yaml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "pipelines", dest / "pipelines", ignore=ignore)
    shutil.copytree(ROOT / "nhl", dest / "nhl", ignore=ignore)
    project = Project(dest)
    project.set_params(_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY))
    (dest / ".gitignore").write_text("/mlruns.db\n/mlartifacts/\n/.prefect/\n__pycache__/\n")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    project.dvc("init", "-q")
    project.dvc("config", "core.analytics", "false")
    if (ROOT / ".dvc/plots").is_dir():  # the custom plot templates dvc.yaml names
        shutil.copytree(ROOT / ".dvc/plots", dest / ".dvc/plots", dirs_exist_ok=True)
    return project


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Project:
    return make_tiny_project(tmp_path_factory.mktemp("tiny") / "project")


@dataclass
class Build:
    project: Project
    output: str
    seconds: float


def _build(tiny_project: Project, dest: Path) -> Build:
    project = tiny_project.copy(dest)
    start = time.monotonic()
    done = project.dvc("repro")
    return Build(project, done.stdout + done.stderr, time.monotonic() - start)


@pytest.fixture(scope="session")
def built(tiny_project, tmp_path_factory) -> Build:
    """The tiny project after one full `dvc repro` (its output and wall time kept).

    Under pytest-xdist the workers share one build (the repro is minutes on 2 cores): the first
    worker to need it builds it in the run's common temporary folder while holding a lock, the
    others wait on the lock and then read it. Tests never change it (they work on copies)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _build(tiny_project, tmp_path_factory.mktemp("built") / "project")
    shared = tmp_path_factory.getbasetemp().parent / "built-shared"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = shared / "build.json"
        if not record.exists():
            shutil.rmtree(shared / "project", ignore_errors=True)  # what a failed build of another worker left
            build = _build(tiny_project, shared / "project")
            record.write_text(json.dumps({"output": build.output, "seconds": build.seconds}))
            return build
    saved = json.loads(record.read_text())
    return Build(Project(shared / "project"), saved["output"], saved["seconds"])


@pytest.fixture(scope="session")
def built_project(built) -> Project:
    return built.project
