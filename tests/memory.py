"""The one memory meter of tests/ and bench/: the kernel's own counters, in BYTES.

``VmRSS`` (resident now) and ``VmHWM`` (the resident high-water mark) from ``/proc/self/status``.
Writing ``5`` to ``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS, so a peak measured
after :func:`reset_peak` belongs to what ran since, not to earlier tests or threads (unlike
``ru_maxrss``, which never goes down). Linux only: elsewhere every function raises
:class:`MemoryMeterError` (a test that cannot measure must fail, not pass).

Used by ``tests/test_gemma3_scale.py`` and ``bench/{lens_bench,scale_bench,soak}.py``
(bench/ puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator
import contextlib

__all__ = ["MemoryMeterError", "rss_bytes", "peak_bytes", "reset_peak", "Peak", "measure_peak", "MiB", "GiB"]

MiB = 2**20
GiB = 2**30


class MemoryMeterError(RuntimeError):
    """This platform does not expose the counters (not Linux, or /proc not mounted)."""


def _status_bytes(key: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    value, unit = line.split()[1:3]
                    assert unit == "kB", line
                    return int(value) * 1024
    except OSError as exc:
        raise MemoryMeterError(f"cannot read /proc/self/status ({exc})") from None
    raise MemoryMeterError(f"/proc/self/status has no {key} line")


def rss_bytes() -> int:
    """Resident set size now."""
    return _status_bytes("VmRSS")


def peak_bytes() -> int:
    """Resident high-water mark since the process started or the last :func:`reset_peak`."""
    return _status_bytes("VmHWM")


def reset_peak() -> None:
    """Reset the high-water mark to the current RSS (raises when the kernel does not allow it)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as exc:
        raise MemoryMeterError(f"cannot reset the RSS high-water mark via /proc/self/clear_refs ({exc})") from None
    # the reset takes effect at once: the mark is now the current RSS (allow pages faulted meanwhile)
    hwm, rss = peak_bytes(), rss_bytes()
    if hwm > rss + 64 * MiB:
        raise MemoryMeterError(f"VmHWM ({hwm} B) did not reset to VmRSS ({rss} B)")


@dataclass
class Peak:
    """What :func:`measure_peak` saw: RSS at the start, the peak during the block, in bytes."""

    base: int = 0
    peak: int = 0

    @property
    def growth(self) -> int:
        """Peak RSS during the block minus RSS at its start."""
        return self.peak - self.base


@contextlib.contextmanager
def measure_peak() -> Iterator[Peak]:
    """``with measure_peak() as m: work()`` -> ``m.growth`` bytes of peak RSS growth of ``work``."""
    reset_peak()
    m = Peak(base=rss_bytes())
    try:
        yield m
    finally:
        m.peak = peak_bytes()
