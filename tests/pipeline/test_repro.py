"""`dvc repro` of the whole stage graph on a tiny copy of the project: every output, the MLflow
runs, a no-op second run, a parameter change that retrains only its own loss's models, an added
variant that trains only the new models, and recovery from a `dvc repro` killed mid-training."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # DVC repros of the tiny project (tens of seconds each)

MODELS = ("csq-baseline-8", "csq-nhl-full", "dpn-baseline-8", "dpn-nhl-full")  # conftest's tiny project
BITS = {"csq-baseline-8": ["8"], "csq-nhl-full": ["8", "16"], "dpn-baseline-8": ["8"], "dpn-nhl-full": ["8", "16"]}
RUNNING = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)
ALWAYS = {"scan": ["always changed"]}  # `dvc status` of a pipeline with nothing to do
SUMMARY = re.compile(r"^models@(\w+): trained (.*); kept (.*); evaluated (.*); removed (.*)$", re.MULTILINE)


def _path(kind: str, model: str) -> str:
    """A model's file in the per-loss layout (nhl/layout.py), written out here independently."""
    loss = model.split("-", 1)[0]
    folder, suffix = {
        "model": ("models", ".pt"),
        "metrics": ("metrics", ".json"),
        "pr": ("plots/pr", ".csv"),
        "history": ("plots/history", ".json"),
    }[kind]
    return f"{folder}/{loss}/{model}{suffix}"


def _done(output: str) -> dict[str, dict[str, set[str]]]:
    """`{loss: {"trained"|"kept"|"evaluated"|"removed": model ids}}` from the stages' summary lines."""
    found = {}
    for loss, *groups in SUMMARY.findall(output):
        found[loss] = {
            key: set() if ids == "none" else set(ids.split(", "))
            for key, ids in zip(("trained", "kept", "evaluated", "removed"), groups, strict=True)
        }
    return found


def _stages(project) -> list[str]:
    return project.dvc("stage", "list", "--name-only").stdout.split()


def _leftovers(root: Path) -> list[str]:
    """Temporary files or directories (the `.tmp` / `.old` of atomic writes) outside .git/.dvc."""
    found = []
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        if parts[0] in (".git", ".dvc"):
            continue
        if path.name.endswith((".tmp", ".old")):
            found.append(str(path.relative_to(root)))
    return found


def test_repro_runs_every_stage_once_and_writes_every_output(built):
    project, root = built.project, built.project.root
    stages = _stages(project)
    expected = ["fetch", "split", "validate", "models@csq", "models@dpn"]  # one process per loss
    assert set(expected) <= set(stages)
    assert sorted(RUNNING.findall(built.output)) == sorted(stages)  # each stage ran, once
    assert _done(built.output) == {
        loss: {
            "trained": {m for m in MODELS if m.startswith(loss)},
            "kept": set(),
            "evaluated": {m for m in MODELS if m.startswith(loss)},
            "removed": set(),
        }
        for loss in ("csq", "dpn")
    }
    assert json.loads((root / "reports/validation/result.json").read_text())["success"] is True
    for model, bits in BITS.items():
        assert (root / _path("model", model)).stat().st_size > 0
        record = json.loads((root / _path("metrics", model)).read_text())
        loss, variant = model.split("-", 1)
        assert (record["model_id"], record["loss"], record["variant"]) == (model, loss, variant)
        assert record["mode"] == ("baseline" if variant.startswith("baseline") else variant)
        assert sorted(record["bits"], key=int) == bits
        for values in record["bits"].values():
            assert set(values) >= {"map", "p_at_100", "p_at_r2"}
            assert all(0.0 <= v <= 1.0 for v in values.values())
        assert record["epochs"] == 1 and record["best_epoch"] == 1
        assert record["train_seconds"] > 0 and record["peak_memory_mb"] > 0
        assert record["model_md5"] == hashlib.md5((root / _path("model", model)).read_bytes()).hexdigest()
        pr = (root / _path("pr", model)).read_text().splitlines()
        assert pr[0] == "bits,radius,precision,recall" and len(pr) > 1
        assert json.loads((root / _path("history", model)).read_text())[0]["epoch"] == 1
    if "report" in stages:  # the report stage, once dvc.yaml has it
        assert (root / "reports/comparison.md").read_text().strip()
    assert _leftovers(root) == []
    assert list((root / "models").glob("checkpoints/*/*")) == []  # removed once each model was saved


def test_mlflow_holds_one_run_per_model_and_the_logged_model_encodes(built_project, monkeypatch):
    import mlflow

    from nhl.data.dataset import load_split
    from nhl.models.hasher import load_hasher
    from nhl.tracking import load_logged_model

    root = built_project.root
    uri = f"sqlite:///{root / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    by_model = {}
    for run in runs:
        if run.data.tags.get("nhl.model_id") in MODELS:
            by_model.setdefault(run.data.tags["nhl.model_id"], []).append(run)
    assert sorted(by_model) == sorted(MODELS) and all(len(found) == 1 for found in by_model.values())
    query = load_split(root / "data/splits", "query", source=root / "data/raw/digits")
    batch = torch.stack([query[i][0] for i in range(5)])
    for model, (run,) in by_model.items():
        assert run.info.status == "FINISHED"
        record = json.loads((root / _path("metrics", model)).read_text())
        assert record["mlflow_run_id"] == run.info.run_id
        for bits in BITS[model]:  # evaluation's metrics went to the training run
            assert run.data.metrics[f"map_{bits}"] == pytest.approx(record["bits"][bits]["map"])
        assert "train_loss" in run.data.metrics
        logged = load_logged_model(run.info.run_id, project_root=root)
        saved, _ = load_hasher(root / _path("model", model))
        with torch.no_grad():
            raw = max(logged(batch), key=lambda out: out.shape[-1])  # the logged file, rebuilt by load_hasher
            reference = max(saved(batch), key=lambda out: out.shape[-1])
        assert raw.shape == (5, int(BITS[model][-1]))
        torch.testing.assert_close(raw, reference)
        assert set(torch.sign(raw).unique().tolist()) <= {-1.0, 1.0}


def _nhl(*argv: str) -> argparse.Namespace:
    from nhl.commands import run

    parser = argparse.ArgumentParser(prog="nhl")
    run.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def test_second_repro_runs_nothing(built_project, monkeypatch, capfd):
    from nhl.commands import run

    assert json.loads(built_project.dvc("status", "--json").stdout) == ALWAYS  # only the scan stage
    monkeypatch.chdir(built_project.root)
    for name in ("MLFLOW_TRACKING_URI", "PYTHONPATH"):
        monkeypatch.setenv(name, built_project.env[name])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # `nhl run` puts the interpreter's bin first itself
    assert run.run(_nhl("run")) == 0  # `nhl run` = `dvc repro` with the project's environment
    output = "".join(capfd.readouterr())
    assert RUNNING.findall(output) == ["scan"] and "Stage 'fetch' didn't change, skipping" in output


def test_nhl_run_hands_every_argument_to_dvc_repro():
    from nhl.commands.run import repro_command

    for argv, passed in [
        (["run"], []),
        (["run", "--force", "models@csq"], ["--force", "models@csq"]),
        (["run", "-s", "-f", "report"], ["-s", "-f", "report"]),
        (["run", "-h"], ["-h"]),
    ]:
        args = _nhl(*argv)
        assert args.dvc_args == passed
        assert repro_command(args.dvc_args) == [sys.executable, "-m", "dvc", "repro", *passed]


def _changed_stages(project) -> set[str]:
    """Stages with work to do (the scan stage, which always runs, left out)."""
    return set(json.loads(project.dvc("status", "--json").stdout)) - set(ALWAYS)


def _set_quant_weight(project, value: float) -> None:
    params = project.params()
    params["losses"]["csq"]["quant_weight"] = value
    project.set_params(params)


def _bytes(root: Path, kind: str) -> dict[str, bytes]:
    return {m: (root / _path(kind, m)).read_bytes() for m in MODELS if (root / _path(kind, m)).is_file()}


def test_a_loss_hyperparameter_retrains_only_that_loss_models(built_project, tmp_path):
    project = built_project.copy(tmp_path / "project")
    root = project.root
    before, records = _bytes(root, "model"), _bytes(root, "metrics")
    _set_quant_weight(project, 0.01)
    status = json.loads(project.dvc("status", "--json").stdout)
    # `scan` is always changed (it hashes the data root); the report reads the whole `losses` section
    assert set(status) - {"scan"} == {"models@csq", "report"}
    assert status["models@csq"] == [{"changed deps": {"params.yaml": {"losses.csq": "modified"}}}]

    done = project.dvc("repro")
    output = done.stdout + done.stderr
    assert set(RUNNING.findall(output)) == {"scan", "models@csq", "report"}
    csq = {"csq-baseline-8", "csq-nhl-full"}
    assert _done(output) == {"csq": {"trained": csq, "kept": set(), "evaluated": csq, "removed": set()}}
    after, new_records = _bytes(root, "model"), _bytes(root, "metrics")
    assert {m for m in MODELS if after[m] != before[m]} == csq  # dpn's models untouched
    assert {m for m in MODELS if new_records[m] != records[m]} == csq
    assert _changed_stages(project) == set()


def test_an_added_variant_trains_only_the_new_models_and_a_dropped_one_is_removed(built_project, tmp_path):
    project = built_project.copy(tmp_path / "project")
    root = project.root
    before, records = _bytes(root, "model"), _bytes(root, "metrics")
    params = project.params()
    params["models"]["variants"] = ["baseline-8", "nhl-full", "baseline-16"]
    project.set_params(params)

    done = project.dvc("repro")
    output = done.stdout + done.stderr
    assert set(RUNNING.findall(output)) == {"scan", "models@csq", "models@dpn", "report"}
    for loss in ("csq", "dpn"):
        old = {m for m in MODELS if m.startswith(loss)}
        new = f"{loss}-baseline-16"
        assert _done(output)[loss] == {"trained": {new}, "kept": old, "evaluated": {new}, "removed": set()}
        record = json.loads((root / _path("metrics", new)).read_text())
        assert record["model_id"] == new and sorted(record["bits"]) == ["16"] and record["mlflow_run_id"]
    assert _bytes(root, "model") == before and _bytes(root, "metrics") == records  # same files, same runs
    assert _changed_stages(project) == set()

    params["models"]["variants"] = ["baseline-8", "nhl-full"]  # back: the added models go, nothing trains
    project.set_params(params)
    done = project.dvc("repro")
    output = done.stdout + done.stderr
    for loss in ("csq", "dpn"):
        old = {m for m in MODELS if m.startswith(loss)}
        removed = {f"{loss}-baseline-16"}
        assert _done(output)[loss] == {"trained": set(), "kept": old, "evaluated": set(), "removed": removed}
        for kind in ("model", "metrics", "pr", "history"):
            assert not (root / _path(kind, f"{loss}-baseline-16")).exists()
    assert _bytes(root, "model") == before


def _open_mlflow_runs(db: Path, model: str) -> int:
    """How many of the model's MLflow runs are still open (status RUNNING); -1 if the store is busy."""
    query = (
        "SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE t.key = 'nhl.model_id' AND t.value = ? AND r.status = 'RUNNING'"
    )
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            return con.execute(query, (model,)).fetchone()[0]
    except sqlite3.OperationalError:  # locked by the writer
        return -1


def _wait_for_training(db: Path, model: str, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until the model's training run is open in the MLflow store (training has begun)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "dvc repro ended before training began"
        if _open_mlflow_runs(db, model) > 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"no running MLflow run for {model} after {timeout} s")


def test_killed_repro_leaves_no_half_written_output_and_the_next_repro_completes(built_project, tmp_path):
    from nhl.models.hasher import load_hasher

    project = built_project.copy(tmp_path / "project")
    root = project.root
    old_model = (root / _path("model", "csq-baseline-8")).read_bytes()
    _set_quant_weight(project, 0.01)
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=root,
        env=project.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_training(root / "mlruns.db", "csq-baseline-8", process)
        time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert _open_mlflow_runs(root / "mlruns.db", "csq-baseline-8") == 1  # killed before its run was closed
    # No output half-written: every model file present is complete, and no temporary file is left
    # beside the outputs (the checkpoint directory may hold the last *complete* epoch for --resume).
    for path in (root / "models").glob("*/*.pt"):
        load_hasher(path)
    assert [p for p in _leftovers(root) if not p.startswith("models/checkpoints/")] == []
    assert "models@csq" in _changed_stages(project)

    done = project.dvc("repro")
    output = done.stdout + done.stderr
    assert {s for s in RUNNING.findall(output) if s not in ("report", "scan")} == {"models@csq"}
    csq = {"csq-baseline-8", "csq-nhl-full"}
    assert _done(output)["csq"]["trained"] == csq  # the killed one, and the one not reached yet
    assert _changed_stages(project) == set()
    assert (root / _path("model", "csq-baseline-8")).read_bytes() != old_model
    load_hasher(root / _path("model", "csq-baseline-8"))
    assert _leftovers(root) == []
