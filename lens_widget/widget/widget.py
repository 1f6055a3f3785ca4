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
from typing import Any, Callable, Iterator, Sequence

import anywidget
import numpy as np
import torch
import traitlets as t

from ..engine import LogitLens
from ..hooked import HookedModel
from ..inputs import PromptError
from ..metrics import GRID_METRICS
from ..result import LensResult
from ..tokens import TokenLookupError
from ..wire import lift_arrays, result_to_wire
from .export import BUNDLE_PATH, bundle_source, standalone_html
from .requests import RequestError, handle, int_in

__all__ = ["LensWidget", "WidgetClosedError"]


class WidgetClosedError(RuntimeError):
    """The widget was closed; its front end is gone."""


class LensWidget(anywidget.AnyWidget):
    """A hoverable, clickable layer x token logit-lens grid.

    ``LensWidget(model, "The capital of France is")`` runs the lens in the kernel and keeps the
    model to answer clicks exactly; ``model`` is a :class:`~lens_widget.HookedModel` or a
    ``transformers`` causal LM (``tokenizer=`` optional when it was saved with the model).
    ``LensWidget(result=lens_result)`` shows a result computed earlier (requests that need the
    model then answer with an error).
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
    selected = t.Dict().tag(sync=True)
    #: False: layers are rows (final layer at the top), tokens are columns.
    transpose = t.Bool(False).tag(sync=True)
    #: A recompute is running.
    busy = t.Bool(False).tag(sync=True)
    #: The last error ("" none), shown in the widget.
    error = t.Unicode("").tag(sync=True)
    #: Pixel height of the grid viewport.
    height = t.Int(440).tag(sync=True)

    def __init__(
        self,
        model: Any = None,
        prompt: str | None = None,
        *,
        result: LensResult | None = None,
        tokenizer: Any = None,
        sites: str | Sequence[str] | None = None,
        k: int = 10,
        track: Sequence[int | str] = (),
        memory_budget: int | None = None,
        progress: bool = True,
        **kwargs: Any,
    ):
        source = bundle_source()  # a clear error, before anything is shown, if the front end is not built
        if isinstance(type(self)._esm, Path):  # the bundle was built after this module was imported
            self._esm = source
        if (model is None) == (result is None):
            raise ValueError("give a model and a prompt, or result=LensResult")
        if model is not None and prompt is None:
            raise ValueError("give the prompt to look at")
        lens = None
        if model is not None:
            lens = LogitLens(model, memory_budget, tokenizer=tokenizer) if memory_budget else LogitLens(model, tokenizer=tokenizer)
        super().__init__(**kwargs)
        self._lens: LogitLens | None = lens
        self._sites, self._k, self._progress = sites, int(k), progress
        self._result: LensResult | None = None
        self._acts: dict[str, torch.Tensor] = {}
        self._closed = False
        self._syncing = False
        if lens is not None:
            assert prompt is not None
            self._compute(prompt, [lens.model.tokens.token_id(tok) for tok in track])
        else:
            assert result is not None
            self._show(result)
        self.on_msg(self._on_msg)

    # -- state ------------------------------------------------------------------------------
    @property
    def result(self) -> LensResult:
        """The `LensResult` on display."""
        assert self._result is not None
        return self._result

    @property
    def model(self) -> HookedModel | None:
        return None if self._lens is None else self._lens.model

    @property
    def lens(self) -> LogitLens | None:
        """The lens that computes this widget's grid (``None`` for a widget built from a result)."""
        return self._lens

    def _check_open(self) -> None:
        if self._closed or self.comm is None:
            raise WidgetClosedError("this LensWidget was closed; create a new one")

    def close(self) -> None:
        self._closed = True
        self._acts = {}
        super().close()

    def _compute(self, prompt: str, tracked: list[int]) -> None:
        """Run the lens; on success replace what is shown, on failure keep it and raise."""
        if self._lens is None:
            raise RequestError("this widget was built from a LensResult and has no model to recompute with")
        result, acts = self._lens.run(
            prompt, sites=self._sites, k=self._k, track=tracked, progress=self._progress, return_activations=True
        )
        self._acts = acts[0]
        self._show(result)

    def _show(self, result: LensResult) -> None:
        self._result = result
        with self.hold_sync():
            self.data = result_to_wire(result, 0)
            with self._quietly():
                self.prompt = result.prompts[0] if result.prompts else ""
                self.tracked = [int(i) for i in result.tracked_ids.tolist()]
            n_cols = result.n_columns(0)
            self.pinned = [p for p in self.pinned if p[0] < result.n_sites and p[1] < n_cols]
            if self.selected and (self.selected.get("site", 0) >= result.n_sites or self.selected.get("col", 0) >= n_cols):
                self.selected = {}
            self.error = ""

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        """Set traits without their observers recomputing the lens."""
        self._syncing = True
        try:
            yield
        finally:
            self._syncing = False

    def _guarded(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` with the busy flag; an error lands in ``error`` and the old grid stays."""
        self.busy = True
        try:
            return work()
        except Exception as exc:  # shown in the widget, then re-raised to the caller
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.busy = False

    # -- Python API (the front end's requests call these too) --------------------------------
    def set_prompt(self, prompt: str) -> None:
        """Recompute the lens for a new prompt (the old grid stays if it fails)."""
        self._check_open()
        self._guarded(lambda: self._compute(prompt, list(self.tracked)))

    def track(self, token: int | str) -> int:
        """Track a token (id or single-token string) across the whole grid; returns its id."""
        self._check_open()
        tid = self._token_id(token)
        if tid not in self.tracked:
            self._guarded(lambda: self._compute(self.prompt, list(self.tracked) + [tid]))
        return tid

    def untrack(self, token_id: int) -> None:
        """Stop tracking a token."""
        self._check_open()
        keep = [i for i in self.tracked if i != int(token_id)]
        if keep != list(self.tracked):
            self._guarded(lambda: self._compute(self.prompt, keep))

    def check_cell(self, site: Any, col: Any) -> tuple[int, int]:
        """``(site, col)`` if both are ints inside the grid, else a :class:`RequestError`."""
        r = self.result
        return int_in("site", site, 0, r.n_sites - 1), int_in("col", col, 0, r.n_columns(0) - 1)

    def cell_detail(self, site: int, col: int, k: int = 50, token_ids: Sequence[int | str] = ()) -> dict[str, Any]:
        """Full-vocabulary detail of one cell: top-k, entropy, the next token's probability and
        rank, and the exact rank of any tokens. ``site`` and ``col`` index the grid (negative
        values count from the end)."""
        self._check_open()
        r = self.result
        site = int(site) + r.n_sites if int(site) < 0 else int(site)
        col = int(col) + r.n_columns(0) if int(col) < 0 else int(col)
        site, col = self.check_cell(site, col)
        ids = [self._token_id(i) for i in token_ids]
        lens = self._need_model()
        next_id = int(r.next_ids[0, col])
        # one decode of the row answers the top-k, the asked tokens and the next token
        detail = lens.cell_detail(self._acts[r.sites[site]][col], r.sites[site], k, ids + ([next_id] if next_id >= 0 else []))
        next_stats = detail["token_stats"].pop() if next_id >= 0 else None
        return {
            "site": site,
            "col": col,
            "position": int(r.positions[0, col]),
            "lens": lens.decoder.name,
            "top_ids": detail["top_ids"],
            "top_probs": detail["top_probs"],
            "top_logits": detail["top_logits"],
            "entropy": detail["entropy"],
            "next_id": next_id,
            "next_prob": None if next_stats is None else next_stats["prob"],
            "next_rank": 0 if next_stats is None else next_stats["rank"],
            "tokens": {str(i): lens.model.tokens.decode(i) for i in set(detail["top_ids"].tolist()) | set(ids)},
            "token_stats": detail["token_stats"],
            "vocab_size": lens.decoder.vocab,
        }

    def trajectory(self, col: int, token_ids: Sequence[int | str]) -> dict[str, Any]:
        """Probability, logit and exact rank of tokens at every site of one column."""
        self._check_open()
        _, col = self.check_cell(0, col)
        ids = [self._token_id(i) for i in token_ids]
        lens = self._need_model()
        r = self.result
        traj = lens.trajectory({s: self._acts[s][col] for s in r.sites}, r.sites, ids)
        return {"token_ids": ids, **traj}

    def search(self, query: str, limit: int = 20) -> dict[str, Any]:
        """Vocabulary entries matching ``query`` (exact forms first, multi-token queries flagged)."""
        self._check_open()
        if self._lens is None:
            raise RequestError("no model attached: vocabulary search needs the tokenizer")
        matches, pieces = self._lens.model.tokens.search(query, limit)
        return {
            "matches": [{"id": m.id, "text": m.text, "display": m.display, "exact": m.exact} for m in matches],
            "pieces": None if pieces is None else [[i, s] for i, s in pieces],
        }

    def save_html(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """Write one self-contained HTML file (opens offline, no kernel, no CDN)."""
        state = {name: getattr(self, name) for name in self.keys if not name.startswith("_") and name not in ("layout", "comm", "tabbable", "tooltip")}
        state["busy"] = False
        page = standalone_html(state, title or f"lens_widget — {self.prompt[:60]}")
        out = Path(path)
        out.write_text(page, encoding="utf-8")
        return out

    # -- trait reactions -------------------------------------------------------------------
    @t.validate("metric")
    def _valid_metric(self, proposal: dict) -> str:
        if proposal["value"] not in GRID_METRICS:
            raise t.TraitError(f"metric must be one of {', '.join(GRID_METRICS)}, got {proposal['value']!r}")
        return proposal["value"]

    @t.observe("prompt")
    def _prompt_changed(self, change: dict) -> None:
        if self._syncing or self._result is None or self._lens is None:
            return
        if self._result.prompts and change["new"] == self._result.prompts[0]:
            return
        self._recompute_or_revert("prompt", change["old"], lambda: self._compute(change["new"], list(self.tracked)))

    @t.observe("tracked")
    def _tracked_changed(self, change: dict) -> None:
        if self._syncing or self._result is None or self._lens is None:
            return
        if [int(i) for i in change["new"]] == self._result.tracked_ids.tolist():
            return
        self._recompute_or_revert(
            "tracked", list(change["old"]), lambda: self._compute(self.prompt, [self._token_id(i) for i in change["new"]])
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
        if self._lens is not None:
            return self._lens.model.tokens.token_id(token)
        if isinstance(token, (int, np.integer)) and not isinstance(token, bool) and int(token) in self.result.token_strings:
            return int(token)
        raise RequestError("this widget has no model: only tokens already in the result can be used")

    def _need_model(self) -> LogitLens:
        if self._lens is None or not self._acts:
            raise RequestError("no model attached (widget built from a LensResult, or an exported page)")
        return self._lens

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        request_id = content.get("request_id")
        try:
            reply = {"type": "reply", "request_id": request_id, "ok": True, "result": handle(self, content)}
        except (RequestError, PromptError, TokenLookupError, KeyError, IndexError, ValueError, TypeError) as exc:
            reply = {"type": "reply", "request_id": request_id, "ok": False, "error": str(exc) or type(exc).__name__}
        except Exception as exc:  # never let a request kill the widget's message loop
            reply = {"type": "reply", "request_id": request_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        content_out, buffers = lift_arrays(reply)
        self.send(content_out, buffers)

