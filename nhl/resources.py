"""Measure what training costs: wall-clock seconds and peak memory."""

from __future__ import annotations

import threading
import time

import psutil
import torch


class PeakMemory:
    """Context manager sampling this process's resident memory (RSS) in a background thread.

    `ru_maxrss` would report the peak of the whole process lifetime, so two models trained in one
    process could not be compared; sampling measures only the enclosed block. On CUDA the peak of
    allocated device memory is recorded as well. Values in MiB.
    """

    def __init__(self, interval_s: float = 0.02, device: torch.device | None = None) -> None:
        self.interval_s = interval_s
        self.device = device
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self.cuda_peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()

    def _rss_mb(self) -> float:
        return self._process.memory_info().rss / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, self._rss_mb())

    def __enter__(self) -> PeakMemory:
        self.start_mb = self.peak_mb = self._rss_mb()
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss_mb())
        if self.device is not None and self.device.type == "cuda":
            self.cuda_peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20

    @property
    def delta_mb(self) -> float:
        """Peak RSS above what the process held when the block started."""
        return self.peak_mb - self.start_mb


class Stopwatch:
    """Accumulates wall-clock seconds over the blocks it encloses (so evaluation can be excluded)."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self._t0: float | None = None

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        assert self._t0 is not None  # set by __enter__
        self.seconds += time.perf_counter() - self._t0
