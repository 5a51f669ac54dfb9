"""The peak-memory probe of the benchmarks (benchmarks/peak_memory.py, issue 15)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from peak_memory import PeakMemory, return_freed_memory, rss_bytes  # noqa: E402


@pytest.mark.skipif(rss_bytes() is None, reason="no /proc/self/statm on this platform")
def test_peak_sees_a_freed_allocation():
    """A 256 MiB tensor that lives for 50 ms and is freed inside the block is seen by the sampler
    (the old VmHWM/clear_refs reset printed 0 MiB here), and a block that allocates nothing
    shows (almost) nothing."""
    return_freed_memory()
    with PeakMemory("cpu") as pm:
        x = torch.ones(64 * 2**20, dtype=torch.float32)  # 256 MiB, touched
        import time

        time.sleep(0.05)
        del x
    assert 200 <= pm.delta <= 300, pm.delta
    with PeakMemory("cpu") as quiet:
        sum(range(1000))
    assert quiet.delta < 20, quiet.delta
