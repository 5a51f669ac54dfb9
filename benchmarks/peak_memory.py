"""Peak memory of one call, measured in a way that works on these machines (issue 15).

* **GPU**: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensor memory
  of the caching allocator; exact).
* **CPU**: the process's resident set size (``/proc/self/statm``), sampled every
  ``interval`` seconds by a background thread while the call runs (torch kernels release the
  GIL, so the sampler keeps running during long matmuls), plus one sample before and after.
  The earlier method — reset ``VmHWM`` through ``/proc/self/clear_refs`` and read it back —
  needs a kernel that honours ``clear_refs`` value 5; on the project's machines it does not,
  and the attribution benchmark printed 0 MiB for most rows. Sampling can miss a spike shorter
  than the interval (0.5 ms by default), so the CPU figure is a lower bound on the true peak,
  exact for allocations that live longer than that (activations of a forward/backward do).

:func:`return_freed_memory` makes glibc serve every allocation ≥ 64 KiB by its own mapping, so
memory freed by one call goes back to the OS and the next call's baseline is its live memory
(otherwise a cached heap hides per-call peaks). It only changes where *new* chunks come from:
an allocation that fits a chunk already freed and still resident is served from it and adds no
RSS, so run each measured call in a fresh process, or after earlier calls that did not leave
large free chunks, for a figure that counts everything (the benchmarks measure in one process,
largest configuration last; a per-call delta is then a lower bound).
"""

from __future__ import annotations

import gc
import os
import threading
import time

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    """Resident set size of this process in bytes (None where ``/proc`` is unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return None


def return_freed_memory() -> bool:
    """glibc ``mallopt(M_MMAP_THRESHOLD, 64 KiB)``; False where unavailable."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, 65536))
    except (OSError, AttributeError):
        return False


class PeakMemory:
    """Context manager: peak memory during the block.

    Attributes (MiB, after exit): ``start`` (in use when the block began), ``peak`` (highest
    level seen), ``delta`` (``peak − start``: what the block itself needed). None when the
    platform offers no measurement.
    """

    def __init__(self, device: str | torch.device = "cpu", interval: float = 5e-4) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.interval = interval
        self.start: float | None = None
        self.peak: float | None = None
        self._max = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            v = rss_bytes()
            if v is not None and v > self._max:
                self._max = v
            time.sleep(self.interval)

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated() / 2**20
            return self
        v = rss_bytes()
        if v is None:
            return self
        self._max = v
        self.start = v / 2**20
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**20
            return
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        v = rss_bytes()
        self.peak = max(self._max, v or 0) / 2**20

    @property
    def delta(self) -> float | None:
        return None if self.peak is None or self.start is None else self.peak - self.start
