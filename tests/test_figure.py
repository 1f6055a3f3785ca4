"""Figures without a browser: ``LensResult.to_svg`` / ``LensWidget.save_figure`` write one rect
per cell in the colour the widget gives it (checked against the scales written again in the
browser tests' helpers), escape every string, and refuse what they cannot draw; the Python scales
are monotone, clamp at their documented ends and give NaN no colour; the palettes, constants and
metric labels are the front end's."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from fakes import HOSTILE_STRINGS, make_result
from ui.ui_support import PALETTES, metric_colours

from lens_widget import scales
from lens_widget.metrics import GRID_METRIC_LABELS, GRID_METRICS
from lens_widget.tokens import display_token
from lens_widget.widget import LensWidget

SVG = "{http://www.w3.org/2000/svg}"
TS = Path(__file__).resolve().parents[1] / "js" / "src"


def cells_of(svg: str) -> dict[tuple[int, int], ET.Element]:
    root = ET.fromstring(svg)
    rects = root.findall(f".//{SVG}g[@class='cells']/{SVG}rect")
    out = {(int(r.get("data-site")), int(r.get("data-col"))): r for r in rects}
    assert len(out) == len(rects)
    return out


def fill_rgb(fill: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.fullmatch(r"rgb\((\d+),(\d+),(\d+)\)", fill).groups())


@pytest.mark.parametrize("metric", ["top1_prob", "next_prob", "next_rank", "entropy", "kl", "tracked_prob", "tracked_logprob", "tracked_rank", "logit_diff"])
def test_one_rect_per_cell_in_the_colour_of_its_value(metric):
    r = make_result(hostile=True, n_sites=7, n_positions=9, seed=3)
    r.nonfinite[0, 2, 4] = True
    b = int(r.tracked_ids[1])
    svg = r.to_svg(metric=metric, token=b if metric.startswith("tracked") else None, diff_tokens=[b, int(r.tracked_ids[0])])
    cells = cells_of(svg)
    assert len(cells) == r.n_sites * r.n_positions
    palette, want = metric_colours(r, metric, b if metric.startswith("tracked") else -1, [b, int(r.tracked_ids[0])])
    for (site, col), rect in cells.items():
        if r.nonfinite[0, site, col]:
            assert rect.get("class") == "cell nonfinite" and rect.get("fill") == "#999999"
        elif want[site, col] < 0:
            assert rect.get("fill") == "#eeeeee", (site, col)  # no value (the last column's next token)
        else:
            # the palette colour of the cell's index (neighbouring indices can share a colour)
            assert fill_rgb(rect.get("fill")) == PALETTES[palette][want[site, col]], (metric, site, col)


def test_every_string_is_escaped_and_hostile_tokens_stay_text(tmp_path):
    r = make_result(hostile=True)
    r.model_name = "<script>alert(1)</script>"
    r.lens_name = "a & b \x07 \ud800"
    r.sites[1] = "<b>x</b>"
    svg = r.to_svg(tmp_path / "grid.svg", metric="tracked_logprob")
    assert (tmp_path / "grid.svg").read_text(encoding="utf-8") == svg
    root = ET.fromstring(svg)
    assert {e.tag.removeprefix(SVG) for e in root.iter()} <= {"svg", "title", "rect", "text", "g", "path", "defs", "linearGradient", "stop"}
    assert root.find(f"{SVG}title").text == "<script>alert(1)</script> · a & b \ufffd \ufffd"
    assert "<script" not in svg and "<b>" not in svg
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "<b>x</b>" in texts  # the site's label, as text
    # a local model is named, never by its path (as the page's title)
    r.model_name = "/home/me/models/<x>.gguf"
    assert ET.fromstring(r.to_svg()).find(f"{SVG}title").text.startswith("<x> · ")
    # every hostile token that is a top-1 shows as its display text (cut to the cell)
    shown = {display_token(s) for s in HOSTILE_STRINGS}
    words = [t.text or "" for t in root.findall(f".//{SVG}g[@class='cell-text']/{SVG}text")]
    tops = {display_token(r.token_strings[int(t)]) for t in r.topk_ids[0, :, :, 0].ravel()}
    assert tops & shown and all(any(full.startswith(w.rstrip("…")) for full in tops) for w in words)


def test_to_svg_refuses_what_it_cannot_draw():
    r = make_result()
    with pytest.raises(ValueError, match="metric must be one of"):
        r.to_svg(metric="js")
    with pytest.raises(ValueError, match="prompt must be in 0..0"):
        r.to_svg(prompt=1)
    with pytest.raises(ValueError, match="not a tracked token"):
        r.to_svg(metric="tracked_rank", token="nope")
    # an untracked id: no value anywhere, and the legend says why
    svg = r.to_svg(metric="tracked_rank", token=11)
    assert {c.get("fill") for c in cells_of(svg).values()} == {"#eeeeee"}
    assert "token id 11 is not tracked" in svg


def test_save_figure_draws_what_the_widget_shows(tmp_path):
    r = make_result(hostile=True, n_prompts=2)
    w = LensWidget(result=r)
    try:
        b = int(r.tracked_ids[1])
        w.metric, w.metric_token, w.prompt_index = "tracked_rank", b, 1
        out = w.save_figure(tmp_path / "grid.svg")
        assert out.read_text(encoding="utf-8") == r.to_svg(metric="tracked_rank", prompt=1, token=b)
        assert w.save_figure(tmp_path / "kl.svg", metric="kl").read_text(encoding="utf-8") == r.to_svg(metric="kl", prompt=1)
        with pytest.raises(ValueError, match=r"SVG.*PNG button"):
            w.save_figure(tmp_path / "grid.png")
        w.aggregate = True
        with pytest.raises(ValueError, match="aggregate"):
            w.save_figure(tmp_path / "mean.svg")
    finally:
        w.close()


# -- the scales -----------------------------------------------------------------------------

def test_log_prob_scale_is_monotone_clamped_and_gives_nan_no_colour():
    s = scales.log_prob_scale(-8.0)
    xs = np.linspace(-30, 2, 3001)
    idx = [s.index(x) for x in xs]
    assert all(a <= b for a, b in zip(idx, idx[1:]))
    assert s.index(0) == scales.N_COLORS - 1 and s.index(-8) == 0 and s.index(-4) == 128
    assert s.index(-math.inf) == 0 and s.index(-1e9) == 0 and s.index(1e-7) == scales.N_COLORS - 1
    assert s.index(math.nan) == -1
    assert scales.log_prob_scale(-300).lo == scales.LOGPROB_FLOOR and scales.log_prob_scale(-300).ticks[0].startswith("≤ ")
    assert scales.log_prob_scale(math.nan).lo == scales.LOGPROB_FLOOR
    assert scales.log_prob_scale(0.0).lo < 0


def test_rank_scale_is_monotone_log_spaced_clamped_and_gives_no_value_no_colour():
    s = scales.rank_scale(1000)
    idx = [s.index(x) for x in range(1, 5000)]
    assert all(a >= b for a, b in zip(idx, idx[1:]))
    assert s.index(1) == scales.N_COLORS - 1 and s.index(1000) == 0 and s.index(10**6) == 0
    assert s.index(math.sqrt(1000)) == 128
    assert [s.index(v) for v in (0, -2, math.nan)] == [-1, -1, -1]
    assert scales.rank_scale(1).hi == 2


def test_fmt_is_the_front_ends():
    assert [scales.fmt(v) for v in (0, 0.5, -3.25, 12.345, 250, 1e-4, 2e5, math.nan)] == ["0.000", "0.500", "-3.250", "12.3", "250", "1.00e-4", "2.00e+5", "–"]


# -- one source per fact: Python's copies equal the front end's --------------------------------

def _ts(path: str, pattern: str) -> str:
    m = re.search(pattern, (TS / path).read_text(encoding="utf-8"), re.S)
    assert m, f"{pattern!r} not found in js/src/{path}"
    return m.group(1)


def test_palettes_and_constants_are_the_front_ends():
    assert re.findall(r'"(#[0-9a-f]{6})"', _ts("color.ts", r"const VIRIDIS = \[([^\]]*)\]")) == scales.VIRIDIS
    assert re.findall(r'"(#[0-9a-f]{6})"', _ts("color.ts", r"const RDBU = \[([^\]]*)\]")) == scales.RDBU
    assert int(_ts("color.ts", r"export const N_COLORS = (\d+);")) == scales.N_COLORS
    assert _ts("color.ts", r'export const NEXT_MARK_COLOR = "([^"]+)";') == scales.NEXT_MARK_COLOR
    assert float(_ts("color.ts", r"export const LOGPROB_FLOOR = (-?[\d.]+);")) == scales.LOGPROB_FLOOR


def test_metric_labels_and_figure_geometry_are_the_front_ends():
    body = _ts("metrics.ts", r"export const METRIC_LABELS: Record<Metric, string> = \{(.*?)\};")
    assert dict(re.findall(r'(\w+): "([^"]*)"', body)) == GRID_METRIC_LABELS
    assert tuple(GRID_METRIC_LABELS) == GRID_METRICS
    from lens_widget.figure import FIGURE, NEXT_MARK_TEXT

    geometry = dict(re.findall(r"(\w+): (\d+),", _ts("figure.ts", r"export const FIGURE = \{(.*?)\} as const;")))
    camel = {k: re.sub(r"_(\w)", lambda m: m.group(1).upper(), k) for k in FIGURE}
    assert {k: int(geometry[camel[k]]) for k in FIGURE} == FIGURE
    assert _ts("legend.ts", r'export const NEXT_MARK_TEXT = "([^"]+)";') == NEXT_MARK_TEXT
