"""Background work in the kernel: recomputes and generations run in a worker thread, one after
another, with progress messages and a stop that is read at once (the kernel's message loop is
never blocked). The kernel twin of ``js/src/tasks.ts``."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ..progress import Progress, Stopped

__all__ = ["Task", "BackgroundWork", "PROGRESS_INTERVAL_S"]

#: Seconds between two progress messages of a recompute (a generation reports every token).
PROGRESS_INTERVAL_S = 0.2


class Task:
    """Long work running in the kernel's background thread: a recompute or a generation.

    ``kind`` is ``"compute"`` or ``"generate"``; ``stop`` the event a stop request sets;
    ``thread`` the worker; ``error`` what ended it badly (``None``: finished or stopped)."""

    def __init__(self, kind: str, total: int = 0):
        self.kind = kind
        self.total = int(total)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.stopped = False
        self.t0 = time.perf_counter()
        self.previous: Task | None = None  # the work queued before this one
        self.reported = False  # a progress message went out

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the work to end; True when it has."""
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.running


class BackgroundWork:
    """The queue of background tasks of one widget. ``send(message)`` reaches the front end
    (progress messages); it must be safe to call from any thread."""

    def __init__(self, send: Callable[[dict[str, Any]], None]):
        self.send = send
        self.task: Task | None = None
        self._lock = threading.Lock()

    def current(self) -> Task | None:
        """The task whose worker thread is the caller (``None`` elsewhere)."""
        task = self.task
        return task if task is not None and task.thread is threading.current_thread() else None

    def start(self, kind: str, total: int, work: Callable[[Task], Any], reply: Callable[[Task, Any], None] | None = None) -> Task:
        """Run ``work(task)`` in a background thread, after the work started before it (requests
        run in the order they came); ``reply(task, result_or_exception)`` runs when it ends."""
        with self._lock:
            prev = self.task
            task = Task(kind, total)
            self.task = task
            task.thread = threading.Thread(target=self._body, args=(task, prev, work, reply), name=f"lens-widget-{kind}", daemon=True)
            task.previous = prev
            task.thread.start()
        return task

    def _body(self, task: Task, prev: Task | None, work: Callable[[Task], Any], reply: Callable[[Task, Any], None] | None) -> None:
        outcome: Any = None
        try:
            if prev is not None:
                prev.join()
                task.previous = None  # finished: no chain of old work
            if task.stop.is_set():
                raise Stopped("stopped before it started")
            task.t0 = time.perf_counter()
            outcome = work(task)
        except Stopped as exc:
            task.stopped = True
            outcome = exc
        except BaseException as exc:  # reported to the front end; the widget keeps working
            task.error = outcome = exc
        finally:
            state = "stopped" if task.stopped else "error" if task.error is not None else "done"
            if task.reported or task.kind == "generate":  # the front end shows progress: end it
                self.send({"type": "progress", "task": task.kind, "state": state, "done": -1, "total": task.total,
                           "elapsed_s": round(time.perf_counter() - task.t0, 3), "eta_s": 0})
            if reply is not None:
                reply(task, outcome)

    def stop(self) -> bool:
        """Stop the work running or waiting; True when something was running."""
        task, stopped = self.task, False
        while task is not None:
            if task.running:
                task.stop.set()
                stopped = True
            task = task.previous
        return stopped

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the work to end; True when it has."""
        task = self.task
        return True if task is None else task.join(timeout)

    def finish(self) -> None:
        """Let background work end before a recompute from Python (never from the worker itself)."""
        task = self.task
        if task is not None and task.thread is not threading.current_thread():
            task.join()

    @staticmethod
    def progress_message(task: Task, p: Progress, **fields: Any) -> dict[str, Any]:
        """The ``progress`` message of ``task`` at ``p`` (``docs/wire.md``)."""
        task.reported = True
        return {"type": "progress", "task": task.kind, "state": "running", "done": p.done, "total": p.total,
                "elapsed_s": round(p.elapsed, 3), "eta_s": None if p.eta is None else round(p.eta, 3), **fields}

    def reporter(self, task: Task) -> Callable[[Progress], None]:
        """A run's progress callable: at most one message per ``PROGRESS_INTERVAL_S``, and the
        last step (a quick recompute shows no progress at all)."""
        last = [task.t0]

        def report(p: Progress) -> None:
            task.total = p.total
            now = time.perf_counter()
            if now - last[0] < PROGRESS_INTERVAL_S and not (p.done == p.total and task.reported):
                return
            last[0] = now
            self.send(self.progress_message(task, Progress(p.done, p.total, now - task.t0)))

        return report
