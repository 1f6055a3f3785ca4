"""The widget's comparisons: the diff grid of two sides (two prompts, two lenses, a patched
and a clean run) — building one, choosing the pair, detail of both sides, patching a cell.

A mixin of :class:`~lens_widget.widget.widget.LensWidget` (one job per file): it reads and sets
the widget's traits (``comparison``, ``compare_view``, ``compare_pair``, ``metric``, ``pinned``)
and asks the kernel session (:mod:`lens_widget.widget.session`) for exact numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..compare import Align, Comparison, compare
from ..decoders import Decoder
from ..metrics import COMPARE_METRICS
from ..patching import Patch
from ..wire import comparison_to_wire, patch_to_wire
from .requests import RequestError, int_in

if TYPE_CHECKING:
    from .widget import LensWidget

__all__ = ["CompareView"]


class CompareView:
    """Comparisons and patching, mixed into ``LensWidget``."""

    @classmethod
    def compare(
        cls,
        model: Any,
        prompt_a: str,
        prompt_b: str | None = None,
        *,
        decoder_a: Decoder | None = None,
        decoder_b: Decoder | None = None,
        labels: tuple[str, str] | None = None,
        align: Align = "last",
        **kwargs: Any,
    ) -> "LensWidget":
        """A widget showing the diff grid of two prompts (``prompt_b``), two lenses on one prompt
        (``decoder_b``; ``decoder_a`` defaults to the logit lens), or both. ``labels`` name the two
        lenses when both are given. The JS divergence is exact; every other widget feature (each
        side's own grid, the lens switch, the prompt selector) stays available."""
        if prompt_b is None and decoder_b is None:
            raise ValueError("LensWidget.compare needs prompt_b or decoder_b")
        prompts = [prompt_a] if prompt_b is None else [prompt_a, prompt_b]
        if decoder_b is None:
            decoders = None if decoder_a is None else {decoder_a.name: decoder_a}
        else:
            la, lb = labels or ((decoder_a.name if decoder_a is not None else "logit lens"), decoder_b.name)
            if la == lb:
                la, lb = f"{la} (a)", f"{lb} (b)"
            decoders = {la: decoder_a, lb: decoder_b}
        w = cls(model, prompts[0] if len(prompts) == 1 else prompts, decoders=decoders, **kwargs)
        lenses = list(w.lenses)
        w.compare_with((lenses[0], 0), (lenses[-1], len(prompts) - 1), align=align)
        return w

    @property
    def compared(self) -> Comparison | None:
        """The :class:`~lens_widget.Comparison` the diff grid shows (``None``: none)."""
        return self._compared

    def compare_with(self, a: tuple[str, int], b: tuple[str, int], align: Align = "last") -> Comparison:
        """Compare side ``a = (lens label, prompt index)`` with side ``b`` of this widget's grids
        and show the diff grid (``compare_view``). Exact JS when the widget has its model."""
        (la, pa), (lb, pb) = self._check_side(a, "a"), self._check_side(b, "b")
        ra, rb = self._results[la], self._results[lb]
        labels = self._side_labels((la, pa), (lb, pb))
        c = compare(ra, rb, align=align, prompt_a=pa, prompt_b=pb, labels=labels)
        js = None if self._session is None else self._session.exact_js((la, pa), (lb, pb), c)
        if js is not None:
            c = compare(ra, rb, align=align, prompt_a=pa, prompt_b=pb, labels=labels, js=js)
        self._pair = ((la, pa), (lb, pb), align)
        self._compared = c
        self._show_comparison(c)
        return c

    def _check_side(self, side: Any, name: str) -> tuple[str, int]:
        if not isinstance(side, (list, tuple)) or len(side) != 2 or not isinstance(side[0], str) or isinstance(side[1], bool) or not isinstance(side[1], (int, np.integer)):
            raise RequestError(f"side {name} must be (lens label, prompt index), got {side!r}")
        label, pi = side[0], int(side[1])
        if label not in self._results:
            raise RequestError(f"side {name}: lens must be one of {', '.join(map(repr, self._results))}, got {label!r}")
        int_in(f"side {name} prompt index", pi, 0, self._results[label].n_prompts - 1)
        return label, pi

    def _side_labels(self, a: tuple[str, int], b: tuple[str, int]) -> tuple[str, str]:
        """What tells two sides apart: the lens, the prompt, or both."""
        def prompt(i: int) -> str:
            text = self.prompts[i] if i < len(self.prompts) else ""
            return f"prompt {i + 1}: {text[:40]}{'…' if len(text) > 40 else ''}"

        if a[1] == b[1]:
            return a[0], b[0]
        if a[0] == b[0]:
            return prompt(a[1]), prompt(b[1])
        return f"{a[0]} · {prompt(a[1])}", f"{b[0]} · {prompt(b[1])}"

    def _show_comparison(self, c: Comparison, patch: dict[str, Any] | None = None) -> None:
        with self.hold_sync():
            self.comparison = comparison_to_wire(c) if patch is None else {**comparison_to_wire(c), "patch": patch}
            with self._quietly():
                if self._pair is not None:
                    self.compare_pair = [list(self._pair[0]), list(self._pair[1])]
                self.compare_view = True
                if self.metric not in COMPARE_METRICS:
                    self.metric = "js"
            self._prune_pins(c.n_sites, c.n_positions)

    def compare_detail(self, site: int, col: int, k: int = 50, token_ids: Sequence[int | str] = ()) -> dict[str, Any]:
        """Full-vocabulary detail of one cell of the diff grid, for both sides: ``{"a": …, "b": …}``
        (each as :meth:`cell_detail`), plus the cell's JS divergence."""
        self._check_open()
        c = self._compared
        if c is None or self._pair is None:
            raise RequestError("no comparison with a model to answer for (LensWidget.compare or compare_with first)")
        site = int_in("site", site, 0, c.n_sites - 1)
        col = int_in("col", col, 0, c.n_positions - 1)
        out: dict[str, Any] = {}
        for name, (label, pi), rcol in (("a", self._pair[0], c.cols_a[col]), ("b", self._pair[1], c.cols_b[col])):
            out[name] = self._detail_of(label, pi, site, int(rcol), k, token_ids)
        js = float(c.js[site, col])
        out.update({"site": site, "col": col, "js": js, "js_exact": c.js_exact})
        return out

    def patch(self, source: Sequence[int], target: Sequence[int]) -> Patch:
        """Patch a cell of the lens shown into another prompt of the batch (or the same one):
        ``source = (prompt_index, site, col)``, ``target = (prompt_index, col)`` (the same site).
        The diff grid then shows the clean target (a) against the patched one (b), with the
        causal cone marked (``comparison["patch"]``, docs/wire.md). It runs the model: background
        work ends first."""
        self._check_open()
        self._work.finish()
        if self._session is None:
            raise RequestError("no model attached (widget built from a LensResult, or an exported page)")
        (sp, site, scol), (tp, tcol) = self.check_patch(source, target)
        p = self._session.patch(self.result, self.lens, (sp, site, scol), (tp, tcol))
        p.meta.update({"source_prompt_index": sp, "target_prompt_index": tp, "source_col": scol, "target_col": tcol, "site_index": site})
        self._pair, self._compared = None, p.comparison
        self._show_comparison(p.comparison, patch_to_wire(p))
        return p

    def check_patch(self, source: Any, target: Any) -> tuple[tuple[int, int, int], tuple[int, int]]:
        """``source = (prompt_index, site, col)`` and ``target = (prompt_index, col)`` checked
        against the grids shown, else a :class:`RequestError`."""
        if not (isinstance(source, (list, tuple)) and len(source) == 3 and isinstance(target, (list, tuple)) and len(target) == 2):
            raise RequestError("a patch needs source [prompt_index, site, col] and target [prompt_index, col]")
        r = self.result
        sp = int_in("source prompt_index", source[0], 0, r.n_prompts - 1)
        tp = int_in("target prompt_index", target[0], 0, r.n_prompts - 1)
        site = int_in("site", source[1], 0, r.n_sites - 1)
        scol = int_in("source col", source[2], 0, r.n_columns(sp) - 1)
        tcol = int_in("target col", target[1], 0, r.n_columns(tp) - 1)
        return (sp, site, scol), (tp, tcol)

    def _compare_pair_set(self, change: dict) -> None:
        """The front end chose another pair of sides (trait ``compare_pair``): compare them."""
        if self._syncing or not getattr(self, "_results", None) or not change["new"]:
            return
        pair = list(change["new"])
        if self._pair is not None and pair == [list(self._pair[0]), list(self._pair[1])]:
            return
        align = self._pair[2] if self._pair is not None else "last"
        self._recompute_or_revert("compare_pair", list(change["old"]), lambda: self.compare_with(pair[0] if len(pair) > 0 else None, pair[1] if len(pair) > 1 else None, align))

