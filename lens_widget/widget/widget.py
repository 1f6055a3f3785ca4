"""`LensWidget`: the lens grid as one anywidget, with a kernel that answers what the grid lacks.

State that must survive a saved notebook or an HTML export is in traits (``data`` holds the
reduced lens as binary buffers); on-demand detail (a cell's full-vocabulary top-50, any token's
rank, vocabulary search, a new prompt) travels as custom messages tagged with a request id
(:mod:`lens_widget.widget.requests`). See ``docs/wire.md``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import anywidget
import numpy as np
import traitlets as t

from ..compare import Align, Comparison
from ..decoders import Decoder
from ..engine import LogitLens
from ..hooked import HookedModel
from ..metrics import COMPARE_METRICS, GRID_METRICS
from ..progress import Stopped
from ..result import LensResult
from ..sites import parse_site, site_label
from ..wire import arrays_to_wire, result_to_wire
from .comparing import CompareView
from .export import BUNDLE_PATH, bundle_source, standalone_html
from .generating import GenerateView
from .requests import RequestError, handle_message, int_in
from .session import LensSession, every_position
from .sweeping import SweepView
from .tasks import BackgroundWork, Task
from .viewing import GridViewTraits

__all__ = ["LensWidget", "WidgetClosedError", "Task"]



class WidgetClosedError(RuntimeError):
    """The widget was closed; its front end is gone."""


class LensWidget(CompareView, GenerateView, SweepView, GridViewTraits, anywidget.AnyWidget):
    """A hoverable, clickable layer x token logit-lens grid.

    ``LensWidget(model, "The capital of France is")`` runs the lens in the kernel and keeps the
    model to answer clicks exactly; ``model`` is a :class:`~lens_widget.HookedModel` or a
    ``transformers`` causal LM (``tokenizer=`` optional when it was saved with the model).
    ``LensWidget(result=lens_result)`` shows a result computed earlier (requests that need the
    model then answer with an error).

    Several lenses: ``decoders={"logit": None, "tuned": tuned_lens}`` (``None`` is the logit lens;
    the keys are the labels the lens switch shows, in order). Every lens's grid is computed up
    front from one recorded pass of the model (``LogitLens.run(..., decoders=)``), so the
    front end switches lenses without asking the kernel, and an exported page carries them all.
    The ``lens`` trait names the lens shown; kernel requests answer for it.

    Rows and columns: ``sites=`` picks the rows (``None``/``"resid"``: the embeddings and every
    block's output; ``"all"``; or site names, see :func:`lens_widget.sites.expand_sites`), and
    ``positions=`` the columns (:func:`lens_widget.sites.resolve_positions`): ``"all"`` (default),
    ``"last:8"`` (the range of the last 8 tokens), a slice string ``"2:10"``, ``"last-8"`` (one
    token, 8 before the last), an int, or a list of these. The title says which positions are
    shown when they are not the whole prompt. Other keywords must be widget traits (``metric=``,
    ``height=``, ``transpose=``, ...); anything else is a ``TypeError``. The grid's size:
    ``compact=``, ``zoom=``, ``fit_width=``, ``col_range=`` and ``height=``
    (:class:`~lens_widget.widget.viewing.GridViewTraits`).

    A batch: ``prompt=["prompt a", "prompt b", ...]`` shows a prompt selector (each prompt's own
    grid, as if run alone) and a mean view over the prompts, aligned on the last token
    (``prompt_index``, ``aggregate``; see ``docs/wire.md``). A ``str`` prompt is one grid, as before.
    ``result=`` also takes a multi-prompt result, or ``{label: LensResult}`` for several lenses.

    Generation: ``generate=N`` (or :meth:`generate`, or the front end's "generate" button) lets
    the model write N tokens after the prompt in a background thread; the grid grows one
    column per token (``column`` messages, docs/wire.md), the generated tokens are marked, and
    a stop button (:meth:`stop`) keeps the tokens so far. A long recompute (a new prompt from the
    front end) runs in the background too, with progress messages and the same stop.

    ``memory_budget=`` and ``precision=`` are :class:`~lens_widget.engine.LogitLens`'s.

    Compare (a diff grid of two sides, see :mod:`lens_widget.compare`):
    ``LensWidget.compare(model, prompt_a, prompt_b)`` (two prompts),
    ``LensWidget.compare(model, prompt, decoder_b=tuned)`` (two lenses on one prompt), or
    ``LensWidget(comparison=lens_widget.compare(a, b))`` (two saved results, e.g. two models that
    share a tokenizer). In any widget with several prompts or lenses,
    ``w.compare_with((lens, prompt_index), (lens, prompt_index))`` (or the front end's compare
    selectors, trait ``compare_pair``) compares any two of them. With a model the JS divergence
    is exact (both sides decoded from the kept activations); from saved results it is the top-k
    approximation, labelled so.
    """

    # anywidget reads the file (and, with ANYWIDGET_HMR=1, watches it for live reload).
    _esm = BUNDLE_PATH

    #: The reduced lens of the prompt on display (``lens_widget.wire.result_to_wire``).
    data = t.Dict().tag(sync=True)
    #: The prompt whose lens is in ``data``; setting it recomputes (the old grid stays on error).
    prompt = t.Unicode("").tag(sync=True)
    #: What the grid is coloured by (``lens_widget.metrics.GRID_METRICS``).
    metric = t.Unicode("top1_prob").tag(sync=True)
    #: Tracked token id for ``tracked_prob`` (-1: the first tracked).
    metric_token = t.Int(-1).tag(sync=True)
    #: ``[a, b]`` for ``logit_diff`` = logit(a) - logit(b); both tracked.
    diff_tokens = t.List(t.Int()).tag(sync=True)
    #: Token ids tracked at every cell; setting it recomputes.
    tracked = t.List(t.Int()).tag(sync=True)
    #: Pinned cells, ``[[site, col], ...]``.
    pinned = t.List().tag(sync=True)
    #: The last clicked cell ``{"site", "col", "position"}`` (``{}``: none); observe it from Python.
    #: ``site`` is the row's index (0: the embeddings), not its layer: :attr:`selected_cell` names it.
    selected = t.Dict().tag(sync=True)
    #: False: layers are rows (final layer at the top), tokens are columns.
    transpose = t.Bool(False).tag(sync=True)
    #: A recompute is running.
    busy = t.Bool(False).tag(sync=True)
    #: The last error ("" none), shown in the widget.
    error = t.Unicode("").tag(sync=True)
    #: Labels of the computed lenses, in switch order (Python -> JS).
    lenses = t.List(t.Unicode()).tag(sync=True)
    #: The label of the lens shown (one of ``lenses``); kernel requests answer for it.
    lens = t.Unicode("").tag(sync=True)
    #: The prompts of a batch (``[prompt]`` for one prompt; Python -> JS).
    prompts = t.List(t.Unicode()).tag(sync=True)
    #: Which prompt of the batch is shown (and answers kernel requests).
    prompt_index = t.Int(0).tag(sync=True)
    #: True: the grid shows the mean over the batch's prompts, aligned on the last token.
    aggregate = t.Bool(False).tag(sync=True)
    #: Every computed grid, ``{lens label: [data of prompt 0, data of prompt 1, ...]}``;
    #: ``{}`` when there is one lens and one prompt (then ``data`` alone is the grid).
    grids = t.Dict().tag(sync=True)
    #: The comparison shown by the diff grid (``lens_widget.wire.comparison_to_wire``; ``{}`` none).
    comparison = t.Dict().tag(sync=True)
    #: True: the grid is the diff grid of ``comparison`` (coloured by a ``COMPARE_METRICS`` metric).
    compare_view = t.Bool(False).tag(sync=True)
    #: ``[[lens label, prompt index], [lens label, prompt index]]``: sides a and b of ``comparison``
    #: (``[]`` none); the front end sets it to compare another pair.
    compare_pair = t.List().tag(sync=True)
    #: The last activation-patching sweep (``lens_widget.wire.sweep_to_wire``; ``{}`` none): drawn
    #: as its own grid, and carried by an exported page. :meth:`patch_sweep` sets it.
    sweep = t.Dict().tag(sync=True)
    #: The last attribution computed (:meth:`attribution`'s data, arrays as wire arrays; ``{}``
    #: none): the detail panel shows it on its cell, and an exported page carries it.
    last_attribution = t.Dict().tag(sync=True)

    def __init__(
        self,
        model: Any = None,
        prompt: str | Sequence[str] | None = None,
        *,
        decoders: Mapping[str, Decoder | None] | None = None,
        result: LensResult | Mapping[str, LensResult] | None = None,
        comparison: Comparison | None = None,
        tokenizer: Any = None,
        sites: str | Sequence[str] | None = None,
        positions: Any = "all",
        k: int = 10,
        track: Sequence[int | str] = (),
        memory_budget: int | None = None,
        progress: bool = True,
        generate: int = 0,
        precision: Any = "auto",
        **kwargs: Any,
    ):
        unknown = sorted(name for name in kwargs if name not in _TRAIT_KEYWORDS and name not in type(self).class_traits())
        if unknown:
            raise TypeError(
                f"LensWidget() got unexpected keyword argument{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                "known: model, prompt, decoders, result, comparison, tokenizer, sites, positions, k, track, memory_budget, "
                "progress, generate, precision, or a widget trait (metric, height, transpose, ...)"
            )
        source = bundle_source()  # a clear error, before anything is shown, if the front end is not built
        if isinstance(type(self)._esm, Path):  # the bundle was built after this module was imported
            self._esm = source
        if comparison is not None:
            if model is not None or result is not None:
                raise ValueError("comparison= shows a saved Comparison alone (no model=, no result=)")
            if not isinstance(comparison, Comparison):
                raise TypeError(f"comparison must be a lens_widget.Comparison, got {type(comparison).__name__}")
            result = {comparison.label_b or "b": comparison.b}
        if (model is None) == (result is None):
            raise ValueError("give a model and a prompt, or result=LensResult")
        if model is not None and prompt is None:
            raise ValueError("give the prompt to look at")
        if result is not None and decoders is not None:
            raise ValueError("decoders= needs a model; to show several saved results pass result={label: LensResult}")
        if result is not None and (sites is not None or not every_position(positions)):
            raise ValueError("sites= and positions= choose what a model run computes; a saved result shows what it holds "
                             "(run LogitLens.run(..., sites=, positions=) instead)")
        if generate and not every_position(positions):
            raise ValueError("generate= grows the grid by one column per new token: it needs positions='all'")
        session = None
        if model is not None:
            session = LensSession(model, _labelled(decoders, "logit lens"), tokenizer=tokenizer, memory_budget=memory_budget, sites=sites, positions=positions, k=k,
                                  precision=precision)
        super().__init__(**kwargs)
        #: the lenses over the model and the kept activations (``None``: built from saved results)
        self._session: LensSession | None = session
        self._progress = progress
        self._results: dict[str, LensResult] = {}
        self._wire: dict[str, list[dict[str, Any]]] = {}
        self._closed = False
        self._syncing = False
        self._work = BackgroundWork(self._send_safely)
        self._pending_generate = int(generate)
        self._compared: Comparison | None = comparison
        self._pair: tuple[tuple[str, int], tuple[str, int], Align] | None = None
        if session is not None:
            assert prompt is not None
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            if not prompts or not all(isinstance(p, str) for p in prompts):
                raise ValueError("prompt must be a string or a non-empty list of strings")
            self._compute(prompts, [session.token_id(tok) for tok in track])
        else:
            assert result is not None
            results = dict(_labelled(result, None)) if isinstance(result, Mapping) else {result.lens_name or "logit lens": result}
            _check_same_shape(results)
            self._show(results)  # type: ignore[arg-type]
        if self._pending_generate and session is None:
            raise ValueError("generate= needs a model")
        if comparison is not None:
            with self._quietly():
                self.prompt_index = comparison.prompt_b
            self._show_current()
            self._show_comparison(comparison)
        self.on_msg(lambda _widget, content, _buffers: self.handle_message(content))

    # -- state ------------------------------------------------------------------------------
    @property
    def result(self) -> LensResult:
        """The `LensResult` of the lens shown (every prompt of a batch)."""
        return self._results[self.lens]

    @property
    def selected_cell(self) -> dict[str, Any] | None:
        """The clicked cell (``selected``) in the grid's own terms, ``None`` when none is:
        ``site`` (the row index the front end sets), ``site_name`` (``"resid_out_29"``),
        ``label`` (the row's label, ``"29"``), ``layer`` (29; -1 for the embeddings), ``col``,
        ``position`` (the token index in the prompt), ``token`` (the token there), ``lens`` and
        ``prompt_index``."""
        sel = dict(self.selected or {})
        if not sel or not self._results:
            return None
        r, pi = self.result, self.prompt_index
        c = self._compared if self.compare_view else None
        sites = list(c.sites) if c is not None else list(r.sites)
        site, col = int(sel.get("site", -1)), int(sel.get("col", -1))
        if not 0 <= site < len(sites):
            return None
        name = sites[site]
        _, layer = parse_site(name, 1 << 30)
        out: dict[str, Any] = {"site": site, "site_name": name, "label": site_label(name), "layer": -1 if layer is None else layer, "col": col}
        if c is None and 0 <= col < r.n_columns(pi):
            pos = int(r.positions[pi, col])
            tid = int(r.input_ids[pi, pos])
            out.update({"position": pos, "token": r.token(tid)})
        elif "position" in sel:
            out["position"] = sel["position"]
        out.update({"lens": self.lens, "prompt_index": pi})
        return out

    @property
    def results(self) -> dict[str, LensResult]:
        """Every computed lens's `LensResult`, by label."""
        return dict(self._results)

    @property
    def model(self) -> HookedModel | None:
        return None if self._session is None else self._session.model

    @property
    def _lens(self) -> LogitLens | None:
        return None if self._session is None else self._session.runners.get(self.lens)

    @property
    def runner(self) -> LogitLens | None:
        """The `LogitLens` that computes the grid shown (``None`` for a widget built from a result).
        (``lens`` is the label of the lens shown, a trait.)"""
        return self._lens

    @property
    def activations(self) -> dict[str, Any]:
        """``{site: [P, d]}`` activations of the prompt shown, kept to answer clicks exactly
        (``{}`` without a model; :class:`~lens_widget.sources.ActivationRef` s for a remote one)."""
        acts = [] if self._session is None else self._session.acts
        return acts[self.prompt_index] if self.prompt_index < len(acts) else {}

    def _check_open(self) -> None:
        if self._closed or self.comm is None:
            raise WidgetClosedError("this LensWidget was closed; create a new one")

    def close(self) -> None:
        work = getattr(self, "_work", None)  # a widget that failed in __init__ has none
        task = None if work is None else work.task
        if task is not None:
            task.stop.set()
            task.join(30)
        self._closed = True
        if getattr(self, "_session", None) is not None:
            self._session.forget()
        super().close()

    def _compute(self, prompts: list[str], tracked: list[int]) -> None:
        """Run every lens on the prompts from one recorded pass; on success replace what is
        shown, on failure keep it and raise."""
        if self._session is None:
            raise RequestError("this widget was built from a LensResult and has no model to recompute with")
        task = self._work.current()
        progress: Any = self._progress
        if task is not None:  # a background recompute: progress messages, and its stop button
            progress = self._work.reporter(task)
        self._show(self._session.compute(prompts, tracked, progress, None if task is None else task.stop))

    def _show(self, results: dict[str, LensResult]) -> None:
        self._results = results
        self._wire = {label: [result_to_wire(r, b) for b in range(r.n_prompts)] for label, r in results.items()}
        first = next(iter(results.values()))
        labels = list(results)
        with self.hold_sync():
            with self._quietly():
                self.lenses = labels
                if self.lens not in results:
                    self.lens = labels[0]
                self.prompts = list(first.prompts) if first.prompts else [""] * first.n_prompts
                if not 0 <= self.prompt_index < first.n_prompts:
                    self.prompt_index = 0
                if first.n_prompts < 2:
                    self.aggregate = False
                self.tracked = [int(i) for i in first.tracked_ids.tolist()]
            multi = len(labels) > 1 or first.n_prompts > 1
            self.grids = {label: list(w) for label, w in self._wire.items()} if multi else {}
            self._show_current()
            self.error = ""
            self.last_attribution = {}  # it was of the old grids
            pair = getattr(self, "_pair", None)
            if pair is not None:  # a recompute (track, set_prompt): the comparison follows
                try:
                    self.compare_with(pair[0], pair[1], pair[2])
                except Exception as exc:  # e.g. a new prompt has no column at the aligned position
                    self._pair, self._compared = None, None
                    self.comparison, self.compare_pair, self.compare_view = {}, [], False
                    if self.metric in COMPARE_METRICS:
                        self.metric = "top1_prob"
                    self.error = f"the comparison was dropped: {type(exc).__name__}: {exc}"

    def _show_current(self) -> None:
        """``data``, ``prompt``, pins and selection for the lens and prompt chosen."""
        r, pi = self.result, self.prompt_index
        with self.hold_sync():
            self.data = self._wire[self.lens][pi]
            with self._quietly():
                self.prompt = self.prompts[pi] if pi < len(self.prompts) else ""
            n_cols = r.n_columns(pi)
            self._prune_pins(r.n_sites, n_cols)
            if self.selected and (self.selected.get("site", 0) >= r.n_sites or self.selected.get("col", 0) >= n_cols):
                self.selected = {}

    def _prune_pins(self, n_sites: int, n_cols: int) -> None:
        """Drop the pins that fall outside a grid of ``n_sites`` x ``n_cols``."""
        self.pinned = [p for p in self.pinned if p[0] < n_sites and p[1] < n_cols]

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        """Set traits without their observers recomputing the lens."""
        self._syncing = True
        try:
            yield
        finally:
            self._syncing = False

    def _guarded(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` with the busy flag; an error lands in ``error`` and the old grid stays
        (a stop is no error: the old grid stays, and ``error`` is left alone)."""
        self.busy = True
        try:
            return work()
        except Stopped:
            raise
        except Exception as exc:  # shown in the widget, then re-raised to the caller
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.busy = False

    # -- background work: recomputes and generations, with progress and stop -----------------
    @property
    def task(self) -> Task | None:
        """The background work running or last run (``None``: none yet)."""
        return self._work.task

    def stop(self) -> bool:
        """Stop the background work, running or waiting (a generation keeps its tokens so far; a
        recompute keeps the previous grid). True when something was running."""
        return self._work.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background work to end; True when it has (its error, if any, is in
        ``task.error`` and the ``error`` trait)."""
        return self._work.wait(timeout)

    def _send_safely(self, content: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        """A message to the front end from any thread (dropped once the widget is closed)."""
        if self._closed:
            return
        try:
            self.send(content, buffers)
        except Exception:  # a closed comm: the front end is gone, the work still finishes
            pass

    def set_prompt_in_background(self, prompt: str, reply: Callable[[Task, Any], None] | None = None) -> Task:
        """:meth:`set_prompt` in a background thread, with progress messages; :meth:`stop` keeps
        the previous grid (the front end's prompt box runs this)."""
        self._check_open()
        if not isinstance(prompt, str):
            raise RequestError("prompt must be a string")
        prompts = self._prompts_with(prompt)
        return self._work.start("compute", 0, lambda task: self._guarded(lambda: self._compute(prompts, list(self.tracked))), reply)

    def run_in_background(self, work: Callable[[], Any], reply: Callable[[Task, Any], None] | None = None) -> Task:
        """``work()`` (a recompute: tracking a token, a new prompt) in the background thread, with
        progress messages and :meth:`stop` (which keeps the previous grid)."""
        self._check_open()
        return self._work.start("compute", 0, lambda task: work(), reply)

    def _prompts_with(self, prompt: str) -> list[str]:
        """The batch with the prompt shown replaced by ``prompt``."""
        prompts = list(self.prompts)
        prompts[self.prompt_index] = prompt
        return prompts

    # -- Python API (the front end's requests call these too) --------------------------------
    def set_prompt(self, prompt: str) -> None:
        """Recompute every lens for a new prompt (in a batch: it replaces the prompt shown);
        the old grids stay if it fails."""
        self._check_open()
        self._work.finish()
        self._guarded(lambda: self._compute(self._prompts_with(prompt), list(self.tracked)))

    def track(self, token: int | str) -> int:
        """Track a token (id or single-token string) across the whole grid of every lens; returns its id."""
        self._check_open()
        self._work.finish()
        tid = self._token_id(token)
        if tid not in self.tracked:
            self._guarded(lambda: self._compute(list(self.prompts), list(self.tracked) + [tid]))
        return tid

    def untrack(self, token_id: int) -> None:
        """Stop tracking a token."""
        self._check_open()
        self._work.finish()
        keep = [i for i in self.tracked if i != int(token_id)]
        if keep != list(self.tracked):
            self._guarded(lambda: self._compute(list(self.prompts), keep))

    def _cell_from_end(self, site: Any, col: Any) -> tuple[int, int]:
        """:meth:`check_cell` of indices that may count from the end (negative)."""
        r, pi = self.result, self.prompt_index
        site = int(site) + r.n_sites if int(site) < 0 else int(site)
        col = int(col) + r.n_columns(pi) if int(col) < 0 else int(col)
        return self.check_cell(site, col)

    def check_cell(self, site: Any, col: Any) -> tuple[int, int]:
        """``(site, col)`` if both are ints inside the grid shown, else a :class:`RequestError`."""
        r = self.result
        return int_in("site", site, 0, r.n_sites - 1), int_in("col", col, 0, r.n_columns(self.prompt_index) - 1)

    def cell_detail(self, site: int, col: int, k: int = 50, token_ids: Sequence[int | str] = ()) -> dict[str, Any]:
        """Full-vocabulary detail of one cell of the lens and prompt shown: top-k, entropy, the
        next token's probability and rank, and the exact rank of any tokens. ``site`` and ``col``
        index the grid (negative values count from the end)."""
        self._check_open()
        pi = self.prompt_index
        site, col = self._cell_from_end(site, col)
        return self._detail_of(self.lens, pi, site, col, k, token_ids)

    def _detail_of(self, label: str, pi: int, site: int, col: int, k: int, token_ids: Sequence[int | str]) -> dict[str, Any]:
        """:meth:`cell_detail` of lens ``label``, prompt ``pi`` (indices checked by the caller)."""
        if self._session is None:
            raise RequestError("no model attached (widget built from a LensResult, or an exported page)")
        return self._session.detail(self._results[label], label, pi, site, col, k, token_ids)

    def trajectory(self, col: int, token_ids: Sequence[int | str]) -> dict[str, Any]:
        """Probability, logit and exact rank of tokens at every site of one column (lens and prompt shown)."""
        self._check_open()
        _, col = self.check_cell(0, col)
        if self._session is None:
            raise RequestError("no model attached (widget built from a LensResult, or an exported page)")
        return self._session.trajectory(self.result, self.lens, self.prompt_index, col, token_ids)

    def attribution(self, site: int, col: int, token: Any = None, top: int = 20) -> dict[str, Any]:
        """Exact attribution of one cell of the lens and prompt shown (heads, attention biases,
        MLPs, embedding; remainder rows apart) to ``token`` (id, string, or a pair ``(a, b)``;
        default the cell's top-1), as the ``attribution`` reply's plain data. ``site`` and
        ``col`` index the grid (negative values count from the end). It runs the model once:
        background work (a recompute) ends first. The cell becomes the selected one and the
        attribution is kept (``last_attribution``): the panel and an exported page show it."""
        self._check_open()
        self._work.finish()
        r, pi = self.result, self.prompt_index
        site, col = self._cell_from_end(site, col)
        if self._session is None:
            raise RequestError("no model attached (widget built from a LensResult, or an exported page)")
        data = self._session.attribution(r, self.lens, pi, site, col, token, top)
        with self.hold_sync():  # the panel (and an exported page) shows it on its cell
            self.last_attribution = arrays_to_wire(data)
            self.selected = {"site": site, "col": col, "position": int(r.positions[pi, col])}
        return data

    def search(self, query: str, limit: int = 20) -> dict[str, Any]:
        """Vocabulary entries matching ``query`` (exact forms first, multi-token queries flagged)."""
        self._check_open()
        if self._session is None:
            raise RequestError("no model attached: vocabulary search needs the tokenizer")
        return self._session.search(query, limit)

    def save_html(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """Write one self-contained HTML file (opens offline, no kernel, no CDN): every computed
        lens and prompt travels in it, and the lens switch and prompt selector work there."""
        page = standalone_html(self.export_state(), title or f"lens_widget — {self.prompt[:60]}")
        out = Path(path)
        out.write_text(page, encoding="utf-8")
        return out

    def save_figure(self, path: str | os.PathLike, metric: str | None = None, title: str | None = None) -> Path:
        """Write the grid shown (lens, prompt, metric, tracked tokens; ``metric=`` overrides) as
        an SVG figure, without a browser (:meth:`LensResult.to_svg`). A PNG is drawn by a
        browser: the toolbar's PNG button."""
        out = Path(path)
        if out.suffix.lower() != ".svg":
            raise ValueError(f"save_figure writes SVG: name the file .svg (got {out.name!r}); for a PNG use the toolbar's PNG button")
        if self.compare_view or self.aggregate:
            raise ValueError("save_figure draws one prompt's grid: turn compare_view / aggregate off, or use the toolbar's SVG button (it draws the view shown)")
        token = self.metric_token if self.metric_token >= 0 else None
        self.result.to_svg(out, metric=metric or self.metric, prompt=self.prompt_index, token=token, diff_tokens=self.diff_tokens, title=title)
        return out

    def export_state(self) -> dict[str, Any]:
        """The synced traits an exported page starts from (``grids`` holds every lens and prompt)."""
        state = {name: getattr(self, name) for name in self.keys if not name.startswith("_") and name not in ("layout", "comm", "tabbable", "tooltip")}
        state["busy"] = False
        if state.get("grids"):  # the grid shown is in `grids` too: the page carries it once
            state["data"] = {}
        return state

    # -- trait reactions -------------------------------------------------------------------
    @t.validate("metric")
    def _valid_metric(self, proposal: dict) -> str:
        if proposal["value"] not in GRID_METRICS + COMPARE_METRICS:
            raise t.TraitError(f"metric must be one of {', '.join(GRID_METRICS + COMPARE_METRICS)}, got {proposal['value']!r}")
        return proposal["value"]

    @t.observe("compare_pair")
    def _compare_pair_changed(self, change: dict) -> None:
        self._compare_pair_set(change)

    @t.validate("lens")
    def _valid_lens(self, proposal: dict) -> str:
        labels = list(getattr(self, "_results", None) or ())
        if labels and proposal["value"] not in labels:
            raise t.TraitError(f"lens must be one of {', '.join(map(repr, labels))}, got {proposal['value']!r}")
        return proposal["value"]

    @t.validate("prompt_index")
    def _valid_prompt_index(self, proposal: dict) -> int:
        n = len(self.prompts)
        if n and not 0 <= proposal["value"] < n:
            raise t.TraitError(f"prompt_index must be in 0..{n - 1}, got {proposal['value']!r}")
        return proposal["value"]

    @t.observe("lens", "prompt_index")
    def _view_changed(self, change: dict) -> None:
        if self._syncing or not getattr(self, "_results", None):
            return
        self._show_current()

    @t.observe("prompt")
    def _prompt_changed(self, change: dict) -> None:
        if self._syncing or not self._results or self._session is None:
            return
        if change["new"] == self.prompts[self.prompt_index]:
            return
        self._recompute_or_revert("prompt", change["old"], lambda: self._compute(self._prompts_with(change["new"]), list(self.tracked)))

    @t.observe("tracked")
    def _tracked_changed(self, change: dict) -> None:
        if self._syncing or not self._results or self._session is None:
            return
        if [int(i) for i in change["new"]] == self.result.tracked_ids.tolist():
            return
        self._recompute_or_revert(
            "tracked", list(change["old"]), lambda: self._compute(list(self.prompts), [self._token_id(i) for i in change["new"]])
        )

    def _recompute_or_revert(self, trait: str, old: Any, work: Callable[[], None]) -> None:
        """A trait set from Python or the front end: recompute, or put the old value back."""
        try:
            self._guarded(work)
        except Exception:
            with self._quietly():
                setattr(self, trait, old)

    # -- helpers ---------------------------------------------------------------------------
    def _token_id(self, token: Any) -> int:
        if self._session is not None:
            return self._session.token_id(token)
        if isinstance(token, (int, np.integer)) and not isinstance(token, bool) and int(token) in self.result.token_strings:
            return int(token)
        raise RequestError("this widget has no model: only tokens already in the result can be used")

    def _need_model(self) -> LogitLens:
        if self._lens is None or not self.activations:
            raise RequestError("no model attached (widget built from a LensResult, or an exported page)")
        return self._lens

    def handle_message(self, content: Any) -> None:
        """Answer one message from the front end (see :func:`lens_widget.widget.requests.handle_message`);
        replies go out through ``send``. Tests and benchmarks drive the widget with it."""
        handle_message(self, content)

    def view_ready(self) -> dict[str, Any]:
        """A view is listening: a pending ``generate=N`` starts (the ``view_ready`` request)."""
        n, self._pending_generate = self._pending_generate, 0
        if n and self._session is not None:
            try:
                self.generate(n)
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
        return {"generating": bool(n)}

    def send_message(self, content: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        """A message to the front end from any thread (dropped once the widget is closed)."""
        self._send_safely(content, buffers)


#: keywords anywidget itself reads (the front end's module and style)
_TRAIT_KEYWORDS = frozenset({"_esm", "_css"})


def _labelled(entries: Mapping[str, Any] | None, default_label: str | None) -> dict[str, Any]:
    """``{label: value}`` checked: non-empty string labels, at least one entry
    (``None`` entries: ``{default_label: None}``, the logit lens alone)."""
    if entries is None:
        assert default_label is not None
        return {default_label: None}
    if not isinstance(entries, Mapping) or not entries:
        raise ValueError("give the lenses as a non-empty dict {label: decoder or None}, e.g. {'logit': None, 'tuned': tuned}")
    for label, value in entries.items():
        if not isinstance(label, str) or not label:
            raise ValueError(f"lens labels must be non-empty strings, got {label!r}")
        if default_label is not None and value is not None and not isinstance(value, Decoder):
            raise TypeError(f"decoders[{label!r}] must be a lens_widget Decoder or None (the logit lens), got {type(value).__name__}")
        if default_label is None and not isinstance(value, LensResult):
            raise TypeError(f"result[{label!r}] must be a LensResult, got {type(value).__name__}")
    return dict(entries)


def _check_same_shape(results: Mapping[str, LensResult]) -> None:
    """Saved results shown together must be the same prompts over the same sites."""
    first_label, first = next(iter(results.items()))
    for label, r in results.items():
        if r.sites != first.sites or r.positions.shape != first.positions.shape or not np.array_equal(r.positions, first.positions):
            raise ValueError(f"result {label!r} does not cover the same prompts, positions and sites as {first_label!r}")
