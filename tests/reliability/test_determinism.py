"""Determinism: the same seed and data give bit-identical codes on CPU in two separate processes;
another seed gives another model.

Why a CPU run repeats exactly: `nhl.training.seed_everything` seeds Python, numpy and torch before
the model and the hash centres are built; the order of training items is a function of
(seed, epoch) (`GlobalBatchSampler`); data loading runs in the training process (no loader
workers to seed); and the CPU kernels used here give the same bits for the same inputs and the
same intra-op thread count. The test gives both processes the thread count of this one: another
`OMP_NUM_THREADS` may split float reductions differently and change the last bits.

On a GPU (not exercised here: CI has none; from the PyTorch 2.14 `torch.use_deterministic_algorithms`
docstring and the PyTorch "Reproducibility" notes), nhl sets no determinism switch, and the same
seed reproduces a run only up to float noise, not bit for bit:

- cuDNN convolutions: with `torch.backends.cudnn.benchmark = True` (PyTorch's default is False and
  nhl leaves it) each process may time and pick a different algorithm; and some algorithms are
  nondeterministic unless `torch.backends.cudnn.deterministic = True` or
  `torch.use_deterministic_algorithms(True)`.
- Float atomics (`atomicAdd`): `index_add_`, `scatter_add_`, `index_put_(accumulate=True)` and the
  backward of indexing, `gather` and `index_select` on CUDA add in a scheduling-dependent order.
  In nhl the memory-bank write `bank_codes[index] = u` is an `index_put_` without accumulation
  (deterministic: indices within a batch are distinct), and the torch path of `nhl.metrics` uses
  `scatter_add_` on int64 counts (integer addition is exact), so evaluation is deterministic. The
  backward of `nn.AdaptiveAvgPool2d` on CUDA (SmallCNN's global pooling and the torchvision
  backbones' avgpool) uses atomics and has no deterministic implementation:
  `torch.use_deterministic_algorithms(True)` makes the first backward raise RuntimeError;
  `warn_only=True` turns that into a warning and the run stays nondeterministic.
- cuBLAS: PyTorch releases before the 2025 change (pytorch/pytorch#161749) needed
  `CUBLAS_WORKSPACE_CONFIG=:4096:8` (or `:16:8`) set before CUDA starts for deterministic matmuls
  under `use_deterministic_algorithms(True)`, and raised without it; newer ones allocate a workspace
  per handle and stream, which cuBLAS documents as sufficient, and the installed 2.14 build has no
  such check. Setting it is harmless and still needed on older PyTorch.
- TF32 matmuls/convolutions on Ampere and newer GPUs, and a different number of processes under
  torchrun (another float summation order in the gradient all-reduce), change results without
  making them run-to-run random. CPU and GPU results are never expected to match bit for bit.

The closest to bit-reproducible GPU training: `torch.backends.cudnn.deterministic = True`,
`cudnn.benchmark = False`, `torch.use_deterministic_algorithms(True, warn_only=True)`, the same
number of processes, and a backbone whose global pooling is `x.mean((2, 3))` instead of
`AdaptiveAvgPool2d` (not done today).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nhl.data.dataset import load_split
from nhl.evaluation import encode_split
from nhl.models.hasher import load_hasher

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

# One process: train through the stage script, then encode the database split and save the codes.
DRIVER = """
import sys
import numpy as np
pipelines, params, manifest, out = sys.argv[1:5]
sys.path.insert(0, pipelines)
import train
from nhl.data.dataset import load_split
from nhl.evaluation import encode_split
from nhl.models.hasher import load_hasher
argv = ["--params", params, "--loss", "csq", "--variant", "nhl-full", "--manifest", manifest,
        "--out", out, "--no-track"]
assert train.main(argv) == 0
model, _ = load_hasher(out + "/csq/csq-nhl-full.pt")
codes, _ = encode_split(model, load_split(manifest, "database"))
np.save(out + "/codes.npy", codes.numpy())
"""


def _params(path: Path, seed: int) -> Path:
    path.write_text(yaml.safe_dump({"train": {**SECTION, "seed": seed}, "losses": {}}))
    return path


def _train_here(params: Path, manifest: Path, out: Path) -> None:
    """The same training in this process, through the stage's `main`."""
    spec = importlib.util.spec_from_file_location("nhl_determinism_train", PIPELINES / "train.py")
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(PIPELINES))
        spec.loader.exec_module(module)
        assert (
            module.main(
                [
                    "--params",
                    str(params),
                    "--loss",
                    "csq",
                    "--variant",
                    "nhl-full",
                    "--manifest",
                    str(manifest),
                    "--out",
                    str(out),
                    "--no-track",
                ]
            )
            == 0
        )


@pytest.mark.slow
def test_same_seed_gives_bit_identical_codes_in_two_processes_and_another_seed_another_model(
    tmp_path, digits_manifest_dir
):
    seed0 = _params(tmp_path / "seed0.yaml", 0)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "MLFLOW_DISABLE_TELEMETRY": "true"}
    procs = {
        run: subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(PIPELINES), str(seed0), str(digits_manifest_dir), str(tmp_path / run)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run in ("a", "b")
    }
    _train_here(_params(tmp_path / "seed1.yaml", 1), digits_manifest_dir, tmp_path / "seed1")  # meanwhile
    for run, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"run {run}: {err[-2000:]}"

    codes_a, codes_b = np.load(tmp_path / "a/codes.npy"), np.load(tmp_path / "b/codes.npy")
    assert codes_a.dtype == np.int8 and codes_a.shape == (1097, 16)
    assert codes_a.tobytes() == codes_b.tobytes()  # bit-identical codes
    model_a, extra_a = load_hasher(tmp_path / "a" / "csq" / f"{MODEL_ID}.pt")
    model_b, extra_b = load_hasher(tmp_path / "b" / "csq" / f"{MODEL_ID}.pt")
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert extra_a["history"][0]["train_loss"] == extra_b["history"][0]["train_loss"]

    other, _ = load_hasher(tmp_path / "seed1" / "csq" / f"{MODEL_ID}.pt")
    assert not torch.equal(other.head.linear.weight, model_a.head.linear.weight)
    codes_other, _ = encode_split(other, load_split(digits_manifest_dir, "database"))
    differing = float((codes_other.numpy() != codes_a).mean())
    print(f"\n    seed 0 twice: identical {codes_a.shape} codes; seed 1 differs in {differing:.1%} of the bits")
    assert differing > 0.1
