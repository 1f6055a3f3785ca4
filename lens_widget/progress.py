"""Progress and stopping of long work (a grid, a generation): what is done of what total, and a
stop request checked between steps. The engine and the generation loop report a
:class:`Progress` after each step and raise :class:`Stopped` (a grid) or end cleanly (a
generation) when asked to stop; the widget turns both into messages and a stop button."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from tqdm.auto import tqdm

__all__ = ["Progress", "Stopped", "StopLike", "is_stopped", "ProgressBar", "progress_bar", "BAR_DELAY_S"]

#: Seconds a progress bar waits before it shows: a quick run shows none.
BAR_DELAY_S = 1.0

#: A stop request: a ``threading.Event`` (or anything with ``is_set()``), or a callable returning True.
StopLike = Any


class Stopped(RuntimeError):
    """Long work ended early because its stop request was set; nothing it computed is kept."""


def is_stopped(stop: StopLike) -> bool:
    """Whether ``stop`` (``None``, an ``Event``-like object, or a callable) asks to stop now."""
    if stop is None:
        return False
    if hasattr(stop, "is_set"):
        return bool(stop.is_set())
    if callable(stop):
        return bool(stop())
    raise TypeError(f"stop must be a threading.Event, a callable or None, got {type(stop).__name__}")


@dataclass
class Progress:
    """Where long work stands: ``done`` of ``total`` steps (chunks of a grid, new tokens of a
    generation) after ``elapsed`` seconds."""

    done: int
    total: int
    elapsed: float

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace so far (``None`` before the first step)."""
        if self.done <= 0:
            return None
        return self.elapsed / self.done * max(0, self.total - self.done)


def in_notebook(bar_class: type) -> bool:
    """Whether ``bar_class`` (``tqdm.auto``'s choice) draws in a notebook (an ipywidgets bar)."""
    return any(c.__module__ == "tqdm.notebook" for c in bar_class.__mro__)


def progress_bar(total: int, desc: str, unit: str, disable: bool = False) -> Any:
    """A ``tqdm.auto`` bar that shows only after :data:`BAR_DELAY_S` (a quick run draws none)
    and, in a notebook, vanishes when it ends (a finished notebook bar otherwise stays above
    the cell's output: above every widget a cell shows). A terminal keeps the finished line."""
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, delay=BAR_DELAY_S, leave=not in_notebook(tqdm))


class ProgressBar:
    """A tqdm bar's ``update``/``close`` that also reports :class:`Progress` to a callable and
    raises :class:`Stopped` after a step when ``stop`` is set (``LogitLens.run``'s bar)."""

    def __init__(self, bar: Any, total: int, report: Callable[[Progress], Any] | None = None, stop: StopLike = None):
        self.bar, self.total, self.report, self.stop = bar, int(total), report, stop
        self.done = 0
        self.t0 = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.done += int(n)
        if self.report is not None:
            self.report(Progress(self.done, self.total, time.perf_counter() - self.t0))
        if is_stopped(self.stop):
            raise Stopped(f"stopped after {self.done} of {self.total} steps")

    def close(self) -> None:
        self.bar.close()
