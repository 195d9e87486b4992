"""Numba's parallel kernels run inside torch's thread budget, and leave it as they found it.

Numba's `omp` threading layer and torch share one OpenMP runtime. Numba starts its thread pool on
the first parallel kernel of a process and, in doing so, sets the runtime's thread count to
NUMBA_NUM_THREADS (all cores), which silently overrides torch's count: measured with
`OMP_NUM_THREADS=1`, `torch.get_num_threads()` went from 1 to 2 at the first val mAP. Training
after that evaluation then ran on 2 threads, so its float results differed from a run resumed
from the same checkpoint in a fresh process (1 thread), and two single-threaded test workers
each used both cores. Wrapping every parallel kernel here keeps both promises: a kernel uses at
most torch's threads, and torch's count is restored after the kernel.

Torch is looked up in `sys.modules`, not imported: a process that has not imported torch has no
torch thread count to keep (the search service answers queries without it).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import numba

F = TypeVar("F", bound=Callable[..., Any])


def kernel_threads() -> int:
    """The threads a parallel kernel may use now: torch's intra-op count, at most numba's pool.

    Starts numba's pool (numba.get_num_threads() and set_num_threads() both do) and puts torch's
    count back if the start changed it; call this, not numba.get_num_threads(), before a kernel."""
    torch = sys.modules.get("torch")
    if torch is None:
        return int(numba.get_num_threads())
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return int(numba.get_num_threads())


def within_torch_threads(kernel: F) -> F:
    """Wrap a `numba.njit(parallel=True)` kernel (called from Python, not from other jitted code)
    so that it uses at most torch's intra-op thread count and leaves that count unchanged."""

    @functools.wraps(kernel)
    def run(*args: Any, **kwargs: Any) -> Any:
        torch = sys.modules.get("torch")
        if torch is None:
            return kernel(*args, **kwargs)
        threads = torch.get_num_threads()
        kernel_threads()
        try:
            return kernel(*args, **kwargs)
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)

    return run  # type: ignore[return-value]
