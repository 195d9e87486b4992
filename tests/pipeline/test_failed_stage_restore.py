"""A failed stage says how to get its last good outputs back, and that way works: `dvc repro`
deletes a stage's outputs before running it, and `dvc checkout <stage>` restores them from the
DVC cache byte for byte."""

from __future__ import annotations

from pathlib import Path

from nhl.orchestration import StageFailed

HINT = "`dvc checkout {stage}` restores the last good ones from the DVC cache"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_after_a_failed_fetch_dvc_checkout_brings_back_the_previous_data(built_project, tmp_path):
    project = built_project.copy(tmp_path / "project")
    raw = project.root / "data/raw/digits"
    before = _files(raw)
    assert {"images.npy", "labels.npy"} <= set(before)
    params = project.params()
    params["data"]["options"] = {"no_such_option": 1}  # fetch rejects it: bad input, exit 2
    project.set_params(params)

    done = project.dvc("repro", "fetch", check=False)
    assert done.returncode != 0
    assert not raw.exists()  # DVC removed the previous output before running the stage
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("fetch: error:")]
    assert len(errors) == 1 and "no_such_option" in errors[0]
    assert errors[0].endswith(HINT.format(stage="fetch"))

    project.dvc("checkout", "fetch")
    assert _files(raw) == before


def test_a_stage_run_by_hand_gives_no_hint(tmp_path, monkeypatch, capsys):
    """Outside DVC nothing was removed (stages write atomically), so there is nothing to restore."""
    import importlib.util

    monkeypatch.delenv("DVC_STAGE", raising=False)
    pipelines = Path(__file__).resolve().parents[2] / "pipelines"
    monkeypatch.syspath_prepend(str(pipelines))
    spec = importlib.util.spec_from_file_location("fetch_stage", pipelines / "fetch.py")
    fetch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch)
    assert fetch.main(["--params", str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"fetch: error: params file {tmp_path / 'none.yaml'} not found"
    monkeypatch.setenv("DVC_STAGE", "fetch")
    assert fetch.main(["--params", str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err.strip().endswith(HINT.format(stage="fetch"))


def test_the_flow_failure_ends_with_the_restore_command():
    output = (
        "Running stage 'train@csq-nhl-full':\n> python pipelines/train.py --loss csq --variant nhl-full\n"
        "train: error: train.epochs: expected a positive integer, got 0\n"
        "ERROR: failed to reproduce 'train@csq-nhl-full': failed to run: python pipelines/train.py "
        "--loss csq --variant nhl-full, exited with 2\n"
    )
    message = str(StageFailed(["evaluate@csq-nhl-full"], 1, output))
    assert message.splitlines()[0] == "dvc repro evaluate@csq-nhl-full: stage 'train@csq-nhl-full' exited with 2"
    assert message.splitlines()[-1].endswith(HINT.format(stage="train@csq-nhl-full"))
    # DVC itself failed (its lock was held): no stage ran, nothing was removed, no hint
    locked = str(StageFailed(["split"], 1, "ERROR: Unable to acquire lock. Most likely another DVC process is running"))
    assert "dvc checkout" not in locked
