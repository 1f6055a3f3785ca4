"""The traits that size the grid: height, compact (colour-only) cells, zoom, fit-to-width and the
range of columns shown. The front end (js/src/layout.ts, js/src/viewbar.ts) reads them and its view
controls write them; an exported page keeps them."""

from __future__ import annotations

import traitlets as t

__all__ = ["GridViewTraits", "ZOOM_MIN", "ZOOM_MAX"]

#: Smallest and largest zoom (js/src/layout.ts spells the same two numbers).
ZOOM_MIN = 0.5
ZOOM_MAX = 3.0


class GridViewTraits(t.HasTraits):
    """How big the grid is drawn. Set them as keywords (``LensWidget(model, text, compact=True)``)
    or later (``w.zoom = 1.5``); the toolbar's "view" menu sets them too."""

    #: Pixel height of the grid's box: ``0`` (default) is as high as its rows (they shrink from
    #: 20 toward 14 px to fit about 720 px; then every row shows and the box never scrolls
    #: inside); ``> 0``: a box of at most that many pixels that scrolls.
    height: t.Int[int, int] = t.Int(0).tag(sync=True)
    #: ``True``: colour-only cells (narrow columns, no text; the tooltip still names each cell).
    compact: t.Bool[bool, bool | int] = t.Bool(False).tag(sync=True)
    #: Cell size factor, ``ZOOM_MIN``..``ZOOM_MAX``: rows, columns and text scale together.
    zoom: t.Float[float, float | int] = t.Float(1.0).tag(sync=True)
    #: ``True``: columns shrink so that the grid fits the widget's width (no horizontal scrolling).
    fit_width: t.Bool[bool, bool | int] = t.Bool(False).tag(sync=True)
    #: Columns shown, ``[first, last]`` inclusive (the grid's column indices, as in
    #: ``selected["col"]``; negative counts from the end: ``[-8, -1]`` is the last 8, and follows
    #: a generation); ``[]`` (default): every column. Out-of-range ends are clamped.
    col_range: t.List[list[int]] = t.List(t.Int()).tag(sync=True)

    @t.validate("height")
    def _valid_height(self, proposal: dict) -> int:
        if proposal["value"] < 0:
            raise t.TraitError(f"height must be 0 (as high as the rows) or a number of pixels > 0, got {proposal['value']!r}")
        return proposal["value"]

    @t.validate("zoom")
    def _valid_zoom(self, proposal: dict) -> float:
        z = float(proposal["value"])
        if not ZOOM_MIN <= z <= ZOOM_MAX:
            raise t.TraitError(f"zoom must be in {ZOOM_MIN}..{ZOOM_MAX}, got {proposal['value']!r}")
        return z

    @t.validate("col_range")
    def _valid_col_range(self, proposal: dict) -> list[int]:
        r = list(proposal["value"])
        if len(r) not in (0, 2):
            raise t.TraitError(f"col_range must be [] (every column) or [first, last], got {r!r}")
        if len(r) == 2 and (r[0] < 0) == (r[1] < 0) and r[0] > r[1]:
            raise t.TraitError(f"col_range [first, last] needs first <= last, got {r!r}")
        return r
