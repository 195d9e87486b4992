"""MLflow helpers: what a ModelRun writes is read back through MlflowClient from a temporary store."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from nhl import tracking
from nhl.commands import ui

ENV_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "DVC_ROOT", "DVC_STAGE", tracking.PIPELINE_RUN_ENV)


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def make_project(root: Path, params: str = "train:\n  lr: 0.01\n") -> Path:
    """A git repository with params.yaml, a code file, a committed report and dvc.lock."""
    (root / "reports").mkdir(parents=True)
    (root / "params.yaml").write_text(params)
    (root / "code.py").write_text("x = 1\n")
    (root / "reports" / "summary.md").write_text("old\n")
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    return root


def clear_env(mp: pytest.MonkeyPatch) -> None:
    for key in ENV_KEYS:
        mp.delenv(key, raising=False)
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating it costs ~3 s); the working directory is elsewhere."""
    base = tmp_path_factory.mktemp("tracking")
    project = make_project(base / "project")
    cwd = base / "cwd"
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        clear_env(mp)
        mp.chdir(cwd)
        yield project


@pytest.fixture
def env(monkeypatch):
    clear_env(monkeypatch)
    return monkeypatch


def client_for(project: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{project / 'mlruns.db'}")


EPOCHS = [
    {"epoch": 1, "train_loss": 0.9, "train_seconds": 1.5, "weights": {"mean": [1.0, 0.75], "reduced_fraction": 0.5}},
    {
        "epoch": 2,
        "train_loss": 0.4,
        "train_seconds": 3.0,
        "val_map": {"8": 0.5, "16": 0.6},
        "val_map_mean": 0.55,
        "weights": {"mean": [1.25, 0.5], "reduced_fraction": 0.25},
    },
]


# -- record flattening (pure) ----------------------------------------------------------------------
def test_epoch_metrics_names_every_number_of_a_record():
    step, metrics = tracking.epoch_metrics({**EPOCHS[1], "note": "text", "lr": None})
    assert step == 2
    assert metrics == {
        "train_loss": 0.4,
        "train_seconds": 3.0,
        "val_map_8": 0.5,
        "val_map_16": 0.6,
        "val_map_mean": 0.55,
        "weight_0": 1.25,
        "weight_1": 0.5,
        "weights_reduced_fraction": 0.25,
    }
    with pytest.raises(ValueError, match="epoch"):
        tracking.epoch_metrics({"train_loss": 1.0})


def test_result_metrics_and_params_flattening():
    bits = {"8": {"map": 0.5, "p_at_100": 0.4, "p_at_r2": 0.3}, "16": {"map": 0.7, "p_at_100": 0.6, "p_at_r2": 0.2}}
    assert tracking.result_metrics(bits, {"train_seconds": 12.5, "peak_memory_mb": 300}) == {
        "map_8": 0.5,
        "p_at_100_8": 0.4,
        "p_at_r2_8": 0.3,
        "map_16": 0.7,
        "p_at_100_16": 0.6,
        "p_at_r2_16": 0.2,
        "train_seconds": 12.5,
        "peak_memory_mb": 300.0,
    }
    with pytest.raises(ValueError, match="map"):
        tracking.result_metrics({"8": {"map": "high"}})
    assert tracking.flatten_params({"lr": 0.01, "loss_params": {"alpha": 0.5}, "lengths": [8, 16], "extra": {}}) == {
        "lr": "0.01",
        "loss_params.alpha": "0.5",
        "lengths": "[8, 16]",
        "extra": "{}",
    }


# -- the store -------------------------------------------------------------------------------------
def test_default_uri_is_the_project_sqlite_store_unless_overridden(env, tmp_path):
    assert tracking.tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "sub").mkdir()
    env.chdir(tmp_path / "sub")
    assert tracking.find_project_root() == tmp_path.resolve()
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    env.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.tracking_uri(tmp_path) == "http://tracking.example:5000"


def tiny_hasher(seed: int = 0):
    from nhl.models.hasher import Hasher, HasherSpec

    torch.manual_seed(seed)
    return Hasher(HasherSpec("smallcnn", 1, (8, 16), {"width": 8})).eval()


def test_model_run_logs_params_tags_metrics_artifacts_and_model(store):
    from nhl.models.hasher import save_hasher

    model = tiny_hasher()
    model_file = store.parent / "tiny.pt"
    save_hasher(model, model_file, extra={"model_id": "csq-nhl-full"})
    note = store.parent / "note.txt"
    note.write_text("hello\n")
    params = {"lr": 0.01, "loss_params": {"alpha": 0.5}, "lengths": [8, 16]}
    with tracking.ModelRun(
        "csq-nhl-full", params, {"nhl.loss": "csq"}, stage="train@csq-nhl-full", project_root=store
    ) as run:
        for record in EPOCHS:
            run.log_epoch(record)
        run.log_results(
            {"16": {"map": 0.7, "p_at_100": 0.6, "p_at_r2": 0.2}}, {"train_seconds": 3.0, "peak_memory_mb": 512.0}
        )
        run.log_artifact(note)
        model_uri = run.log_model(model_file)
    assert not run.skipped and run.run_id is not None

    client = client_for(store)
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params == {"lr": "0.01", "loss_params.alpha": "0.5", "lengths": "[8, 16]"}
    tags = logged.data.tags
    assert tags["mlflow.runName"] == tags["nhl.model_id"] == "csq-nhl-full"
    assert tags["nhl.stage"] == "train@csq-nhl-full" and tags["nhl.loss"] == "csq"
    assert tags["mlflow.source.git.commit"] == git(store, "rev-parse", "HEAD")
    assert tags[tracking.PIPELINE_RUN_TAG] == tracking.pipeline_run_tag(store)

    def history(key):
        return [(m.step, m.value) for m in sorted(client.get_metric_history(run.run_id, key), key=lambda m: m.step)]

    assert history("train_loss") == [(1, 0.9), (2, 0.4)]
    assert history("weight_0") == [(1, 1.0), (2, 1.25)]
    assert history("weights_reduced_fraction") == [(1, 0.5), (2, 0.25)]
    assert history("val_map_8") == [(2, 0.5)]
    assert history("val_map_mean") == [(2, 0.55)]
    final = logged.data.metrics
    assert final["map_16"] == 0.7 and final["p_at_100_16"] == 0.6 and final["p_at_r2_16"] == 0.2
    assert final["peak_memory_mb"] == 512.0 and final["train_seconds"] == 3.0

    # Artifacts live under <project>/mlartifacts, nothing in the working directory.
    artifacts = store / "mlartifacts"
    assert logged.info.artifact_uri.startswith(artifacts.as_uri())
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["note.txt"]
    assert (Path(logged.info.artifact_uri.removeprefix("file://")) / "note.txt").read_text() == "hello\n"
    assert list(Path.cwd().iterdir()) == []

    # The logged model is our model file (same bytes) plus the pyfunc code; no pickled object.
    from mlflow.models import get_model_info

    info = get_model_info(model_uri)
    pyfunc = info.flavors["python_function"]
    assert set(info.flavors) == {"python_function"} and "python_model" not in pyfunc
    location = Path(client.get_logged_model(info.model_id).artifact_location.removeprefix("file://"))
    assert location.is_relative_to(artifacts) and (location / "MLmodel").is_file()
    logged_file = location / pyfunc["artifacts"][tracking.HASHER_ARTIFACT]["path"]
    assert logged_file.read_bytes() == model_file.read_bytes()
    assert not [p.name for p in location.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    requirements = (location / "requirements.txt").read_text().split()
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for source in (run.run_id, model_uri):
        loaded = tracking.load_logged_model(source, project_root=store)
        assert torch.equal(loaded.encode(x), model.encode(x))


def test_pyfunc_gives_the_code_at_every_length_from_arrays_and_image_files(store, tmp_path):
    """A model logged from a `Hasher` object: MLflow's pyfunc loader returns, for every length k,
    the k-bit prefix of `encode`; PNG files sent as base64 give the codes of the decoded pixels."""
    import base64

    import mlflow
    from PIL import Image

    model = tiny_hasher(2).train()
    with tracking.ModelRun("csq-nhl-small", project_root=store) as run:
        uri = run.log_model(model)
    assert model.training  # the caller's model is untouched
    pyfunc = mlflow.pyfunc.load_model(uri)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    out = pyfunc.predict(x.numpy())
    full = model.encode(x).numpy()
    assert sorted(out, key=int) == ["8", "16"]
    for k in (8, 16):
        np.testing.assert_array_equal(out[str(k)], full[:, :k])
    pixels = np.random.default_rng(4).integers(0, 256, (2, 8, 8), dtype=np.uint8)
    encoded = []
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        encoded.append(base64.b64encode((tmp_path / f"{i}.png").read_bytes()).decode())
    from_files = pyfunc.predict(encoded)
    expected = model.encode(torch.from_numpy(pixels.astype(np.float32) / 255.0)[:, None]).numpy()
    np.testing.assert_array_equal(from_files["16"], expected)


def test_a_logged_model_holding_a_crafted_file_is_refused(store, tmp_path):
    """The registry route loads the logged file with `load_hasher`: a pickle payload in it never runs."""
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.pt"
    torch.save({"format": "nhl-hasher/1", "spec": Payload(), "state_dict": {}}, evil)
    with tracking.ModelRun("csq-nhl-evil", project_root=store) as run:
        uri = run.log_model(evil)
    with pytest.raises(ValueError, match="refused, it holds the Python object posix.system"):
        tracking.load_logged_model(uri, project_root=store)
    assert not marker.exists()


def test_a_logged_model_that_is_not_ours_is_refused_unread(store, tmp_path):
    """A pyfunc model logged as a cloudpickled object (whose unpickling would run code) has no nhl
    model file: one-line "not an nhl model", and its pickle is never loaded."""
    import mlflow

    marker = tmp_path / "PWNED"

    class Evil(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    with tracking.ModelRun("csq-nhl-foreign", project_root=store):
        info = mlflow.pyfunc.log_model(name="model", python_model=Evil(), pip_requirements=["numpy"])
    with pytest.raises(ValueError, match="not an nhl model") as caught:
        tracking.load_logged_model(info.model_uri, project_root=store)
    assert "\n" not in str(caught.value)
    assert not marker.exists()


def test_failure_inside_the_block_marks_the_run_failed_and_propagates(store):
    with pytest.raises(FloatingPointError):
        with tracking.ModelRun("csq-baseline-8", project_root=store) as run:
            run.log_epoch({"epoch": 1, "train_loss": float("nan")})
            raise FloatingPointError("loss became nan")
    assert client_for(store).get_run(run.run_id).info.status == "FAILED"
    import mlflow

    assert mlflow.active_run() is None


def test_resume_adds_to_an_earlier_run(store, monkeypatch, caplog):
    with tracking.ModelRun("csq-nhl-noA-noD", {"lr": 0.1}, project_root=store) as train:
        train.log_epoch({"epoch": 1, "train_loss": 0.3})
    # An inherited MLFLOW_RUN_ID must not make a new model reopen someone else's run.
    monkeypatch.setenv("MLFLOW_RUN_ID", train.run_id)
    with tracking.ModelRun("other", project_root=store) as other:
        pass
    assert other.run_id not in (None, train.run_id)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)  # mlflow.end_run unsets it

    trained = client_for(store).get_run(train.run_id).info
    time.sleep(0.05)  # an end time moved by the evaluation would show
    with tracking.ModelRun(
        "csq-nhl-noA-noD", tags={"nhl.evaluated": "yes"}, project_root=store, resume=train.run_id
    ) as evaluate:
        evaluate.log_results({"8": {"map": 0.25}})
    assert evaluate.run_id == train.run_id
    logged = client_for(store).get_run(train.run_id)
    assert logged.info.status == "FINISHED" and logged.data.tags["nhl.evaluated"] == "yes"
    # attached, never reopened: the run's span is still its training's
    assert (logged.info.start_time, logged.info.end_time) == (trained.start_time, trained.end_time)
    import mlflow

    assert mlflow.active_run() is None
    assert logged.data.metrics == {"train_loss": 0.3, "map_8": 0.25} and logged.data.params == {"lr": "0.1"}

    with caplog.at_level(logging.WARNING):
        with tracking.ModelRun("gone", project_root=store, resume="0" * 32) as missing:
            missing.log_results({"8": {"map": 0.5}})
    assert missing.skipped and missing.run_id is None
    assert [r.getMessage() for r in caplog.records] == [
        f"MLflow tracking skipped: run {'0' * 32} not found in sqlite:///{store}/mlruns.db (RESOURCE_DOES_NOT_EXIST)"
    ]


def test_experiment_opens_on_model_training_and_runs_carry_their_datasets(store):
    meta = {"dataset": "digits", "content_hash": "sha256:" + "ab12" * 16, "sizes": {"train": 500, "val": 100}}
    with tracking.ModelRun("csq-baseline-8", project_root=store) as run:
        run.log_datasets(meta, store / "splits", ("train", "val"))
    client = client_for(store)
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    # the value MLflow 3's UI reads to open the runs table instead of the GenAI overview
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    inputs = client.get_run(run.run_id).inputs.dataset_inputs
    found = {
        (
            i.dataset.name,
            i.dataset.digest,
            {t.key: t.value for t in i.tags}["mlflow.data.context"],
            json.loads(i.dataset.source)["uri"],
            json.loads(i.dataset.profile)["num_rows"],
        )
        for i in inputs
    }
    uri = (store / "splits").resolve().as_uri()
    assert found == {
        ("digits/train", "ab12ab12ab12", "training", uri, 500),
        ("digits/val", "ab12ab12ab12", "validation", uri, 100),
    }
    with pytest.raises(ValueError, match="split"):
        from nhl.tracking.datasets import dataset_inputs

        dataset_inputs(meta, store, ("holdout",))


# -- pipeline-run tag ------------------------------------------------------------------------------
def test_runs_of_one_project_state_share_the_pipeline_tag(store):
    def tag_of(model_id):
        with tracking.ModelRun(model_id, project_root=store) as run:
            pass
        return client_for(store).get_run(run.run_id).data.tags[tracking.PIPELINE_RUN_TAG]

    first, second = tag_of("a"), tag_of("b")
    assert first == second
    original = (store / "params.yaml").read_text()
    try:
        (store / "params.yaml").write_text("train:\n  lr: 0.02\n")
        assert tag_of("c") != first
    finally:
        (store / "params.yaml").write_text(original)
    assert tag_of("d") == first


def test_pipeline_tag_follows_commit_params_and_code_not_outputs(env, tmp_path):
    project = make_project(tmp_path / "p")
    params = (project / "params.yaml").read_bytes()
    head = git(project, "rev-parse", "HEAD")
    digest = hashlib.sha256(params + b"\0").hexdigest()[:8]  # no uncommitted diff
    expected = f"{head[:10]}-{digest}"
    assert tracking.pipeline_run_tag(project) == expected

    # What a `dvc repro` writes does not change it: dvc.lock, reports/, ignored or untracked outputs.
    (project / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (project / "reports" / "summary.md").write_text("new\n")
    (project / "metrics.json").write_text("{}")
    assert tracking.pipeline_run_tag(project) == expected

    # Editing tracked code makes it dirty and different; so does a second, different edit.
    (project / "code.py").write_text("x = 2\n")
    dirty = tracking.pipeline_run_tag(project)
    assert dirty.startswith(f"{head[:10]}-dirty-") and dirty != expected
    (project / "code.py").write_text("x = 3\n")
    assert tracking.pipeline_run_tag(project) not in (dirty, expected)

    env.setenv(tracking.PIPELINE_RUN_ENV, "nightly-42")
    assert tracking.pipeline_run_tag(project) == "nightly-42"


def test_pipeline_tag_outside_git(env, tmp_path):
    (tmp_path / "params.yaml").write_text("a: 1\n")
    expected = hashlib.sha256(b"a: 1\n\0").hexdigest()[:8]
    assert tracking.pipeline_run_tag(tmp_path) == f"nogit-{expected}"


# -- an unreachable store never stops training -----------------------------------------------------
@pytest.mark.parametrize("uri", ["http://127.0.0.1:9", "sqlite:///{tmp}/a-file/mlruns.db"])
def test_unreachable_store_degrades_to_a_no_op(env, tmp_path, caplog, uri):
    (tmp_path / "a-file").write_text("not a directory")
    uri = uri.format(tmp=tmp_path)
    env.setenv("MLFLOW_TRACKING_URI", uri)
    note = tmp_path / "note.txt"
    note.write_text("x")
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        with tracking.ModelRun("csq-baseline-16", {"lr": 0.1}, project_root=tmp_path) as run:
            for record in EPOCHS:
                run.log_epoch(record)
            run.log_results({"16": {"map": 0.5}}, {"train_seconds": 1.0})
            run.log_artifact(note)
            assert run.log_model(tiny_hasher()) is None
    assert time.perf_counter() - start < 15
    assert run.skipped and run.run_id is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"MLflow tracking skipped: {uri} unreachable (")
    assert "\n" not in warnings[0]
    with pytest.raises(ValueError, match="epoch"):  # the caller's own mistakes still surface
        run.log_epoch({"train_loss": 1.0})


# -- nhl ui ----------------------------------------------------------------------------------------
def ui_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nhl")
    ui.register(parser.add_subparsers(dest="command"))
    return parser


def test_ui_command_targets_the_project_store(env, tmp_path, capsys):
    args = ui_parser().parse_args(["ui", "--port", "5123", "--project-root", str(tmp_path)])
    assert args.func is ui.run and args.host == "127.0.0.1"
    command = ui.ui_command(args)
    assert command[1:4] == ["-m", "mlflow", "ui"]
    option = dict(zip(command[4::2], command[5::2], strict=True))
    assert option["--backend-store-uri"] == f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    assert (
        option["--default-artifact-root"]
        == option["--artifacts-destination"]
        == str(tmp_path.resolve() / "mlartifacts")
    )
    assert option["--port"] == "5123" and option["--host"] == "127.0.0.1"
    with pytest.raises(ValueError, match="--port"):
        ui.ui_command(ui_parser().parse_args(["ui", "--port", "70000"]))
    with pytest.raises(SystemExit):
        ui_parser().parse_args(["ui", "--port", "high"])

    env.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert ui.run(args) == 0
    assert "http://tracking.example:5000" in capsys.readouterr().out


def test_ui_forwards_ctrl_c_to_the_server(env, tmp_path, monkeypatch):
    events = []

    class FakeServer:
        def __init__(self, command, env):
            events.append(("start", command[3]))

        def wait(self, timeout=None):
            if not events[-1][0] == "signal":
                raise KeyboardInterrupt
            events.append(("stopped", timeout))
            return -2

        def poll(self):
            return None

        def send_signal(self, signum):
            events.append(("signal", signum))

        def terminate(self):
            events.append(("terminate", None))

    monkeypatch.setattr(ui.subprocess, "Popen", FakeServer)
    args = ui_parser().parse_args(["ui", "--project-root", str(tmp_path)])
    assert ui.run(args) == 130
    assert events == [("start", "ui"), ("signal", signal.SIGINT), ("stopped", ui.STOP_TIMEOUT_S)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_ui_server_shows_the_runs_of_the_project_store(store):
    with tracking.ModelRun("seen-by-ui", project_root=store) as run:
        pass
    port = free_port()
    args = ui_parser().parse_args(["ui", "--port", str(port), "--project-root", str(store)])
    server = subprocess.Popen(
        ui.ui_command(args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, "mlflow ui exited early"
            try:
                if urllib.request.urlopen(f"{base}/health", timeout=2).read() == b"OK":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow ui did not answer /health"
            time.sleep(0.5)
        answer = json.loads(
            urllib.request.urlopen(f"{base}/api/2.0/mlflow/runs/get?run_id={run.run_id}", timeout=10).read()
        )
        assert {t["key"]: t["value"] for t in answer["run"]["data"]["tags"]}[
            "nhl.model_id"
        ] == "seen-by-ui"  # same store
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # the server, its uvicorn worker and job runner
        server.wait(timeout=30)


def test_report_stage_adds_each_evaluation_to_its_training_run_once(store, digits_manifest_dir, tmp_path):
    from nhl.data.manifest import read_manifest
    from nhl.tracking.evaluations import log_evaluations

    with tracking.ModelRun("csq-nhl-full", project_root=store) as train:
        train.log_epoch({"epoch": 1, "train_loss": 0.3})
    trained = client_for(store).get_run(train.run_id).info
    record = {
        "model_id": "csq-nhl-full",
        "mlflow_run_id": train.run_id,
        "bits": {"8": {"map": 0.5, "p_at_100": 0.25}, "16": {"map": 0.75, "p_at_100": 0.5}},
    }
    orphan = {"model_id": "untracked", "mlflow_run_id": None, "bits": {"8": {"map": 0.1}}}
    files = [tmp_path / "csq-nhl-full.json", tmp_path / "untracked.json", tmp_path / "missing.json"]
    files[0].write_text(json.dumps(record))
    files[1].write_text(json.dumps(orphan))
    assert log_evaluations(files, digits_manifest_dir, project_root=store) == 1
    assert log_evaluations(files, digits_manifest_dir, project_root=store) == 0  # a report rerun adds nothing
    client = client_for(store)
    run = client.get_run(train.run_id)
    assert run.data.metrics == {"train_loss": 0.3, "map_8": 0.5, "p_at_100_8": 0.25, "map_16": 0.75, "p_at_100_16": 0.5}
    assert len(client.get_metric_history(train.run_id, "map_8")) == 1
    assert (run.info.start_time, run.info.end_time, run.info.status) == (
        trained.start_time,
        trained.end_time,
        "FINISHED",
    )
    meta = read_manifest(digits_manifest_dir)[1]
    contexts = {
        i.dataset.name: {t.key: t.value for t in i.tags}["mlflow.data.context"] for i in run.inputs.dataset_inputs
    }
    assert contexts == {"digits/query": "evaluation", "digits/database": "evaluation"}
    assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {meta["content_hash"].split(":")[1][:12]}
    assert [a.path for a in client.list_artifacts(train.run_id)] == ["csq-nhl-full.json"]
