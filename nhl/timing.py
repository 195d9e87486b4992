"""Where a stage process spends its wall time, for `bench/pipeline_cost.py`.

Stages and the library wrap their parts in `phase(name)`: `imports`, `data` (loading splits),
`compute` (training, encoding, metrics), `tracking` (MLflow: its import, the store, logging) and
`outputs` (writing files). When `$NHL_TIMINGS` names a file, one JSON line per process is appended
to it at exit: the stage (`$DVC_STAGE`), the seconds from the process's creation to its first
phase (interpreter start-up), each phase's seconds, and the process's whole life. Without the
variable nothing is written; a phase costs two clock reads. Phases nest: time inside an inner
phase counts for the inner one only, so the parts add up to the whole.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
from collections.abc import Iterator

ENV = "NHL_TIMINGS"

_phases: dict[str, float] = {}
_stack: list[str] = []
_first: float | None = None  # time.time() at the first phase
_last = time.perf_counter()  # when the innermost open phase (or none) was last charged


def _charge(now: float) -> None:
    global _last
    if _stack:
        _phases[_stack[-1]] = _phases.get(_stack[-1], 0.0) + now - _last
    _last = now


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Charge the block's wall time to `name` (minus time spent in phases nested inside it)."""
    global _first
    if _first is None:
        _first = time.time()
        if os.environ.get(ENV):
            atexit.register(_write)
    _charge(time.perf_counter())
    _stack.append(name)
    try:
        yield
    finally:
        _charge(time.perf_counter())
        _stack.pop()


def _process_start() -> float | None:
    """The process's creation time (epoch seconds), from psutil; None when unavailable."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - a missing measurement, not an error
        return None


def record() -> dict:
    """This process's timings so far (see the module docstring)."""
    now = time.time()
    created = _process_start()
    return {
        "stage": os.environ.get("DVC_STAGE", ""),
        "pid": os.getpid(),
        "startup": (_first - created) if created is not None and _first is not None else None,
        "phases": dict(_phases),
        "life": (now - created) if created is not None else None,
    }


def _write() -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps(record()) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write of a short line: appends from parallel stages don't interleave
    finally:
        os.close(fd)
