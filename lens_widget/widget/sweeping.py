"""The widget's activation-patching sweep: the clean prompt's residual patched into the corrupted
run at every (site, position), the recovery of a logit difference drawn as a grid (the ``sweep``
trait, docs/wire.md "Sweep"), run in the background with progress messages and stop.

A mixin of :class:`~lens_widget.widget.widget.LensWidget` (one job per file): it checks the
request against the prompts shown, asks the kernel session (:mod:`lens_widget.widget.session`)
for the sweep and sets the ``sweep`` trait, which an exported page carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..patching import Sweep
from ..wire import sweep_to_wire
from .requests import RequestError, int_in
from .tasks import Task

__all__ = ["SweepView", "SweepJob", "MAX_SWEEP_BATCH"]

#: The most patches one forward of a widget's sweep may carry.
MAX_SWEEP_BATCH = 1024


@dataclass(frozen=True)
class SweepJob:
    """A checked sweep: the two prompts' token ids, the pair measured, where the prompts came from
    (``-1``: a text given from Python), and the patches per forward."""

    clean: list[int]
    corrupt: list[int]
    pair: tuple[int, int]
    clean_index: int
    corrupt_index: int
    batch_size: int


class SweepView:
    """The activation-patching sweep, mixed into ``LensWidget``."""

    @property
    def last_sweep(self) -> Sweep | None:
        """The :class:`~lens_widget.patching.Sweep` the ``sweep`` trait shows (``None``: none yet)."""
        return getattr(self, "_last_sweep", None)

    def patch_sweep(self, clean: int | str = 0, corrupt: int | str = 1, tokens: Any = None, *, batch_size: int = 32) -> Sweep:
        """Patch the clean prompt's residual at every (site, position) into the corrupted run and
        show the recovery of ``logit(a) − logit(b)`` at the last position as a grid
        (:meth:`LogitLens.patch_sweep <lens_widget.LogitLens.patch_sweep>`); returns the Sweep.

        ``clean`` / ``corrupt``: a prompt of the batch shown (its index) or a text; the two must
        have the same number of tokens. ``tokens``: the pair ``(a, b)`` (ids or single-token
        strings); default the logit-difference pair (``diff_tokens``), else the first two tracked
        tokens. Background work (a recompute) ends first; it runs here, with the widget's tqdm bar."""
        self._check_open()
        self._work.finish()
        job = self.check_sweep(clean, corrupt, tokens, batch_size)
        return self._guarded(lambda: self._sweep_now(job, self._progress, None))

    def start_sweep(self, clean: Any, corrupt: Any, tokens: Any = None, batch_size: Any = 32,
                    reply: Callable[[Task, Any], None] | None = None) -> Task:
        """:meth:`patch_sweep` in the background thread (the front end's sweep button), checked
        now: ``progress`` messages (patches done of all) and :meth:`stop` (which keeps the last
        sweep shown); ``reply(task, outcome)`` runs when it ends, with :func:`sweep_summary`."""
        self._check_open()
        job = self.check_sweep(clean, corrupt, tokens, batch_size)

        def work(task: Task) -> dict[str, Any]:
            sw = self._guarded(lambda: self._sweep_now(job, self._work.reporter(task), task.stop))
            return sweep_summary(sw)

        return self._work.start("sweep", 0, work, reply)

    def check_sweep(self, clean: Any, corrupt: Any, tokens: Any, batch_size: Any = 32) -> SweepJob:
        """The sweep asked for, checked against the prompts shown, else a :class:`RequestError`
        naming the problem."""
        if self._session is None:
            raise RequestError("no model attached (widget built from a LensResult, or an exported page): a sweep runs the model")
        (c_ids, ci), (x_ids, xi) = self._sweep_prompt(clean, "clean"), self._sweep_prompt(corrupt, "corrupt")
        if len(c_ids) != len(x_ids):
            raise RequestError(f"the clean and corrupted prompts must have the same number of tokens (a minimal pair): {len(c_ids)} vs {len(x_ids)}")
        if c_ids == x_ids:
            raise RequestError("the clean and corrupted prompts are the same tokens: a sweep has nothing to recover")
        pair = self._sweep_pair(tokens)
        return SweepJob(c_ids, x_ids, pair, ci, xi, int_in("batch_size", batch_size, 1, MAX_SWEEP_BATCH))

    def _sweep_prompt(self, which: Any, name: str) -> tuple[list[int], int]:
        """Token ids of a prompt index of the batch shown, or of a text (index -1)."""
        r = self.result
        if isinstance(which, str):
            if not which:
                raise RequestError(f"the {name} prompt is empty")
            return self._session.model.as_batch(which).rows()[0], -1
        pi = int_in(f"{name} prompt index", which, 0, r.n_prompts - 1)
        return [int(i) for i in r.input_ids[pi, : int(r.lengths[pi])]], pi

    def _sweep_pair(self, tokens: Any) -> tuple[int, int]:
        """The pair ``(a, b)`` measured: given, else ``diff_tokens``, else the first two tracked."""
        if tokens is None:
            pair = list(self.diff_tokens) if len(self.diff_tokens) == 2 else list(self.tracked)[:2]
            if len(pair) != 2:
                raise RequestError("a sweep measures logit(a) − logit(b) at the last position: give tokens (a, b), or track two tokens")
            tokens = pair
        if not isinstance(tokens, (list, tuple)) or len(tokens) != 2 or not all(_token_like(x) for x in tokens):
            raise RequestError(f"tokens must be a pair [a, b] of token ids or single-token strings, got {tokens!r}")
        a, b = (self._session.token_id(x) for x in tokens)
        if a == b:
            raise RequestError("the two tokens of the pair are the same token: logit(a) − logit(b) is 0 everywhere")
        return a, b

    def _sweep_now(self, job: SweepJob, progress: Any, stop: Any) -> Sweep:
        """Run the sweep and show it (the ``sweep`` trait); a stop keeps the last sweep shown."""
        sw = self._session.sweep(job.clean, job.corrupt, job.pair, batch_size=job.batch_size, progress=progress, stop=stop)
        tokens = {i: self._session.model.tokens.decode(i) for i in job.pair}
        self._last_sweep = sw
        self.sweep = sweep_to_wire(sw, tokens, clean_prompt_index=job.clean_index, corrupt_prompt_index=job.corrupt_index)
        return sw


def sweep_summary(sw: Sweep) -> dict[str, Any]:
    """The reply of a ``sweep`` request (the grid itself is the ``sweep`` trait): its size, the
    clean and corrupted logit differences, the largest recovery and the costs."""
    finite = sw.recovery[np.isfinite(sw.recovery)]
    return {"n_sites": int(sw.recovery.shape[0]), "n_positions": int(sw.recovery.shape[1]), "clean_ld": float(sw.clean_ld), "corrupt_ld": float(sw.corrupt_ld),
            "max_recovery": float(finite.max()) if finite.size else None, "forwards": int(sw.meta["forwards"]), "patches": int(sw.meta["patches"]),
            "seconds": round(float(sw.meta["seconds"]), 3)}


def _token_like(x: Any) -> bool:
    return (isinstance(x, (int, np.integer)) and not isinstance(x, bool)) or (isinstance(x, str) and 0 < len(x) <= 256)
