"""A training process killed with SIGKILL mid-epoch resumes to exactly the uninterrupted result.

`pipelines/train.py --resume` runs in a subprocess on the digits split (3 epochs, CPU); as soon as
the epoch-1 checkpoint `<out>/checkpoints/<model_id>/last.pt` appears the process is killed with
SIGKILL, somewhere in epoch 2. The same command is run again, and the model it writes must equal,
tensor for tensor, the model of an uninterrupted run (each run a fresh process), with the same per-epoch
losses, val mAP, adaptive weights and evaluate-stage metrics. A checkpoint holds the model,
objective (centres, memory banks), optimiser and RNG state; data order is a function of
(seed, epoch), so nothing else is needed to continue exactly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
MODEL_ID = "csq-nhl-full"
SECTION = {
    "backbone": "smallcnn",
    "backbone_params": {"width": 8},
    "lengths": [8, 16],
    "epochs": 3,
    "batch_size": 100,
    "lr": 0.003,
    "seed": 0,
    "device": "cpu",
}


def _stage(name: str):
    spec = importlib.util.spec_from_file_location(f"nhl_crash_{name}", PIPELINES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stages():
    patch = pytest.MonkeyPatch()
    patch.syspath_prepend(str(PIPELINES))
    yield {name: _stage(name) for name in ("evaluate",)}
    patch.undo()


def _kill_when(path: Path, proc: subprocess.Popen, timeout: float) -> threading.Thread:
    """A thread that SIGKILLs `proc` as soon as `path` exists (or when `timeout` runs out)."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and not path.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_sigkilled_training_resumes_to_the_same_weights_and_metrics(tmp_path, digits_manifest_dir, stages):
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({"train": SECTION, "losses": {}, "evaluate": {"topk": None, "pr_lengths": [8, 16]}})
    )

    def argv(out: str) -> list[str]:
        return [
            "--params",
            str(params),
            "--loss",
            "csq",
            "--variant",
            "nhl-full",
            "--manifest",
            str(digits_manifest_dir),
            "--out",
            str(tmp_path / out),
            "--no-track",
        ]

    # the run to be killed starts first (a process start costs seconds); same intra-op thread count as here
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "MLFLOW_DISABLE_TELEMETRY": "true"}
    checkpoint = tmp_path / "killed" / "checkpoints" / MODEL_ID / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, str(PIPELINES / "train.py"), *argv("killed"), "--resume"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watcher = _kill_when(checkpoint, proc, timeout=300)

    # every run in a fresh process, as a user runs them (the resumed run skips the straight run's
    # epoch-1 evaluation: numba's first kernel there used to change torch's thread count, nhl.threads)
    def train(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, str(PIPELINES / "train.py"), *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]

    train(*argv("straight"))  # the uninterrupted run, meanwhile
    watcher.join()
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert killed_at in (1, 2), killed_at  # killed after epoch 1's checkpoint, before the end
    assert not (tmp_path / "killed" / "csq" / f"{MODEL_ID}.pt").exists()  # no model file from the killed run

    train(*argv("killed"), "--resume")
    assert not checkpoint.parent.exists()  # a finished run leaves no checkpoint behind

    resumed = torch.load(tmp_path / "killed" / "csq" / f"{MODEL_ID}.pt", weights_only=True)
    straight = torch.load(tmp_path / "straight" / "csq" / f"{MODEL_ID}.pt", weights_only=True)
    assert resumed["state_dict"].keys() == straight["state_dict"].keys()
    for name, tensor in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
    kept = ("epoch", "train_loss", "val_map", "val_map_mean", "weights")
    assert [{k: r.get(k) for k in kept} for r in resumed["extra"]["history"]] == [
        {k: r.get(k) for k in kept} for r in straight["extra"]["history"]
    ]
    assert resumed["extra"]["epochs"] == straight["extra"]["epochs"] == 3
    assert resumed["extra"]["best_epoch"] == straight["extra"]["best_epoch"]

    metrics = {}
    for out in ("killed", "straight"):
        assert (
            stages["evaluate"].main(
                [
                    "--params",
                    str(params),
                    "--model",
                    str(tmp_path / out / "csq" / f"{MODEL_ID}.pt"),
                    "--manifest",
                    str(digits_manifest_dir),
                    "--metrics-dir",
                    str(tmp_path / out / "metrics"),
                    "--plots-dir",
                    str(tmp_path / out / "plots"),
                    "--no-track",
                ]
            )
            == 0
        )
        metrics[out] = json.loads((tmp_path / out / "metrics" / "csq" / f"{MODEL_ID}.json").read_text())["bits"]
    assert metrics["killed"] == metrics["straight"]
    print(f"\n    killed after epoch {killed_at}; resumed mAP {metrics['killed']}")
