"""Two gloo processes whose own validation scores differ still take one decision (issue 22)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.mark.slow
def test_ranks_stop_together_pick_one_best_epoch_and_save_the_same_model(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*TORCHRUN, str(Path(__file__).with_name("_agree_worker.py")), str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # rank 0's scores decide: best 0.3 at epoch 2, then two evaluations without improvement
    assert ranks[0]["best_epoch"] == ranks[1]["best_epoch"] == 2
    assert ranks[0]["epochs_run"] == ranks[1]["epochs_run"] == 4
    assert ranks[0]["best_score"] == ranks[1]["best_score"] == pytest.approx(0.3)
    # BatchNorm buffers were made equal before the best state was taken: one model on both ranks
    assert ranks[0]["digest"] == ranks[1]["digest"]
