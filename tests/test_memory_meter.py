"""tests/memory.py, the one memory meter of tests and bench/: it sees a peak, and forgets it on reset."""

from __future__ import annotations

import numpy as np
from memory import MiB, measure_peak, peak_bytes, reset_peak, rss_bytes


def test_meter_sees_a_peak_and_reset_forgets_it_in_a_fresh_process():
    """The meter as bench/ uses it: in a process of its own (inside a long pytest process the
    kernel's accounting of earlier tests' threads and pages made growth read 0)."""
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    code = f"import sys; sys.path.insert(0, {str(here)!r}); import test_memory_meter as t; t.check_meter()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def check_meter():
    with measure_peak() as big:
        a = np.ones(96 * MiB // 8)  # touched: 96 MiB resident
        del a
    assert 90 * MiB <= big.growth <= 200 * MiB, big
    reset_peak()  # the 96 MiB peak is gone after a reset (ru_maxrss would keep it forever)
    assert peak_bytes() - rss_bytes() < 32 * MiB
    # 48 MiB: above glibc's largest mmap threshold (32 MiB), so it is fresh memory even in a
    # process whose heap already holds freed pages (a smaller block could reuse them)
    with measure_peak() as small:
        b = np.ones(48 * MiB // 8)
        del b
    assert 44 * MiB <= small.growth < 80 * MiB, small
