"""A lens grid as an SVG figure, written without a browser (``LensResult.to_svg``,
``LensWidget.save_figure``): one ``<rect class="cell">`` per (site, position) in the colour the
widget gives it, the top-1 token in the cell, the next-token mark, layer and token labels, the
metric's legend and the mark's key. ``js/src/figure.ts`` writes the same figure in the page (its
SVG and PNG buttons); a browser test checks the two agree cell by cell.

Two steps: :func:`metric_grid` (the values and colour scale of a metric, as the front end's
``metricView``), then :func:`grid_svg` (the drawing). Every string reaches the SVG escaped, and
characters that XML cannot hold become U+FFFD.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .metrics import GRID_METRIC_LABELS, GRID_METRICS, TRACKED_METRICS
from .scales import N_COLORS, NEXT_MARK_COLOR, Scale, diverging, log_prob_scale, rank_scale, sequential
from .tokens import display_token

if TYPE_CHECKING:
    from .result import LensResult

__all__ = ["MetricGrid", "metric_grid", "grid_svg", "xml_text", "FIGURE"]

#: Geometry of the figure (pixels), the same in ``js/src/figure.ts``.
FIGURE = {
    "pad": 8,
    "title_h": 22,
    "head_w": 64,
    "head_h": 84,
    "cell_w": 56,
    "cell_h": 20,
    "legend_h": 44,
    "right": 72,
    "min_w": 600,
    "cell_chars": 8,
    "label_chars": 18,
    "bar_w": 160,
}
#: Fill of a cell without a value, and of a cell whose activation was not finite.
NO_VALUE_FILL = "#eeeeee"
NONFINITE_FILL = "#999999"
FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif"
#: The key of the next-token mark (``js/src/legend.ts`` ``NEXT_MARK_TEXT``).
NEXT_MARK_TEXT = "top-1 = next token"

_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(s: str) -> str:
    """``s`` safe inside an XML element or a double- or single-quoted attribute."""
    s = _NOT_XML.sub("\ufffd", str(s))
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&#39;")


def _display(r: "LensResult", token_id: int) -> str:
    """A token's display form as the page shows it: ``""`` for none (-1), ``#id`` when the
    result lacks its text."""
    if token_id < 0:
        return ""
    text = r.token_strings.get(int(token_id))
    return f"#{token_id}" if text is None else display_token(text)


def fit_chars(s: str, n: int) -> str:
    """``s`` cut to at most ``n`` characters (code points), the last an ellipsis when cut."""
    chars = list(s)
    return s if len(chars) <= n else "".join(chars[: n - 1]) + "…"


@dataclass
class MetricGrid:
    """What one prompt's grid shows: ``values[S, P]`` (float32, the front end's numbers), their
    colour ``scale``, the legend ``label`` and a ``note`` when the metric cannot be shown."""

    metric: str
    values: np.ndarray
    scale: Scale
    label: str
    note: str = ""


def _max_finite(v: np.ndarray, skip: np.ndarray | None = None) -> float:
    ok = (v != np.inf) & ~np.isnan(v) if skip is None else (v != np.inf) & ~np.isnan(v) & ~skip
    return float(v[ok].max()) if ok.any() else 1.0


def _min_finite(v: np.ndarray, skip: np.ndarray) -> float:
    ok = np.isfinite(v) & ~skip
    return float(v[ok].min()) if ok.any() else math.nan


def _tracked(r: "LensResult", b: int, cols: np.ndarray, metric: str, token: int, bad: np.ndarray) -> MetricGrid:
    """One tracked token's probability, log-probability or rank at every cell."""
    S, P = len(r.sites), len(cols)
    M = len(r.tracked_ids)
    ids = r.tracked_ids.tolist()
    j = -1 if M == 0 else 0 if token < 0 else ids.index(token) if token in ids else -1
    empty = {"tracked_rank": rank_scale(2), "tracked_logprob": log_prob_scale(math.nan), "tracked_prob": sequential(0, 1)}[metric]
    if j < 0:
        note = "no tracked tokens" if M == 0 else f"token id {token} is not tracked"
        return MetricGrid(metric, np.full((S, P), np.nan, np.float32), empty, GRID_METRIC_LABELS[metric], note)
    tok = _display(r, int(r.tracked_ids[j]))
    if metric == "tracked_rank":
        rank = r.tracked_rank[b][:, cols, j]
        v = np.where(rank > 0, rank, np.nan).astype(np.float32)
        return MetricGrid(metric, v, rank_scale(_max_finite(v, bad)), f"rank({tok})")
    p = r.tracked_prob[b][:, cols, j].astype(np.float32)
    if metric == "tracked_logprob":
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.log(p.astype(np.float64)).astype(np.float32)
        return MetricGrid(metric, v, log_prob_scale(_min_finite(v, bad)), f"log p({tok})")
    return MetricGrid(metric, p, sequential(0, 1), f"p({tok})")


def _logit_diff(r: "LensResult", b: int, cols: np.ndarray, diff_tokens: Sequence[int], bad: np.ndarray) -> MetricGrid:
    S, P = len(r.sites), len(cols)
    ids = r.tracked_ids.tolist()
    want = [int(diff_tokens[i]) if len(diff_tokens) > i else (ids[i] if len(ids) > i else -1) for i in (0, 1)]
    if len(ids) == 0 or want[0] not in ids or want[1] not in ids:
        return MetricGrid("logit_diff", np.full((S, P), np.nan, np.float32), diverging(1), GRID_METRIC_LABELS["logit_diff"], "logit diff needs two tracked tokens")
    a, c = ids.index(want[0]), ids.index(want[1])
    v = r.tracked_logit[b][:, cols, a].astype(np.float64) - r.tracked_logit[b][:, cols, c].astype(np.float64)
    ok = ~bad & np.isfinite(v)
    mx = float(np.abs(v[ok]).max()) if ok.any() else 0.0
    label = f"logit({_display(r, want[0])}) − logit({_display(r, want[1])})"
    return MetricGrid("logit_diff", v.astype(np.float32), diverging(mx), label)


def metric_grid(result: "LensResult", metric: str = "top1_prob", prompt: int = 0, token: int | str | None = None,
                diff_tokens: Sequence[int | str] = ()) -> MetricGrid:
    """The values and colour scale of ``metric`` for prompt ``prompt`` of ``result``, as the
    widget colours its grid. ``token``: the tracked token of a ``tracked_*`` metric (default:
    the first tracked); ``diff_tokens``: the two of ``logit_diff`` (default: the first two)."""
    if metric not in GRID_METRICS:
        raise ValueError(f"metric must be one of {', '.join(GRID_METRICS)}, got {metric!r}")
    r = result
    if not 0 <= int(prompt) < r.n_prompts:
        raise ValueError(f"prompt must be in 0..{r.n_prompts - 1}, got {prompt}")
    b = int(prompt)
    cols = r.columns(b)
    bad = np.asarray(r.nonfinite[b][:, cols], dtype=bool)
    tid = -1 if token is None else _token_id(r, token)
    if metric in TRACKED_METRICS:
        return _tracked(r, b, cols, metric, tid, bad)
    if metric == "logit_diff":
        return _logit_diff(r, b, cols, [_token_id(r, t) for t in diff_tokens], bad)
    label = GRID_METRIC_LABELS[metric]
    if metric == "top1_prob":
        return MetricGrid(metric, r.topk_probs[b][:, cols, 0].astype(np.float32), sequential(0, 1), label)
    if metric == "next_prob":
        return MetricGrid(metric, r.next_prob[b][:, cols].astype(np.float32), sequential(0, 1), label)
    if metric == "next_rank":
        rank = r.next_rank[b][:, cols]
        v = np.where(rank > 0, rank, np.nan).astype(np.float32)
        return MetricGrid(metric, v, rank_scale(_max_finite(v)), label)
    v = getattr(r, metric)[b][:, cols].astype(np.float32)  # entropy, kl
    return MetricGrid(metric, v, sequential(0, _max_finite(v, bad)), label)


def _token_id(r: "LensResult", token: int | str) -> int:
    """A tracked token given by id or by its exact string."""
    if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
        return int(token)
    if isinstance(token, str):
        hits = [int(t) for t in r.tracked_ids.tolist() if r.token_strings.get(int(t)) == token]
        if hits:
            return hits[0]
        raise ValueError(f"{token!r} is not a tracked token; tracked: "
                         f"{', '.join(repr(r.token_strings.get(int(t), '')) for t in r.tracked_ids.tolist()) or 'none'}")
    raise TypeError(f"a token is an id or a tracked token's string, got {type(token).__name__}")


def _gradient(scale: Scale) -> list[str]:
    """The legend bar's 9 colour stops, low to high (ranks: rank 1 on the right reversed, as the page)."""
    cols = scale.colors[::-1] if scale.kind == "log" else scale.colors
    return [cols[int(math.floor(i / 8 * (N_COLORS - 1) + 0.5))] for i in range(9)]


def grid_svg(result: "LensResult", grid: MetricGrid, prompt: int = 0, title: str | None = None) -> str:
    """The SVG figure of prompt ``prompt``'s grid coloured by ``grid`` (:func:`metric_grid`)."""
    r, b = result, int(prompt)
    cols = r.columns(b)
    S, P = len(r.sites), len(cols)
    F = FIGURE
    pad, cw, ch = F["pad"], F["cell_w"], F["cell_h"]
    gx, gy = pad + F["head_w"], pad + F["title_h"] + F["head_h"]
    W = max(gx + P * cw + F["right"], F["min_w"])
    H = gy + S * ch + F["legend_h"] + pad
    heading = title if title is not None else f"{r.model_label} · {r.lens_name}"  # the page's title: a local model by its name, never its path
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="{xml_text(FONT)}" font-size="11">',
        f"<title>{xml_text(heading)}</title>",
        f'<rect class="background" x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>',
        f'<text class="title" x="{pad}" y="{pad + 14}" font-size="13" font-weight="600" fill="#111111">{xml_text(heading)}</text>',
    ]
    out += _cells(r, b, cols, grid, gx, gy)
    out += _labels(r, b, cols, gx, gy)
    out += _legend(grid, gx, gy + S * ch + 16, pad)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _cells(r: "LensResult", b: int, cols: np.ndarray, grid: MetricGrid, gx: int, gy: int) -> list[str]:
    """One rect per cell (final layer on top), its top-1 token, and the next-token marks."""
    cw, ch = FIGURE["cell_w"], FIGURE["cell_h"]
    S = len(r.sites)
    colors, text = grid.scale.colors, grid.scale.text
    cells, words, marks = ['<g class="cells">'], ['<g class="cell-text" text-anchor="middle" dominant-baseline="central">'], ['<g class="next-marks">']
    for row in range(S):
        site = S - 1 - row
        for c, col in enumerate(cols.tolist()):
            x, y = gx + c * cw, gy + row * ch
            bad = bool(r.nonfinite[b, site, col])
            ci = -1 if bad else grid.scale.index(float(grid.values[site, c]))
            fill = NONFINITE_FILL if bad else NO_VALUE_FILL if ci < 0 else colors[ci]
            cells.append(f'<rect class="cell{" nonfinite" if bad else ""}" data-site="{site}" data-col="{c}" x="{x}" y="{y}" width="{cw - 1}" height="{ch - 1}" fill="{fill}"/>')
            if bad:
                continue
            top = int(r.topk_ids[b, site, col, 0])
            word = fit_chars(_display(r, top), FIGURE["cell_chars"])
            words.append(f'<text x="{x + cw // 2}" y="{y + ch // 2}" fill="{"#111111" if ci < 0 else text[ci]}">{xml_text(word)}</text>')
            nxt = int(r.next_ids[b, col])
            if nxt >= 0 and top == nxt:
                marks.append(f'<path d="M{x + cw - 8} {y}H{x + cw - 1}V{y + 7}Z" fill="{NEXT_MARK_COLOR}"/>')
    return cells + ["</g>"] + words + ["</g>"] + marks + ["</g>"]


def _labels(r: "LensResult", b: int, cols: np.ndarray, gx: int, gy: int) -> list[str]:
    """Layer labels left of the rows, token labels (slanted) above the columns."""
    cw, ch, n = FIGURE["cell_w"], FIGURE["cell_h"], FIGURE["label_chars"]
    S = len(r.sites)
    labels = r.site_labels
    out = ['<g class="row-labels" text-anchor="end" dominant-baseline="central" fill="#111111">']
    out += [f'<text x="{gx - 4}" y="{gy + row * ch + ch // 2}">{xml_text(fit_chars(labels[S - 1 - row], n))}</text>' for row in range(S)]
    out += ["</g>", '<g class="col-labels" fill="#111111">']
    for c, col in enumerate(cols.tolist()):
        pos = int(r.positions[b, col])
        tok = int(r.input_ids[b, pos]) if 0 <= pos < r.input_ids.shape[1] else -1
        word = fit_chars(_display(r, tok), n)
        out.append(f'<text transform="translate({gx + c * cw + cw // 2} {gy - 4}) rotate(-45)">{xml_text(word)}</text>')
    out.append("</g>")
    return out


def _legend(grid: MetricGrid, gx: int, y: int, pad: int) -> list[str]:
    """The metric's name, its colour bar with the low / high labels, and the mark's key."""
    bw = FIGURE["bar_w"]
    bx = gx + 100
    label = f"{grid.label} — {grid.note}" if grid.note else grid.label
    stops = "".join(f'<stop offset="{i * 12.5:g}%" stop-color="{c}"/>' for i, c in enumerate(_gradient(grid.scale)))
    mk = bx + bw + 100
    return [
        '<g class="legend" fill="#111111">',
        f'<defs><linearGradient id="lw-legend-gradient" x1="0" x2="1" y1="0" y2="0">{stops}</linearGradient></defs>',
        f'<text class="legend-title" x="{pad}" y="{y}" font-weight="600">{xml_text(label)}</text>',
        f'<text class="legend-lo" x="{bx - 4}" y="{y + 18}" text-anchor="end">{xml_text(grid.scale.ticks[0])}</text>',
        f'<rect class="legend-bar" x="{bx}" y="{y + 9}" width="{bw}" height="10" fill="url(#lw-legend-gradient)" stroke="#c8c8c8"/>',
        f'<text class="legend-hi" x="{bx + bw + 4}" y="{y + 18}">{xml_text(grid.scale.ticks[1])}</text>',
        f'<path class="legend-mark" d="M{mk} {y + 9}H{mk + 8}V{y + 17}Z" fill="{NEXT_MARK_COLOR}"/>',
        f'<text class="legend-mark-text" x="{mk + 12}" y="{y + 18}">{xml_text(NEXT_MARK_TEXT)}</text>',
        "</g>",
    ]
