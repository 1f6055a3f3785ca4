"""The widget's generation: the model writes in a background thread and the grid grows one
column per token (``column`` messages, docs/wire.md); stop keeps the tokens so far.

A mixin of :class:`~lens_widget.widget.widget.LensWidget` (one job per file).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from ..engine import LogitLens
from ..generation import GeneratedColumn, generate as generate_with_lens
from ..progress import Progress
from ..result import LensResult
from ..schema import WIRE_KEYS
from ..wire import column_message, lift_arrays
from .requests import RequestError, int_in
from .session import every_position
from .tasks import BackgroundWork, Task

__all__ = ["GenerateView", "MAX_NEW_TOKENS", "GENERATE_OPTIONS"]

#: The most tokens one generate request may ask for.
MAX_NEW_TOKENS = 4096
#: Generation options the widget passes through to ``LogitLens.generate``.
GENERATE_OPTIONS = ("do_sample", "seed", "temperature", "top_k", "top_p", "eos_token_id")


class GenerateView:
    """Generation with the lens, mixed into ``LensWidget``."""

    def generate(self, max_new_tokens: int = 20, *, wait: bool = False, **options: Any) -> Task:
        """Let the model write up to ``max_new_tokens`` tokens after the text shown, with the lens
        on each: the grid grows one column per token as it comes (in a background thread, so the
        stop button works; :meth:`stop` ends it, :meth:`wait` waits for it). ``options``: ``do_sample``, ``seed``, ``temperature``, ``top_k``,
        ``top_p``, ``eos_token_id`` (see :meth:`LogitLens.generate`). ``wait``: block until done
        (and raise its error).
        When it ends (or is stopped) ``result`` / ``data`` hold the whole grid, equal to the lens
        run on the text. One lens and one prompt only."""
        task = self.start_generation(max_new_tokens, **options)
        if wait:
            task.join()
            if task.error is not None:
                raise task.error
        return task

    def start_generation(self, max_new_tokens: int, reply: Callable[[Task, Any], None] | None = None, **options: Any) -> Task:
        """:meth:`generate` without waiting; ``reply(task, outcome)`` runs when it ends (the
        front end's "generate" button)."""
        self._check_open()
        lens = self._need_model()
        if self._session is None or len(self._session.runners) > 1 or len(self.prompts) > 1:
            raise RequestError("generate works on a widget with one lens and one prompt")
        if not every_position(self._session.positions):
            raise RequestError("generate grows the grid by one column per new token: it needs a widget of every position (positions='all')")
        n = int_in("max_new_tokens", max_new_tokens, 1, MAX_NEW_TOKENS)
        bad = set(options) - set(GENERATE_OPTIONS)
        if bad:
            raise RequestError(f"unknown generation options {sorted(bad)}; known: {list(GENERATE_OPTIONS)}")
        r = self.result
        ids = r.input_ids[0, : int(r.lengths[0])].tolist()
        return self._work.start("generate", n, lambda t: self._generate_work(t, lens, ids, n, options), reply)

    def _generate_work(self, task: Task, lens: LogitLens, ids: list[int], n: int, options: dict[str, Any]) -> dict[str, Any]:
        """The body of a generation: stream the columns, then show the whole grid."""
        known = {int(i) for i in self.result.token_strings}
        label = self.lens
        prev = self.result.generated_from
        # continuing a generation: the prompt still ends where it did
        boundary = len(ids) if prev is None else int(prev[0])

        def on_prompt(res: LensResult, _acts: Any) -> None:
            # the prompt's last column now has a next token (the first new one): replace it
            c = res.n_positions - 1
            cells = {key: getattr(res, key)[0][:, c : c + 1] for key in WIRE_KEYS}
            msg = column_message(cells, c, int(res.input_ids[0, c]), int(res.next_ids[0, c]), res.token_strings, known,
                                 lens=label, generated_from=boundary, done=0, total=n)
            self._send_safely(*lift_arrays(msg))

        def on_column(col: GeneratedColumn) -> None:
            p = Progress(col.index + 1, n, time.perf_counter() - task.t0)
            cells = {key: col.cells[key][:, None] for key in WIRE_KEYS}
            msg = column_message(cells, col.col, col.token_id, col.next_id, col.token_strings, known, lens=label,
                                 generated_from=boundary, done=p.done, total=n, eta_s=None if p.eta is None else round(p.eta, 3))
            self._send_safely(*lift_arrays(msg))
            self._send_safely(BackgroundWork.progress_message(task, p))

        def work() -> dict[str, Any]:
            session = self._session
            assert session is not None
            out = generate_with_lens(lens, ids, n, sites=session.sites, k=session.k, track=list(self.tracked), callback=on_column,
                                     progress=False, stop=task.stop, on_prompt=on_prompt, return_activations=True, **options)
            result, acts = out  # type: ignore[misc]
            result.generated_from = np.array([boundary], np.int64)
            task.stopped = task.stop.is_set()
            session.keep([acts])
            self._show({label: result})
            return {"n_positions": result.n_positions, "generated": result.n_positions - len(ids), "stopped": task.stopped}

        return self._guarded(work)

