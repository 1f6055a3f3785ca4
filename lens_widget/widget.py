"""`LensWidget`: the lens grid as one anywidget, with a kernel that answers what the grid lacks.

State that must survive a saved notebook or an HTML export is in traits (``data`` holds the
reduced lens as binary buffers); on-demand detail (a cell's full-vocabulary top-50, any token's
rank, vocabulary search, a new prompt) travels as custom messages tagged with a request id.
See ``docs/wire.md``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import anywidget
import numpy as np
import torch
import traitlets as t

from .export import BUNDLE_PATH, bundle_source, standalone_html
from .hooked import HookedModel, PromptError
from .lens import LogitLens
from .result import LensResult, encode_array
from .tokens import TokenLookupError

__all__ = ["LensWidget", "METRICS", "WidgetClosedError"]

METRICS = ("top1_prob", "next_prob", "next_rank", "entropy", "kl", "tracked_prob", "logit_diff")
_MAX_K = 200


class WidgetClosedError(RuntimeError):
    """The widget was closed; its front end is gone."""


class RequestError(ValueError):
    """A front-end request that cannot be answered (the reply says why)."""


class LensWidget(anywidget.AnyWidget):
    """A hoverable, clickable layer x token logit-lens grid.

    ``LensWidget(model, "The capital of France is")`` runs the lens in the kernel and keeps the
    model to answer clicks exactly; ``LensWidget(result=lens_result)`` shows a result computed
    earlier (requests that need the model then answer with an error).

    Traits readable and settable from Python: ``prompt``, ``metric``, ``metric_token``,
    ``diff_tokens``, ``tracked``, ``pinned``, ``selected`` (the last clicked cell, which
    ``w.observe(fn, names=["selected"])`` follows), ``transpose``, ``height``.
    """

    # anywidget reads the file (and, with ANYWIDGET_HMR=1, watches it for live reload).
    _esm = BUNDLE_PATH

    data = t.Dict().tag(sync=True)
    prompt = t.Unicode("").tag(sync=True)
    metric = t.Unicode("top1_prob").tag(sync=True)
    metric_token = t.Int(-1).tag(sync=True)
    diff_tokens = t.List(t.Int()).tag(sync=True)
    tracked = t.List(t.Int()).tag(sync=True)
    pinned = t.List().tag(sync=True)
    selected = t.Dict().tag(sync=True)
    transpose = t.Bool(False).tag(sync=True)
    busy = t.Bool(False).tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    height = t.Int(440).tag(sync=True)

    def __init__(
        self,
        model: HookedModel | None = None,
        prompt: str | None = None,
        *,
        result: LensResult | None = None,
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
        super().__init__(**kwargs)
        self._model = model
        self._lens = None if model is None else (LogitLens(model, memory_budget) if memory_budget else LogitLens(model))
        self._sites, self._k, self._progress = sites, int(k), progress
        self._result: LensResult | None = None
        self._acts: dict[str, torch.Tensor] = {}
        self._closed = False
        if model is not None:
            if prompt is None:
                raise ValueError("give the prompt to look at")
            tracked = [model.tokens.token_id(tok) for tok in track]
            self._compute(prompt, tracked)
        else:
            assert result is not None
            self._show(result, [])
        self.on_msg(self._on_msg)

    # -- state ------------------------------------------------------------------------------
    @property
    def result(self) -> LensResult:
        """The `LensResult` on display."""
        assert self._result is not None
        return self._result

    @property
    def model(self) -> HookedModel | None:
        return self._model

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
        self._show(result, tracked)

    def _show(self, result: LensResult, tracked: list[int]) -> None:
        self._result = result
        with self.hold_sync():
            self.data = result.to_wire(0)
            self._syncing = True
            try:
                self.prompt = result.prompts[0] if result.prompts else ""
                self.tracked = [int(i) for i in result.tracked_ids.tolist()]
            finally:
                self._syncing = False
            self.pinned = [p for p in self.pinned if p[0] < result.n_sites and p[1] < result.n_positions]
            if self.selected and (self.selected.get("site", 0) >= result.n_sites or self.selected.get("col", 0) >= result.n_positions):
                self.selected = {}
            self.error = ""

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

    # -- Python API ------------------------------------------------------------------------
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
        self._check_open()
        keep = [i for i in self.tracked if i != int(token_id)]
        if keep != list(self.tracked):
            self._guarded(lambda: self._compute(self.prompt, keep))

    def cell_detail(self, site: int, col: int, k: int = 50, token_ids: Sequence[int] = ()) -> dict[str, Any]:
        """Full-vocabulary detail of one cell: top-k and the exact rank of any tokens.

        ``site`` and ``col`` index the grid (negative values count from the end).
        """
        self._check_open()
        r = self.result
        n_cols = int((r.positions[0] >= 0).sum())
        site = int(site) + r.n_sites if int(site) < 0 else int(site)
        col = int(col) + n_cols if int(col) < 0 else int(col)
        return self._cell_detail(site, col, k, token_ids)

    def search(self, query: str, limit: int = 20) -> dict[str, Any]:
        """Vocabulary entries matching ``query`` (exact forms first, multi-token queries flagged)."""
        self._check_open()
        return self._search(query, limit)

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
        if proposal["value"] not in METRICS:
            raise t.TraitError(f"metric must be one of {', '.join(METRICS)}, got {proposal['value']!r}")
        return proposal["value"]

    @t.observe("prompt")
    def _prompt_changed(self, change: dict) -> None:
        if getattr(self, "_syncing", False) or self._result is None or self._lens is None:
            return
        if self._result.prompts and change["new"] == self._result.prompts[0]:
            return
        self._recompute_or_revert("prompt", change["old"], lambda: self._compute(change["new"], list(self.tracked)))

    @t.observe("tracked")
    def _tracked_changed(self, change: dict) -> None:
        if getattr(self, "_syncing", False) or self._result is None or self._lens is None:
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
            self._syncing = True
            try:
                setattr(self, trait, old)
            finally:
                self._syncing = False

    # -- requests from the front end -------------------------------------------------------
    def _token_id(self, token: Any) -> int:
        if self._model is not None:
            return self._model.tokens.token_id(token)
        if isinstance(token, (int, np.integer)) and not isinstance(token, bool) and int(token) in self.result.token_strings:
            return int(token)
        raise RequestError("this widget has no model: only tokens already in the result can be used")

    def _cell(self, site: Any, col: Any) -> tuple[int, int]:
        r = self.result
        n_cols = int((r.positions[0] >= 0).sum())
        return _int_in("site", site, 0, r.n_sites - 1), _int_in("col", col, 0, n_cols - 1)

    def _need_model(self) -> LogitLens:
        if self._lens is None or not self._acts:
            raise RequestError("no model attached (widget built from a LensResult, or an exported page)")
        return self._lens

    def _cell_detail(self, site: Any, col: Any, k: Any = 50, token_ids: Any = ()) -> dict[str, Any]:
        site, col = self._cell(site, col)
        k = _int_in("k", k, 1, _MAX_K)
        ids = [self._token_id(i) for i in (token_ids or [])]
        lens = self._need_model()
        r = self.result
        next_id = int(r.next_ids[0, col])
        # one decode of the row answers the top-k, the asked tokens and the next token
        detail = lens.cell_detail(self._acts[r.sites[site]][col], k, ids + ([next_id] if next_id >= 0 else []))
        next_stats = detail["token_stats"].pop() if next_id >= 0 else None
        return {
            "site": site,
            "col": col,
            "position": int(r.positions[0, col]),
            "top_ids": detail["top_ids"],
            "top_probs": detail["top_probs"],
            "top_logits": detail["top_logits"],
            "entropy": detail["entropy"],
            "next_id": next_id,
            "next_prob": None if next_stats is None else next_stats["prob"],
            "next_rank": 0 if next_stats is None else next_stats["rank"],
            "tokens": {str(i): self._model.tokens.decode(i) for i in set(detail["top_ids"].tolist()) | set(ids)},  # type: ignore[union-attr]
            "token_stats": detail["token_stats"],
            "vocab_size": lens.decoder.vocab,
        }

    def _search(self, query: Any, limit: Any = 20) -> dict[str, Any]:
        if self._model is None:
            raise RequestError("no model attached: vocabulary search needs the tokenizer")
        if not isinstance(query, str):
            raise RequestError("query must be a string")
        matches, pieces = self._model.tokens.search(query, _int_in("limit", limit, 1, _MAX_K))
        return {
            "matches": [{"id": m.id, "text": m.text, "display": m.display, "exact": m.exact} for m in matches],
            "pieces": None if pieces is None else [[i, s] for i, s in pieces],
        }

    def _trajectory(self, col: Any, token_ids: Any) -> dict[str, Any]:
        _, col = self._cell(0, col)
        if not isinstance(token_ids, list) or not token_ids or len(token_ids) > 64:
            raise RequestError("token_ids must be a non-empty list of at most 64 ids")
        ids = [self._token_id(i) for i in token_ids]
        lens = self._need_model()
        r = self.result
        h = torch.stack([self._acts[s][col] for s in r.sites])
        z = lens.decoder.logits(h)
        logp = torch.log_softmax(z, -1)
        idx = torch.tensor(ids)
        sel = z[:, idx]
        ranks = 1 + (z[:, None, :] > sel[:, :, None]).sum(-1)
        return {
            "token_ids": ids,
            "probs": logp[:, idx].exp().numpy().astype(np.float32),
            "logits": sel.numpy().astype(np.float32),
            "ranks": ranks.numpy().astype(np.int32),
        }

    def _handle(self, content: dict[str, Any]) -> dict[str, Any]:
        kind = content.get("type")
        if kind == "cell_detail":
            return self._cell_detail(content.get("site"), content.get("col"), content.get("k", 50), content.get("token_ids") or [])
        if kind == "search":
            return self._search(content.get("query"), content.get("limit", 20))
        if kind == "track":
            token = content.get("token")
            if not isinstance(token, (int, str)) or isinstance(token, bool):
                raise RequestError("token must be an id or a string")
            tid = self.track(token)
            return {"token_id": tid, "text": self.result.token(tid)}
        if kind == "untrack":
            self.untrack(int(content.get("token_id", -1)))
            return {"tracked": list(self.tracked)}
        if kind == "set_prompt":
            prompt = content.get("prompt")
            if not isinstance(prompt, str):
                raise RequestError("prompt must be a string")
            self.set_prompt(prompt)
            return {"n_positions": int(self.data.get("n_positions", 0))}
        if kind == "trajectory":
            return self._trajectory(content.get("col"), content.get("token_ids"))
        raise RequestError(f"unknown request type {kind!r}")

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        request_id = content.get("request_id")
        try:
            reply = {"type": "reply", "request_id": request_id, "ok": True, "result": self._handle(content)}
        except (RequestError, PromptError, TokenLookupError, KeyError, IndexError, ValueError, TypeError) as exc:
            reply = {"type": "reply", "request_id": request_id, "ok": False, "error": str(exc) or type(exc).__name__}
        except Exception as exc:  # never let a request kill the widget's message loop
            reply = {"type": "reply", "request_id": request_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        content_out, buffers = _lift_arrays(reply)
        self.send(content_out, buffers)


def _int_in(name: str, value: Any, lo: int, hi: int) -> int:
    """``value`` if it is an int (not a bool) in ``lo..hi``, else a :class:`RequestError`."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise RequestError(f"{name} must be an int in {lo}..{hi}, got {value!r}")
    return value


# The wire carries int32, uint32, float32 and uint8 only (docs/wire.md).
_WIRE_DTYPES = {"i": "int32", "u": "uint32", "f": "float32", "b": "uint8"}


def _lift_arrays(msg: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """Replace numpy arrays in a reply by ``{dtype, shape, buffer_index}`` + binary buffers."""
    buffers: list[bytes] = []

    def walk(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            enc = encode_array(v, _WIRE_DTYPES.get(v.dtype.kind, "float32"))
            buffers.append(enc.pop("buffer"))
            enc["buffer_index"] = len(buffers) - 1
            return enc
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        if isinstance(v, float) and not np.isfinite(v):
            return None
        return v

    return walk(msg), buffers
