"""Two CPU processes under torchrun (DDP, gloo) train like one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nhl.models.hasher import load_hasher

ROOT = Path(__file__).resolve().parents[2]
SECTION = {
    "backbone": "smallcnn",
    "backbone_params": {"width": 8},
    "lengths": [8, 16],
    "epochs": 1,
    "batch_size": 50,
    "lr": 0.003,
    "seed": 0,
    "device": "cpu",
}


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _train(
    tmp_path: Path, manifest: Path, out: str, launcher: list[str], loss: str, variant: str, **overrides
) -> tuple[torch.nn.Module, dict]:
    params = tmp_path / f"{out}.yaml"
    params.write_text(yaml.safe_dump({"train": {**SECTION, **overrides}, "losses": {}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [
        *launcher,
        str(ROOT / "pipelines" / "train.py"),
        "--params",
        str(params),
        "--loss",
        loss,
        "--variant",
        variant,
        "--manifest",
        str(manifest),
        "--out",
        str(tmp_path / out),
        "--no-track",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return load_hasher(tmp_path / out / loss / f"{loss}-{variant}.pt")


@pytest.mark.slow
def test_two_processes_train_exactly_like_one_on_the_same_global_batches(tmp_path, digits_manifest_dir):
    """CSQ (a per-item loss) with A, and a batch-independent network (GroupNorm): DDP's averaged
    gradients and the averaged probe gradients must reproduce the single-process run."""
    group = {"backbone_params": {"width": 8, "norm": "group"}}
    single, one = _train(tmp_path, digits_manifest_dir, "one", [sys.executable], "csq", "nhl-A", **group)
    double, two = _train(tmp_path, digits_manifest_dir, "two", TORCHRUN, "csq", "nhl-A", **group)
    # the same global batches: 500 train items / 50 = 10 steps either way, same adaptive weights
    assert one["history"][0]["weights"]["steps"] == two["history"][0]["weights"]["steps"] == 10
    assert one["history"][0]["weights"]["mean_weights"] == pytest.approx(
        two["history"][0]["weights"]["mean_weights"], abs=1e-5
    )
    for (name, a), b in zip(single.state_dict().items(), double.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)
    assert one["history"][0]["val_map_mean"] == pytest.approx(two["history"][0]["val_map_mean"], abs=0.01)


@pytest.mark.slow
def test_memory_bank_and_batchnorm_losses_run_under_two_processes(tmp_path, digits_manifest_dir):
    """DSH (memory bank or in-batch pairs) + A + D with BatchNorm: the bank is all-gathered so every
    process holds the same bank; batch statistics, in-batch pairs and the distillation's Gram
    matrices are per process, so the run is close to, not equal to, the single-process one."""
    single, one = _train(tmp_path, digits_manifest_dir, "one", [sys.executable], "dsh", "nhl-full")
    double, two = _train(tmp_path, digits_manifest_dir, "two", TORCHRUN, "dsh", "nhl-full")
    assert one["history"][0]["weights"]["steps"] == two["history"][0]["weights"]["steps"] == 10
    assert abs(one["history"][0]["val_map_mean"] - two["history"][0]["val_map_mean"]) < 0.1
