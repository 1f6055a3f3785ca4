"""Helpers of the exported-page tests (a unique module name: test modules import it directly)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from browser_support import SCROLL_LEFT_JS, cell_center, grid_geometry, scroll_grid_to
from lens_widget.wire import result_to_wire


def widget_state(result: Any, **over: Any) -> dict[str, Any]:
    state = {
        "data": result_to_wire(result),
        "prompt": result.prompts[0],
        "metric": "top1_prob",
        "metric_token": -1,
        "diff_tokens": [int(i) for i in result.tracked_ids[:2]],
        "tracked": [int(i) for i in result.tracked_ids],
        "pinned": [],
        "selected": {},
        "transpose": False,
        "busy": False,
        "error": "",
        "height": 420,
    }
    state.update(over)
    return state


# the canvas of the widget's main grid; the grids beside it have their own (js/src/subgrid.ts)
MAIN_CANVAS = "canvas.lw-canvas"


def cell_xy(page, row: int, col: int, selector: str = MAIN_CANVAS) -> tuple[float, float]:
    """Page coordinates of the centre of grid cell (display row, display column) of the grid whose
    canvas is ``selector`` (the main grid by default); the column is scrolled into view."""
    return cell_center(page.locator(selector), row, col)


# -- the front end's colour scales (js/src/color.ts, js/src/metrics.ts), written again in Python --
VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"]
RDBU = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"]
N_COLORS = 256
LOGPROB_FLOOR = -20.0


def ramp(stops: list[str], n: int = N_COLORS) -> list[tuple[int, int, int]]:
    """color.ts ``ramp``: n colours linearly interpolated through the stops."""
    rgb = [tuple(int(h[i : i + 2], 16) for i in (1, 3, 5)) for h in stops]
    out = []
    for i in range(n):
        t = i / (n - 1) * (len(rgb) - 1)
        j = min(int(math.floor(t)), len(rgb) - 2)
        f = t - j
        a, b = rgb[j], rgb[j + 1]
        out.append(tuple(int(math.floor(a[q] + (b[q] - a[q]) * f + 0.5)) for q in range(3)))
    return out


PALETTES = {"seq": ramp(VIRIDIS), "div": ramp(RDBU)}


def _index(t: float) -> int:
    return 0 if t <= 0 else N_COLORS - 1 if t >= 1 else int(math.floor(t * (N_COLORS - 1) + 0.5))


def metric_colours(result: Any, metric: str, metric_token: int = -1, diff_tokens: Sequence[int] = ()) -> tuple[str, np.ndarray]:
    """(palette, ``[S, P]`` colour index, -1 = no value) the grid should draw for prompt 0 of
    ``result`` coloured by ``metric`` (metrics.ts ``metricView`` + the scale's ``index``)."""
    r = result
    cols = r.columns(0)
    bad = r.nonfinite[0][:, cols]

    def finite_max(v: np.ndarray) -> float:
        ok = v[np.isfinite(v) & ~bad]
        return float(ok.max()) if ok.size else 1.0

    if metric == "logit_diff":
        a = r.tracked_index(diff_tokens[0] if diff_tokens else r.tracked_ids[0])
        b = r.tracked_index(diff_tokens[1] if len(diff_tokens) > 1 else r.tracked_ids[1])
        v = (r.tracked_logit[0][:, cols, a].astype(np.float32) - r.tracked_logit[0][:, cols, b]).astype(float)
        m = finite_max(np.abs(v))
        m = m if m > 0 else 1.0
        return "div", np.vectorize(lambda x: -1 if x != x else _index((x + m) / (2 * m)))(v)
    if metric in ("next_rank", "tracked_rank"):
        rank = r.next_rank[0][:, cols] if metric == "next_rank" else r.tracked_rank[0][:, cols, r.tracked_index(metric_token) if metric_token >= 0 else 0]
        v = np.where(rank > 0, rank, np.nan).astype(float)
        top = max(finite_max(v), 2.0)
        return "seq", np.vectorize(lambda x: -1 if not x >= 1 else _index(1 - math.log(max(1.0, x)) / math.log(top)))(v)
    if metric == "tracked_logprob":
        # log p on [lo, 0]: lo = the lowest finite log p of the cells with data, at least LOGPROB_FLOOR
        p = r.tracked_prob[0][:, cols, r.tracked_index(metric_token) if metric_token >= 0 else 0]
        with np.errstate(divide="ignore"):
            v = np.log(p.astype(np.float64)).astype(np.float32).astype(float)
        ok = v[np.isfinite(v) & ~bad]
        lo = min(max(float(ok.min()), LOGPROB_FLOOR), -1e-6) if ok.size else LOGPROB_FLOOR
        return "seq", np.vectorize(lambda x: -1 if x != x else _index((x - lo) / -lo))(v)
    lo, hi = 0.0, 1.0
    if metric == "top1_prob":
        v = r.topk_probs[0][:, cols, 0]
    elif metric == "next_prob":
        v = r.next_prob[0][:, cols]
    elif metric == "tracked_prob":
        v = r.tracked_prob[0][:, cols, r.tracked_index(metric_token) if metric_token >= 0 else 0]
    elif metric in ("entropy", "kl"):
        v = getattr(r, metric)[0][:, cols]
        hi = finite_max(v.astype(float))
    else:
        raise ValueError(metric)
    span = hi - lo if hi > lo else 1.0
    return "seq", np.vectorize(lambda x: -1 if x != x else _index((x - lo) / span))(v.astype(float))


CANVAS_PIXELS_JS = """(c, cells) => {
  const s = c.width / c.getBoundingClientRect().width;
  const g = c.getContext('2d');
  return cells.map(([x, y]) => Array.from(g.getImageData(Math.round(x * s), Math.round(y * s), 1, 1).data.slice(0, 3)));
}"""


def canvas_pixels(canvas, xy: Sequence[tuple[float, float]]) -> list[list[int]]:
    """The RGB of the canvas (a Playwright locator) at each (x, y) in CSS pixels from its corner."""
    return canvas.evaluate(CANVAS_PIXELS_JS, [list(p) for p in xy])


def grid_pixels(page, n_rows: int, n_cols: int, selector: str = MAIN_CANVAS) -> dict[tuple[int, int], tuple[int, int, int]]:
    """The fill colour of each (display row, col) of the untransposed grid whose canvas is
    ``selector`` (the main grid by default), sampled in the cell's lower-left corner (clear
    of the top-1 text and the next-token mark); the grid is scrolled back to its start after."""
    canvas = page.locator(selector)
    g = grid_geometry(canvas)
    view_w = canvas.bounding_box()["width"] - g["headW"]  # the columns' part of the canvas
    out: dict[tuple[int, int], tuple[int, int, int]] = {}
    col = 0
    while col < n_cols:  # a screenful of columns at a time (columns are as wide as their text)
        shift = g["colX"][col] if g["headW"] + g["colX"][n_cols] > canvas.bounding_box()["width"] else 0
        scroll_grid_to(canvas, shift)
        shift = canvas.evaluate(SCROLL_LEFT_JS)
        cols = [c for c in range(col, n_cols) if g["colX"][c + 1] - shift <= view_w] or [col]
        cells = [(row, c) for row in range(n_rows) for c in cols]
        xy = [(g["headW"] + g["colX"][c] - shift + 2, g["headH"] + row * g["rowH"] + g["rowH"] - 3) for row, c in cells]
        out.update({cell: tuple(px) for cell, px in zip(cells, canvas_pixels(canvas, xy))})
        col = cols[-1] + 1
    if n_cols and g["headW"] + g["colX"][n_cols] > canvas.bounding_box()["width"]:
        scroll_grid_to(canvas, 0)
    return out


def nearest(palette: str, rgb: Sequence[int]) -> tuple[int, float]:
    """(index, distance) of the palette colour nearest to ``rgb``."""
    d = [math.dist(rgb, c) for c in PALETTES[palette]]
    i = int(np.argmin(d))
    return i, d[i]


def assert_grid_colours(page, result: Any, metric: str, metric_token: int = -1, diff_tokens: Sequence[int] = ()) -> int:
    """Every cell's colour on the page is Python's value on the front end's scale (±1 of 256
    steps, for rounding); cells without a value are not a palette colour. Returns the cells checked."""
    palette, want = metric_colours(result, metric, metric_token, diff_tokens)
    S, P = want.shape
    px = grid_pixels(page, S, P)
    checked = 0
    for (row, col), rgb in px.items():
        site = S - 1 - row  # the final layer is the top row
        if result.nonfinite[0, site, col]:
            continue
        got, dist = nearest(palette, rgb)
        if want[site, col] < 0:
            assert dist > 3, f"{metric}: cell ({site}, {col}) has no value but is drawn {rgb} (palette index {got})"
            continue
        assert dist <= 3 and abs(got - want[site, col]) <= 1, (
            f"{metric}: cell (site {site}, col {col}) is {rgb} = palette index {got} (distance {dist:.1f}), "
            f"Python's value is index {want[site, col]}"
        )
        checked += 1
    return checked


def stand_in_kernel(setup: str, on_send: str, kernel: bool = False) -> str:
    """A page init script that stands in for the kernel: the widget's model (``window.__lensModel``,
    set by the page) has its ``msg:custom`` listeners collected in ``handlers`` and every request
    recorded in ``window.__sent``; ``setup`` (JS statements, run first; ``handlers`` is in scope)
    and ``on_send`` (run for each request ``msg``) say how it answers. ``kernel``: the model says a
    kernel is there (``_kernel``), so nothing is disabled as on an exported page."""
    flag = 'const get = m.get;\n      m.get = (k) => (k === "_kernel" ? true : get(k));' if kernel else ""
    return f"""
(() => {{
  window.__sent = [];
  let model = null;
  const handlers = [];
  {setup}
  Object.defineProperty(window, "__lensModel", {{
    configurable: true,
    get: () => model,
    set: (m) => {{
      model = m;
      {flag}
      const on = m.on;
      m.on = (name, cb) => {{ if (name === "msg:custom") handlers.push(cb); return on(name, cb); }};
      const off = m.off;
      m.off = (name, cb) => {{ const i = handlers.indexOf(cb); if (i >= 0) handlers.splice(i, 1); return off(name, cb); }};
      m.send = (msg) => {{
        window.__sent.push(JSON.parse(JSON.stringify(msg)));
        {on_send}
      }};
    }},
  }});
}})();
"""
