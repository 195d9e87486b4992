"""Numba's parallel kernels leave torch's thread count alone (nhl.threads).

Each check runs in a fresh interpreter, since numba starts its thread pool (the moment that used to
raise torch's count) only once per process. The expected counts are the environment's
`OMP_NUM_THREADS`, not anything nhl computes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SETUP = """
import numba, numpy as np, torch
rng = np.random.default_rng(0)
codes = torch.from_numpy(np.where(rng.random((300, 64)) < 0.5, -1.0, 1.0)).float()
labels = torch.from_numpy(rng.integers(0, 10, 300))
"""
CALLS = {
    "mean average precision": (
        "from nhl.metrics import mean_average_precision\n"
        "mean_average_precision(codes, labels, codes, labels)\n"
        "mean_average_precision(codes, labels, codes, labels, ties='expected')"
    ),
    "prefix-funnel search": (
        "from nhl.index import FunnelIndex\n"
        "FunnelIndex(codes.numpy(), stages=[16, 64], pools=[50]).search(codes.numpy()[:20], 5)"
    ),
    "scalable prefix centres": (
        "from nhl.losses.centers_scalable import scalable_prefix_centers\nscalable_prefix_centers(40, [16, 64])"
    ),
}


def _counts_after(call: str, threads: int) -> tuple[int, int]:
    script = SETUP + call + "\nprint(torch.get_num_threads(), numba.get_num_threads())"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    torch_threads, numba_threads = done.stdout.split()[-2:]
    return int(torch_threads), int(numba_threads)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_parallel_kernel_keeps_torch_at_one_thread_and_uses_one_itself(name):
    assert _counts_after(CALLS[name], threads=1) == (1, 1)
