"""Bokeh companion plots for a :class:`~lens_widget.result.LensResult`.

Every function returns a bokeh figure with a HoverTool; every value comes from the result's exact
arrays. Nothing loads from a CDN: use :func:`output_notebook_inline`, :func:`show` and :func:`save`
(all ``bokeh.resources.INLINE``) instead of bokeh's own defaults.

Token strings are untrusted. They reach the page as data-source values (escaped by the hover's
``@field`` templates, drawn as canvas text by glyphs) or as :class:`~bokeh.models.PlainText`
(so a token such as ``$$x$$`` is never parsed as TeX); no template uses ``{safe}``.
"""

from __future__ import annotations

import itertools
import tempfile
import webbrowser
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bokeh.embed import file_html
from bokeh.io import output_notebook
from bokeh.io.state import curstate
from bokeh.io import show as _bokeh_show
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    FixedTicker,
    HoverTool,
    LinearAxis,
    LinearColorMapper,
    LogColorMapper,
    PlainText,
    Range1d,
    Span,
)
from bokeh.palettes import RdBu11, Category10_10, Inferno256, Viridis256
from bokeh.plotting import figure
from bokeh.resources import INLINE

from .compare import Comparison
from .metrics import COMPARE_METRICS, DELTA_METRICS, RESULT_METRICS, TRAJECTORY_METRICS
from .result import LensResult
from .sites import site_label
from .tokens import TokenLookupError, display_token

__all__ = [
    "heatmap",
    "trajectory",
    "logit_diff",
    "lens_grid",
    "kl_by_layer",
    "lens_quality_plot",
    "generation",
    "compare_grid",
    "js_by_layer",
    "attribution",
    "show",
    "save",
    "to_html",
    "output_notebook_inline",
]

_METRIC_TITLES = {
    "prob": "probability",
    "logit": "logit",
    "rank": "rank",
    "top1_prob": "top-1 probability",
    "next_prob": "next-token probability",
    "next_rank": "next-token rank",
    "entropy": "entropy (nats)",
    "kl": "KL(final ‖ layer) (nats)",
}
_TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


# -- output without a CDN -----------------------------------------------------------------------
def output_notebook_inline() -> None:
    """Load BokehJS into the notebook from the installed package (no CDN, no banner)."""
    output_notebook(resources=INLINE, hide_banner=True)


def to_html(fig: Any, title: str = "lens_widget plot") -> str:
    """A self-contained HTML page (BokehJS inlined) showing ``fig``."""
    return file_html(fig, INLINE, title)


def save(fig: Any, path: str | Path, title: str = "lens_widget plot") -> Path:
    """Write ``fig`` as a self-contained HTML file that opens offline; returns the path."""
    path = Path(path)
    path.write_text(to_html(fig, title), encoding="utf-8")
    return path


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def show(fig: Any) -> Path | None:
    """Show ``fig`` inline in a notebook, else in a browser via a self-contained temp file."""
    state = curstate()
    if not state.notebook and _in_kernel():
        output_notebook_inline()
    if state.notebook:
        _bokeh_show(fig)
        return None
    with tempfile.NamedTemporaryFile(suffix=".html", prefix="lens_widget_", delete=False) as f:
        path = save(fig, f.name)
    webbrowser.open(path.as_uri())
    return path


# -- shared helpers -----------------------------------------------------------------------------
def _figure(
    title: str,
    tooltips: list[tuple[str, str]],
    *,
    width: int,
    height: int,
    x_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    x_name: str = "",
    y_name: str = "",
    y_axis_type: str = "linear",
    cells: bool = False,
) -> figure:
    """A figure with tools, a hover (``@value`` printf-formatted) and integer axes named by labels.

    ``width`` x ``height`` is the data frame (axes, legend and colour bar add to it), so long tick
    labels cannot squeeze the plot. ``cells=True`` fits the ranges to unit cells on integer ticks.
    """
    fig = figure(
        frame_width=int(width),
        frame_height=int(height),
        tools=_TOOLS,
        toolbar_location="above",
        y_axis_type=y_axis_type,
    )
    fig.title.text = PlainText(text=title)
    fig.add_tools(HoverTool(tooltips=tooltips, formatters={"@value": "printf"}))
    for axis, labels, name in ((fig.xaxis[0], x_labels, x_name), (fig.yaxis[0], y_labels, y_name)):
        axis.axis_label = PlainText(text=name)
        if labels is not None:
            axis.ticker = FixedTicker(ticks=list(range(len(labels))))
            axis.major_label_overrides = {i: PlainText(text=_short(s)) for i, s in enumerate(labels)}
    if cells:
        fig.x_range = Range1d(-0.5, len(x_labels or [0]) - 0.5)
        fig.y_range = Range1d(-0.5, len(y_labels or [0]) - 0.5)
        fig.grid.visible = False
        fig.xaxis.major_label_orientation = 0.9
    return fig


def _short(text: str, n: int = 16) -> str:
    """``text`` cut to ``n`` characters with an ellipsis (tick labels and cells; hovers show all)."""
    return text if len(text) <= n else text[: n - 1] + "…"


def _check_metric(metric: str, allowed: Sequence[str]) -> None:
    if metric not in allowed:
        raise ValueError(f"metric must be one of {list(allowed)}, got {metric!r}")


def _as_list(x: Any) -> list[Any]:
    if isinstance(x, (str, bytes)) or not isinstance(x, (Sequence, np.ndarray)):
        return [x]
    return list(x)


def _to_numpy(x: Any) -> np.ndarray:
    """numpy view of a numpy array, list, or torch tensor (any dtype, any device)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _token_id(result: LensResult, token: int | str) -> int:
    """Id of a tracked token given by id or by its exact (or display) string."""
    if isinstance(token, str):
        hits = [
            int(i)
            for i in result.tracked_ids.tolist()
            if token in (result.token_strings.get(int(i)), result.display(int(i)))
        ]
        if len(hits) != 1:
            what = "no tracked token" if not hits else f"several tracked tokens {hits}"
            raise TokenLookupError(
                f"{token!r} matches {what}; pass a token id. Tracked ids: {result.tracked_ids.tolist()}. "
                "To add a token, pass it in `track=` when computing the lens."
            )
        return hits[0]
    tid = int(token)
    result.tracked_index(tid)  # raises a TokenLookupError that names `track=`
    return tid


def _labels(ids: Sequence[int], name: Any) -> list[str]:
    """Display strings of ``ids``; strings that two ids share get the id appended."""
    shown = [name(i) for i in ids]
    return [f"{s} #{i}" if shown.count(s) > 1 else s for s, i in zip(shown, ids)]


def _mapper(metric: str, values: np.ndarray) -> LinearColorMapper | LogColorMapper:
    """Colour scale: grid probabilities 0..1, heatmap probabilities 0..max (as the tutorial's
    imshow), ranks on a log scale (rank 1 brightest), entropy / KL 0..max, logits min..max."""
    finite = values[np.isfinite(values)]
    hi = float(finite.max()) if finite.size else 1.0
    lo = float(finite.min()) if finite.size else 0.0
    if metric.endswith("rank"):
        return LogColorMapper(palette=Viridis256[::-1], low=1, high=max(hi, 2.0), nan_color="#d9d9d9")
    if metric.endswith("prob"):
        high = max(hi, 1e-12) if metric == "prob" else 1.0
        return LinearColorMapper(palette=Viridis256, low=0.0, high=high, nan_color="#d9d9d9")
    if metric in ("entropy", "kl"):
        return LinearColorMapper(palette=Inferno256[::-1], low=0.0, high=max(hi, 1e-6), nan_color="#d9d9d9")
    return LinearColorMapper(palette=Viridis256, low=lo, high=max(hi, lo + 1e-6), nan_color="#d9d9d9")


def _text_colors(values: np.ndarray, mapper: LinearColorMapper | LogColorMapper) -> list[str]:
    """Black or white, whichever reads better on each cell's colour."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = float(mapper.low), float(mapper.high)
    with np.errstate(divide="ignore", invalid="ignore"):
        if isinstance(mapper, LogColorMapper):
            t = (np.log(v) - np.log(lo)) / (np.log(hi) - np.log(lo))
        else:
            t = (v - lo) / (hi - lo)
    pal = mapper.palette
    rgb = np.array([[int(c[k : k + 2], 16) for k in (1, 3, 5)] for c in pal]) / 255.0
    light = rgb @ np.array([0.299, 0.587, 0.114]) > 0.5
    idx = np.clip(np.nan_to_num(t, nan=0.0) * (len(pal) - 1), 0, len(pal) - 1).astype(int)
    return ["black" if (not np.isfinite(x)) or light[i] else "white" for x, i in zip(t, idx)]


def _legend_outside(fig: figure) -> None:
    """Move the legend (if any) to the right of the plot; click an entry to hide its line."""
    if fig.legend:
        legend = fig.legend[0]
        legend.click_policy = "hide"
        fig.center.remove(legend)
        fig.add_layout(legend, "right")


def _colorbar(fig: figure, mapper: LinearColorMapper | LogColorMapper, metric: str) -> None:
    fig.add_layout(ColorBar(color_mapper=mapper, title=_METRIC_TITLES.get(metric, metric), width=12), "right")


# -- plots --------------------------------------------------------------------------------------
def heatmap(
    result: LensResult | Mapping[Any, Any],
    tokens: Sequence[int | str] | None = None,
    position: int = -1,
    prompt: int = 0,
    metric: str = "prob",
    k: int = 10,
    tokenizer: Any = None,
) -> figure:
    """Probability / logit / rank of chosen tokens at every layer, at one position (tutorial §7).

    Rows are sites (final at the top), columns tokens. With a :class:`LensResult` the tokens must
    be tracked (ids, or exact token strings); ``tokens=None`` takes the final layer's top-``k``,
    which must all be tracked. ``result`` may instead be the tutorial's ``{layer: [batch, pos,
    vocab]}`` dict (numpy or torch); its values are plotted as given (``metric`` names them:
    ``"prob"`` or ``"logit"``), ``"rank"`` counts strictly larger entries, any token id works and
    ``tokenizer`` (optional) names the columns.
    """
    _check_metric(metric, TRAJECTORY_METRICS)
    if isinstance(result, LensResult):
        col = result.position_index(position, prompt)
        if tokens is None:
            ids = [int(i) for i in result.topk_ids[prompt, -1, col, : min(k, result.k)]]
            missing = [i for i in ids if i not in set(result.tracked_ids.tolist())]
            if missing:
                raise TokenLookupError(
                    f"the final layer's top-{len(ids)} at position {position} includes untracked ids "
                    f"{missing}; pass `tokens=` from the tracked ids {result.tracked_ids.tolist()}, or "
                    "compute the lens with those ids in `track=`."
                )
        else:
            ids = [_token_id(result, t) for t in _as_list(tokens)]
        values = np.stack([result.tracked(i, metric)[prompt, :, col] for i in ids], axis=1)
        rows, cols = result.site_labels, _labels(ids, result.display)
        where = f"position {int(result.positions[prompt, col])}"
    else:
        layers = list(result)
        # index before converting: a [batch, pos, vocab] tensor may be large, or on a GPU
        arrays = [result[key] for key in layers]
        vecs = [_to_numpy((np.asarray(a) if isinstance(a, list) else a)[prompt, position]) for a in arrays]
        if tokens is None:
            ids = [int(i) for i in np.argsort(-vecs[-1], kind="stable")[:k]]
        else:
            ids = [int(t) for t in _as_list(tokens)]
        if metric == "rank":
            values = np.array([[1.0 + (v > v[i]).sum() for i in ids] for v in vecs])
        else:
            values = np.array([v[ids] for v in vecs])
        rows = [site_label(key) if isinstance(key, str) else str(key) for key in layers]
        named = tokenizer is not None
        cols = _labels(ids, lambda i: display_token(tokenizer.decode([i])) if named else f"id {i}")
        where = f"position {position}"
    n_rows, n_cols = values.shape
    x, y = np.meshgrid(np.arange(n_cols), np.arange(n_rows))
    source = ColumnDataSource(
        {
            "x": x.ravel(),
            "y": y.ravel(),
            "token": [cols[j] for j in x.ravel()],
            "token_id": [ids[j] for j in x.ravel()],
            "layer": [rows[i] for i in y.ravel()],
            "value": values.ravel().astype(np.float64),
        }
    )
    fig = _figure(
        f"{_METRIC_TITLES[metric]} by layer at {where}",
        [("token", "@token"), ("id", "@token_id"), ("layer", "@layer"), (metric, "@value{%.4g}")],
        width=max(240, 56 * n_cols),
        height=max(120, 22 * n_rows),
        x_labels=cols,
        y_labels=rows,
        x_name="token",
        y_name="layer",
        cells=True,
    )
    mapper = _mapper(metric, values)
    fill = {"field": "value", "transform": mapper}
    fig.rect("x", "y", 1, 1, source=source, fill_color=fill, line_color=None)
    _colorbar(fig, mapper, metric)
    return fig


def trajectory(
    result: LensResult,
    tokens: int | str | Sequence[int | str],
    positions: int | Sequence[int] = -1,
    prompt: int = 0,
    metric: str = "prob",
) -> figure:
    """Lines of tracked tokens' probability / logit / rank across layers, at one or more positions."""
    _check_metric(metric, TRAJECTORY_METRICS)
    ids = [_token_id(result, t) for t in _as_list(tokens)]
    cols = [result.position_index(p, prompt) for p in _as_list(positions)]
    names = _labels(ids, result.display)
    sites = result.site_labels
    fig = _figure(
        f"{_METRIC_TITLES[metric]} of tracked tokens by layer",
        [("token", "@token"), ("position", "@position"), ("layer", "@layer"), (metric, "@value{%.4g}")],
        width=640,
        height=320,
        x_labels=sites,
        x_name="layer",
        y_name=_METRIC_TITLES[metric],
        y_axis_type="log" if metric == "rank" else "linear",
    )
    points = []
    for n, ((tid, name), col) in enumerate(itertools.product(zip(ids, names), cols)):
        pos = int(result.positions[prompt, col])
        label = f"{name} @ {pos}" if len(cols) > 1 else name
        source = ColumnDataSource(
            {
                "x": np.arange(result.n_sites),
                "value": result.tracked(tid, metric)[prompt, :, col].astype(np.float64),
                "layer": sites,
                "token": [name] * result.n_sites,
                "token_id": [tid] * result.n_sites,
                "position": [pos] * result.n_sites,
            }
        )
        color = Category10_10[n % 10]
        fig.line("x", "value", source=source, color=color, line_width=2, legend_label=label)
        points.append(fig.scatter("x", "value", source=source, color=color, size=6, legend_label=label))
    fig.select_one(HoverTool).renderers = points
    _legend_outside(fig)
    if metric == "rank":
        fig.y_range.flipped = True  # rank 1 at the top
    return fig


def logit_diff(
    result_or_values: LensResult | Sequence[float] | np.ndarray,
    token_a: int | str | None = None,
    token_b: int | str | None = None,
    position: int = -1,
    labels: Sequence[str] | None = None,
    line_labels: Sequence[str] | None = None,
) -> figure:
    """logit(a) - logit(b) by layer: one line per prompt of a result (tutorial §6), zero line.

    Also takes plain per-layer values (a list, ``[layers]`` or ``[lines, layers]`` array) with
    ``labels=`` naming the layers; ``token_a`` / ``token_b`` then only name the title.
    ``line_labels=`` names the lines (default: the prompts, or "line i").
    """
    if isinstance(result_or_values, LensResult):
        result = result_or_values
        if token_a is None or token_b is None:
            raise ValueError("logit_diff of a LensResult needs token_a and token_b")
        a, b = _token_id(result, token_a), _token_id(result, token_b)
        diff = result.logit_diff(a, b)
        lines = [
            (f"{i}: {_short(text, 40)}", diff[i, :, result.position_index(position, i)])
            for i, text in enumerate(list(result.prompts) + [""] * (result.n_prompts - len(result.prompts)))
        ]
        layer_labels = result.site_labels
        name_a, name_b = result.display(a), result.display(b)
    else:
        arr = _to_numpy(result_or_values)
        arr = arr[None] if arr.ndim == 1 else arr
        if arr.ndim != 2:
            raise ValueError(f"values must be [layers] or [lines, layers], got shape {arr.shape}")
        layer_labels = [str(x) for x in (range(arr.shape[1]) if labels is None else labels)]
        if len(layer_labels) != arr.shape[1]:
            raise ValueError(f"{len(layer_labels)} labels for {arr.shape[1]} layers")
        lines = [(f"line {i}" if len(arr) > 1 else "", row) for i, row in enumerate(arr)]
        name_a, name_b = (d if t is None else display_token(str(t)) for t, d in ((token_a, "a"), (token_b, "b")))
    if line_labels is not None:
        if len(line_labels) != len(lines):
            raise ValueError(f"{len(line_labels)} line_labels for {len(lines)} lines")
        lines = [(str(name), values) for name, (_, values) in zip(line_labels, lines)]
    fig = _figure(
        f"logit difference: {name_a} − {name_b}",
        [("prompt", "@prompt"), ("layer", "@layer"), ("logit diff", "@value{%.4f}")],
        width=640,
        height=320,
        x_labels=layer_labels,
        x_name="layer",
        y_name=f"logit({name_a}) − logit({name_b})",
    )
    points = []
    for n, (name, values) in enumerate(lines):
        source = ColumnDataSource(
            {
                "x": np.arange(len(values)),
                "value": np.asarray(values, dtype=np.float64),
                "layer": layer_labels,
                "prompt": [name] * len(values),
            }
        )
        color = Category10_10[n % 10]
        kw = {"legend_label": name} if name else {}
        fig.line("x", "value", source=source, color=color, line_width=2, **kw)
        points.append(fig.scatter("x", "value", source=source, color=color, size=6, **kw))
    fig.add_layout(Span(location=0, dimension="width", line_color="#c0392b", line_dash="dashed"))
    fig.select_one(HoverTool).renderers = points
    _legend_outside(fig)
    return fig


def _grid_columns(result: LensResult, prompt: int, positions: slice | Sequence[int] | None) -> np.ndarray:
    """Lens columns for token positions: all computed ones, a slice of the prompt's tokens, or a list."""
    valid = np.nonzero(result.positions[prompt] >= 0)[0]
    if positions is None:
        return valid
    if isinstance(positions, slice):
        wanted = set(np.arange(int(result.lengths[prompt]))[positions].tolist())
        cols = np.array([c for c in valid if int(result.positions[prompt, c]) in wanted], dtype=np.int64)
        if cols.size == 0:
            have = result.positions[prompt, valid].tolist()
            raise IndexError(f"no computed position in {positions}; have {have}")
        return cols
    return np.array([result.position_index(p, prompt) for p in _as_list(positions)], dtype=np.int64)


def lens_grid(
    result: LensResult,
    metric: str = "top1_prob",
    prompt: int = 0,
    positions: slice | Sequence[int] | None = None,
    cell_width: int = 64,
    cell_height: int = 22,
) -> figure:
    """The classic logit-lens picture: layers x input tokens, the top-1 token written in each cell.

    Colour is ``metric`` (probabilities 0..1, next-token rank on a log scale, entropy and KL on a
    sequential scale); the top axis shows the actual next token. ``positions`` (a slice of the
    prompt's tokens, or a list of positions) limits the columns. Static: saved HTML needs no kernel.
    """
    _check_metric(metric, RESULT_METRICS)
    cols = _grid_columns(result, prompt, positions)
    S, C = result.n_sites, len(cols)
    pos = result.positions[prompt, cols]
    sites = result.site_labels
    inputs = [result.display(int(result.input_ids[prompt, p])) for p in pos]
    nxt_ids = result.next_ids[prompt, cols]
    nxt = [result.display(int(i)) if i >= 0 else "" for i in nxt_ids]

    def cells(a: np.ndarray) -> np.ndarray:  # [B, S, P, ...] -> flat over (site, column), site-major
        return a[prompt][:, cols].reshape(S * C, *a.shape[3:])

    top1_ids = cells(result.topk_ids)[:, 0]
    top1 = [result.display(int(i)) for i in top1_ids]
    rank = cells(result.next_rank).astype(np.float64)
    rank[rank <= 0] = np.nan  # 0 = no next token
    data = {
        "x": np.tile(np.arange(C), S),
        "y": np.repeat(np.arange(S), C),
        "layer": np.repeat(sites, C).tolist(),
        "position": np.tile(pos, S),
        "input": inputs * S,
        "top1": top1,
        "top1_id": top1_ids,
        "cell": [_short(t, 8) for t in top1],
        "top1_prob": cells(result.topk_probs)[:, 0].astype(np.float64),
        "next": nxt * S,
        "next_prob": cells(result.next_prob).astype(np.float64),
        "next_rank": rank,
        "entropy": cells(result.entropy).astype(np.float64),
        "kl": cells(result.kl).astype(np.float64),
        "nonfinite": np.where(cells(result.nonfinite), "yes", "no"),
    }
    data["value"] = data[metric]
    mapper = _mapper(metric, data["value"])
    data["text_color"] = _text_colors(data["value"], mapper)
    source = ColumnDataSource(data)
    fig = _figure(
        f"{result.lens_name}{' · ' + result.model_label if result.model_name else ''} · {_METRIC_TITLES[metric]}",
        [
            ("layer", "@layer"),
            ("input", "@input (position @position)"),
            ("top-1", "@top1"),
            ("top-1 prob", "@top1_prob{%.4g}"),
            ("next token", "@next"),
            ("next prob", "@next_prob{%.4g}"),
            ("next rank", "@next_rank"),
            ("entropy", "@entropy{%.3f} nats"),
            ("KL to final", "@kl{%.3f} nats"),
            ("non-finite", "@nonfinite"),
        ],
        width=max(240, cell_width * C),
        height=max(120, cell_height * S),
        x_labels=inputs,
        y_labels=sites,
        x_name="input token",
        y_name="layer",
        cells=True,
    )
    hover = fig.select_one(HoverTool)
    hover.formatters = {f"@{f}": "printf" for f in RESULT_METRICS if f != "next_rank"}  # the float columns
    fill = {"field": "value", "transform": mapper}
    rects = fig.rect("x", "y", 1, 1, source=source, fill_color=fill, line_color="white")
    fig.text("x", "y", text="cell", source=source, text_color="text_color", text_font_size="9px",
             text_align="center", text_baseline="middle")
    hover.renderers = [rects]
    above = LinearAxis(
        ticker=FixedTicker(ticks=list(range(C))),
        major_label_overrides={i: PlainText(text=_short(s)) for i, s in enumerate(nxt)},
        major_label_orientation=0.9,
        axis_label=PlainText(text="next token"),
    )
    fig.add_layout(above, "above")
    _colorbar(fig, mapper, metric)
    return fig


# -- lenses compared -------------------------------------------------------------------------------
def _kl_curve(value: Any, name: str) -> tuple[list[str], np.ndarray]:
    """(site labels, mean KL per site) of a LensResult, a held-out dict or a plain sequence."""
    if isinstance(value, LensResult):
        kl = np.asarray(value.kl, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            per_site = np.nanmean(np.moveaxis(kl, 1, 0).reshape(kl.shape[1], -1), axis=1)
        return list(value.site_labels), per_site
    if isinstance(value, Mapping) and "kl" in value and "sites" in value:
        curves = value["kl"]
        if name in curves:
            curve = curves[name]
        elif len(curves) == 1:
            curve = next(iter(curves.values()))
        else:
            raise ValueError(f"{name!r}: this held-out result has curves {', '.join(map(repr, curves))}; name one of them")
        return [site_label(s) for s in value["sites"]], _to_numpy(curve)
    if isinstance(value, Sequence) and not isinstance(value, str):
        arr = _to_numpy(value)
        return [str(i) for i in range(len(arr))], arr
    raise TypeError(f"{name!r}: expected a LensResult, a held_out_kl() result or a sequence of KL values, got {type(value).__name__}")


def kl_by_layer(results: Any, *, log: bool = False, title: str = "KL(final ‖ lens) by layer") -> figure:
    """Mean KL(final ‖ lens) by layer, one line per lens (the tuned-lens paper's figure).

    ``results`` is a :func:`~lens_widget.tuned_training.held_out_kl` result (one line per lens
    in it) or a mapping ``{"logit lens": a, "tuned lens": b}`` whose values are
    :class:`LensResult` s (mean over prompts and positions), ``held_out_kl`` results or
    sequences of per-layer values. ``log=True``: a log y axis (the last layer's 0 is left out).
    """
    if isinstance(results, Mapping) and "kl" in results and "sites" in results:
        results = {name: results for name in results["kl"]}
    if not isinstance(results, Mapping) or not results:
        raise ValueError("kl_by_layer needs {lens name: result, ...} or a held_out_kl() result")
    curves = {str(name): _kl_curve(value, str(name)) for name, value in results.items()}
    labels = max((c[0] for c in curves.values()), key=len)
    fig = _figure(
        title,
        [("lens", "@lens"), ("layer", "@layer"), ("KL (nats)", "@value{%.4g}")],
        width=640,
        height=320,
        x_labels=labels,
        x_name="layer",
        y_name="KL(final ‖ lens), nats",
        y_axis_type="log" if log else "linear",
    )
    lines = []
    for name, (sites, values) in curves.items():
        keep = np.isfinite(values) & ((values > 0) if log else True)
        lines.append((name, values, keep, sites, {"lens": name}))
    return _layer_lines(fig, lines)


def lens_quality_plot(quality: Mapping[str, Any], *, lenses: Sequence[str] | None = None,
                      title: str = "Lenses on held-out text") -> Any:
    """Per-layer quality of several lenses, as ``scripts/jlens_quality.py`` measures it (its JSON:
    ``{"sites": [...], "kl": {lens: [...]}, "top1": {lens: [...]}, "tokens": n}``): KL(final ‖
    lens) on a log axis above, top-1 agreement with the final layer below, one line per lens
    (``lenses``: which, default all). A bokeh ``column`` of the two figures, x axes linked."""
    from bokeh.layouts import column

    if not isinstance(quality, Mapping) or not all(k in quality for k in ("sites", "kl", "top1")):
        raise ValueError("lens_quality_plot needs a quality table: {'sites': [...], 'kl': {lens: [...]}, 'top1': {lens: [...]}}")
    names = list(quality["kl"]) if lenses is None else list(lenses)
    missing = [n for n in names if n not in quality["kl"] or n not in quality["top1"]]
    if missing:
        raise ValueError(f"lens_quality_plot: no curves for {', '.join(map(repr, missing))} (it has {', '.join(map(repr, quality['kl']))})")
    n_tok = quality.get("tokens")
    tail = f" ({n_tok} held-out tokens)" if n_tok else ""
    kl = {"sites": list(quality["sites"]), "kl": {n: list(quality["kl"][n]) for n in names}}
    top = kl_by_layer(kl, log=True, title=f"{title}: KL(final ‖ lens){tail}")
    labels = [site_label(s) for s in quality["sites"]]
    bottom = _figure(
        f"{title}: top-1 agreement with the final layer{tail}",
        [("lens", "@lens"), ("layer", "@layer"), ("top-1 agreement", "@value{%.3f}")],
        width=640, height=320, x_labels=labels, x_name="layer", y_name="top-1 agreement",
    )
    bottom.x_range = top.x_range
    lines = []
    for name in names:
        values = _to_numpy(quality["top1"][name]).astype(np.float64)
        lines.append((name, values, np.isfinite(values), labels, {"lens": name}))
    return column(top, _layer_lines(bottom, lines))


def _layer_lines(fig: figure, lines: list[tuple[str, np.ndarray, np.ndarray, Sequence[str], dict[str, str]]]) -> figure:
    """One line + markers per ``(legend, values per layer, which to keep, layer labels, extra
    hover columns)``, hover on the markers, the legend outside: kl_by_layer's and js_by_layer's plot."""
    points = []
    for n, (legend, values, keep, labels, extra) in enumerate(lines):
        x = np.arange(len(values))[keep]
        source = ColumnDataSource({"x": x, "value": values[keep], "layer": [labels[i] for i in x],
                                   **{key: [v] * int(keep.sum()) for key, v in extra.items()}})
        color = Category10_10[n % 10]
        fig.line("x", "value", source=source, color=color, line_width=2, legend_label=legend)
        points.append(fig.scatter("x", "value", source=source, color=color, size=6, legend_label=legend))
    fig.select_one(HoverTool).renderers = points
    _legend_outside(fig)
    return fig


def generation(
    result: LensResult,
    token: int | str,
    *,
    prompt: int = 0,
    layers: Sequence[int | str] | None = None,
    metric: str = "prob",
) -> figure:
    """A tracked token's probability (logit, rank) over the generation steps of
    :meth:`LogitLens.generate <lens_widget.engine.LogitLens.generate>`, one line per layer.

    Step ``i`` is the moment the model chose its ``i``-th new token: the lens column before it
    (the column whose next token it is), so the x axis is labelled with the tokens written.
    ``layers``: sites (indices, names or labels) to draw; default every site. Lines go from dark
    (embeddings) to light (final layer).
    """
    _check_metric(metric, TRAJECTORY_METRICS)
    if result.generated_from is None:
        raise ValueError("this result is not a generation: make it with LogitLens.generate(prompt, max_new_tokens)")
    tid = _token_id(result, token)
    start = int(result.generated_from[prompt])
    n = int(result.lengths[prompt])
    # the column that predicts token p is the one at position p - 1
    cols = [result.position_index(p - 1, prompt) for p in range(max(start, 1), n)]
    if not cols:
        raise ValueError("the generation wrote no tokens")
    written = [int(result.input_ids[prompt, p]) for p in range(max(start, 1), n)]
    steps = _labels(written, result.display)
    site_idx = list(range(result.n_sites)) if layers is None else [result.site_index(s) for s in _as_list(layers)]
    labels = result.site_labels
    name = result.display(tid)
    fig = _figure(
        f"{_METRIC_TITLES[metric]} of {name!s} over the generation, by layer",
        [("layer", "@layer"), ("step", "@step"), ("written", "@written"), (metric, "@value{%.4g}")],
        width=max(480, min(1200, 28 * len(cols))),
        height=340,
        x_labels=steps,
        x_name="token written (generation step)",
        y_name=_METRIC_TITLES[metric],
        y_axis_type="log" if metric == "rank" else "linear",
    )
    fig.xaxis.major_label_orientation = 0.9
    values = result.tracked(tid, metric)[prompt]  # [S, P]
    points = []
    for j, s in enumerate(site_idx):
        source = ColumnDataSource(
            {
                "x": np.arange(len(cols)),
                "value": values[s, cols].astype(np.float64),
                "layer": [labels[s]] * len(cols),
                "step": list(range(len(cols))),
                "written": steps,
                "column": cols,
            }
        )
        color = Viridis256[int(round(j / max(1, len(site_idx) - 1) * 230))]
        fig.line("x", "value", source=source, color=color, line_width=2 if s == result.n_sites - 1 else 1.2, legend_label=labels[s])
        points.append(fig.scatter("x", "value", source=source, color=color, size=4, legend_label=labels[s]))
    fig.select_one(HoverTool).renderers = points
    _legend_outside(fig)
    fig.legend[0].click_policy = "hide"
    if metric == "rank":
        fig.y_range.flipped = True
    return fig


# -- comparisons ----------------------------------------------------------------------------------
#: Blue (b < a) through white to red (b > a), as the widget's diverging scale.
_DIVERGING = tuple(RdBu11)  # bokeh lists RdBu dark blue first


def compare_grid(comparison: Comparison, metric: str = "js", token: int | None = None, tokens: Sequence[int] = (),
                 cell_width: int = 64, cell_height: int = 22) -> figure:
    """The diff grid of a :class:`~lens_widget.Comparison`: layers x aligned columns coloured by a
    compare metric (``lens_widget.metrics.COMPARE_METRICS``). Δ metrics (b − a) on a diverging
    scale centred on zero, symmetric about the largest |Δ|; JS divergence (labelled exact or
    top-k approximation) and top-1 agreement on sequential scales. Each cell reads ``a→b`` top-1
    tokens (one token when they agree); the hover shows both sides."""
    _check_metric(metric, COMPARE_METRICS)
    c = comparison
    S, P = c.n_sites, c.n_positions
    values = c.metric(metric, token=token, tokens=tokens).astype(np.float64)
    values = np.where(c.nonfinite, np.nan, values)
    top_a = c.side("a", c.a.topk_ids)[..., 0]
    top_b = c.side("b", c.b.topk_ids)[..., 0]
    tok_a = [c.a.display(int(c.a.input_ids[c.prompt_a, p])) for p in c.positions_a]
    tok_b = [c.b.display(int(c.b.input_ids[c.prompt_b, p])) for p in c.positions_b]
    cols = [ta if ta == tb else f"{ta}│{tb}" for ta, tb in zip(tok_a, tok_b)]
    ss, pp = np.meshgrid(np.arange(S), np.arange(P), indexing="ij")
    ss, pp = ss.ravel(), pp.ravel()
    ta_s = [c.a.display(int(i)) for i in top_a.ravel()]
    tb_s = [c.b.display(int(i)) for i in top_b.ravel()]
    finite = values[np.isfinite(values)]
    if metric in DELTA_METRICS:
        m = float(np.abs(finite).max()) if finite.size else 0.0
        m = m if m > 0 else 1.0
        mapper = LinearColorMapper(palette=_DIVERGING, low=-m, high=m, nan_color="#d9d9d9")
    else:
        hi = 1.0 if metric == "top1_agree" else max(float(finite.max()) if finite.size else 0.0, 1e-12)
        mapper = LinearColorMapper(palette=Viridis256, low=0.0, high=hi, nan_color="#d9d9d9")
    source = ColumnDataSource({
        "x": pp, "y": ss,
        "layer": [c.site_labels[i] for i in ss],
        "token_a": [tok_a[j] for j in pp], "token_b": [tok_b[j] for j in pp],
        "position_a": c.positions_a[pp], "position_b": c.positions_b[pp],
        "top1_a": ta_s, "top1_b": tb_s,
        "cell": [_short(a if a == b else f"{a}→{b}", 10) for a, b in zip(ta_s, tb_s)],
        "value": values.ravel(),
        "js": c.js.ravel().astype(np.float64),
    })
    source.data["text_color"] = _text_colors(source.data["value"], mapper)
    label = c.js_label if metric == "js" else metric
    fig = _figure(
        f"{c.label_a} vs {c.label_b} · {label} (b − a, aligned {c.align})",
        [("layer", "@layer"), ("a", "@token_a (position @position_a), top-1 @top1_a"), ("b", "@token_b (position @position_b), top-1 @top1_b"),
         (metric, "@value{%.4g}"), ("JS (nats)", "@js{%.4g}")],
        width=max(240, cell_width * P), height=max(120, cell_height * S),
        x_labels=cols, y_labels=c.site_labels, x_name="aligned tokens (a│b)", y_name="layer", cells=True,
    )
    fig.select_one(HoverTool).formatters = {"@value": "printf", "@js": "printf"}
    rects = fig.rect("x", "y", 1, 1, source=source, fill_color={"field": "value", "transform": mapper}, line_color="white")
    fig.text("x", "y", text="cell", source=source, text_color="text_color", text_font_size="9px", text_align="center", text_baseline="middle")
    fig.select_one(HoverTool).renderers = [rects]
    fig.add_layout(ColorBar(color_mapper=mapper, title=PlainText(text=label), width=12), "right")
    return fig


def js_by_layer(comparisons: Comparison | Mapping[str, Comparison], *, title: str = "Jensen–Shannon divergence by layer") -> figure:
    """Mean JS divergence (nats) over the aligned columns at each layer, one line per comparison
    (``{name: Comparison}``; a single one is named by its sides). Legend entries say whether each
    line is exact or the top-k approximation."""
    if isinstance(comparisons, Comparison):
        comparisons = {f"{comparisons.label_a} vs {comparisons.label_b}": comparisons}
    if not isinstance(comparisons, Mapping) or not comparisons:
        raise ValueError("js_by_layer needs a Comparison or {name: Comparison}")
    first = next(iter(comparisons.values()))
    fig = _figure(title, [("comparison", "@name"), ("layer", "@layer"), ("JS (nats)", "@value{%.4g}")], width=640, height=320,
                  x_labels=first.site_labels, x_name="layer", y_name="JS divergence, nats")
    lines = []
    for name, c in comparisons.items():
        if not isinstance(c, Comparison):
            raise TypeError(f"{name!r}: expected a Comparison, got {type(c).__name__}")
        js = np.where(c.nonfinite, np.nan, c.js.astype(np.float64))
        with np.errstate(invalid="ignore"):
            per_site = np.nanmean(js, axis=1) if js.shape[1] else np.full(js.shape[0], np.nan)
        legend = f"{name} ({'exact' if c.js_exact else 'top-k approx.'})"
        lines.append((legend, per_site, np.isfinite(per_site), c.site_labels, {"name": str(name)}))
    return _layer_lines(fig, lines)


# -- attribution of one cell ----------------------------------------------------------------------
def attribution(df: Any, top: int = 20, *, cell_width: int = 28, cell_height: int = 16) -> Any:
    """The exact attribution of one cell (:meth:`LogitLens.attribute
    <lens_widget.engine.LogitLens.attribute>`): the ``top`` largest contributors by |value| as
    horizontal bars (positive red, negative blue), the remainder rows below them in grey (never
    left out), and a layer × head heatmap of the heads' contributions on a diverging scale
    centred on 0. Returns a bokeh ``column`` of the two figures; the title states the cell's
    logit (or difference) and how far the rows' sum is from it."""
    from bokeh.layouts import column
    from bokeh.models import Title

    from .attribution import as_data

    data = as_data(df, top)
    a = df.attrs
    tokens = [display_token(str(t)) for t in a.get("tokens", [])]
    what = f"logit({tokens[0]}) − logit({tokens[1]})" if data["kind"] == "logit_diff" and len(tokens) == 2 else f"logit({tokens[0] if tokens else '?'})"
    where = f"{site_label(str(data['site_name']))}, position {data['position']}" if data["site_name"] else "the cell"
    err = data["error"]
    title = f"{what} at {where} = {data['logit']:.4g}"
    subtitle = f"rows sum to {data['sum']:.6g}" + (f" (error {err:.1e})" if err is not None else "") + "; remainder rows in grey"
    bars = data["bars"]
    names = list(bars["names"]) + [r["name"] for r in data["remainder"]]
    values = list(bars["values"]) + [r["value"] for r in data["remainder"]]
    kinds = list(bars["kinds"]) + ["remainder"] * len(data["remainder"])
    n = len(names)
    ys = list(range(n - 1, -1, -1))  # the largest at the top
    colors = ["#9e9e9e" if k == "remainder" else ("#d6604d" if v >= 0 else "#4393c3") for k, v in zip(kinds, values)]
    src = ColumnDataSource({"y": ys, "value": np.asarray(values, dtype=np.float64), "name": names, "kind": kinds, "color": colors})
    fig = _figure(title, [("component", "@name"), ("kind", "@kind"), ("contribution", "@value{%.4g}")], width=520,
                  height=max(120, 18 * n), y_labels=[names[n - 1 - i] for i in range(n)], x_name="contribution to the logit",
                  y_name="")
    fig.add_layout(Title(text=PlainText(text=subtitle), text_font_style="normal", text_font_size="11px"), "above")
    fig.hbar(y="y", right="value", height=0.8, left=0, source=src, color="color")
    fig.add_layout(Span(location=0, dimension="height", line_color="#444444", line_width=1))
    fig.y_range = Range1d(-0.5, n - 0.5)
    heads = data["heads"]
    grid = np.asarray(heads["values"], dtype=np.float64)
    layers = [str(x) for x in heads["layers"]]
    H = int(heads["n_heads"])
    if grid.size == 0:
        return column(fig)
    finite = grid[np.isfinite(grid)]
    m = float(np.abs(finite).max()) if finite.size else 1.0
    # RdBu11 runs blue -> red: negative blue, positive red, as the bars
    mapper = LinearColorMapper(palette=RdBu11, low=-(m or 1.0), high=(m or 1.0), nan_color="#d9d9d9")
    li, hi = np.meshgrid(np.arange(len(layers)), np.arange(H), indexing="ij")
    hsrc = ColumnDataSource({"x": hi.ravel(), "y": li.ravel(), "value": grid.ravel(), "layer": [layers[i] for i in li.ravel()],
                             "head": hi.ravel(), "name": [f"L{layers[i]}.H{j}" for i, j in zip(li.ravel(), hi.ravel())]})
    heat = _figure("heads: contribution by layer × head", [("head", "@name"), ("contribution", "@value{%.4g}")],
                   width=max(160, cell_width * H), height=max(120, cell_height * len(layers)), x_labels=[str(j) for j in range(H)],
                   y_labels=layers, x_name="head", y_name="layer", cells=True)
    heat.rect("x", "y", 1, 1, source=hsrc, fill_color={"field": "value", "transform": mapper}, line_color=None)
    heat.add_layout(ColorBar(color_mapper=mapper, title=PlainText(text="contribution"), width=12), "right")
    return column(fig, heat)
