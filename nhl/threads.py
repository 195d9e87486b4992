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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numba

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def _torch_count_kept() -> Iterator[int | None]:
    """Yields torch's intra-op thread count (None without torch) and puts it back on exit."""
    torch = sys.modules.get("torch")
    threads = None if torch is None else int(torch.get_num_threads())
    try:
        yield threads
    finally:
        if torch is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def kernel_threads() -> int:
    """The threads a parallel kernel may use now: torch's intra-op count, at most numba's pool.

    Starts numba's pool (numba.get_num_threads() and set_num_threads() both do) and puts torch's
    count back if the start changed it; call this, not numba.get_num_threads(), before a kernel."""
    with _torch_count_kept() as threads:
        if threads is not None:
            numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
        return int(numba.get_num_threads())


def within_torch_threads(kernel: F) -> F:
    """Wrap a `numba.njit(parallel=True)` kernel (called from Python, not from other jitted code)
    so that it uses at most torch's intra-op thread count and leaves that count unchanged."""

    @functools.wraps(kernel)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _torch_count_kept():
            kernel_threads()
            return kernel(*args, **kwargs)

    return run  # type: ignore[return-value]
