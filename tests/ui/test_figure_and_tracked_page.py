"""Exported pages in headless Chromium: tracked tokens in the tooltip (probability and rank equal
to the result's arrays), the log-prob and rank colourings against their scales by pixel, the
next-token mark's one colour (the same under JupyterLab's theme variables as in an exported
page, and in the legend), the figure export (SVG parsed: one rect per cell in the cell's colour,
hostile token text inert, the same SVG as Python's ``LensResult.to_svg``; PNG decoded: the
figure's size times the pixel ratio), and a two-lens comparison on one prompt labelled by the
lenses."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from fakes import HOSTILE_STRINGS, make_result
from PIL import Image
from browser_support import grid_geometry
from ui_support import MAIN_CANVAS, PALETTES, assert_grid_colours, canvas_pixels, cell_xy, metric_colours, widget_state

from lens_widget.figure import FIGURE
from lens_widget.scales import NEXT_MARK_COLOR
from lens_widget.scales import fmt as js_fmt  # format.ts fmt: how the tooltip prints a value
from lens_widget.tokens import display_token
from lens_widget.widget import LensWidget
from zoo import AffineLens, tiny

pytestmark = pytest.mark.browser

SVG_NS = "{http://www.w3.org/2000/svg}"


def frames(page, n: int = 2) -> None:
    page.evaluate(f"() => new Promise(r => {{ let k = {n}; const f = () => (--k ? requestAnimationFrame(f) : r()); requestAnimationFrame(f); }})")


def hex_rgb(h: str) -> tuple[int, int, int]:
    return tuple(int(h[i : i + 2], 16) for i in (1, 3, 5))


def fill_rgb(fill: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"rgb\((\d+),(\d+),(\d+)\)", fill)
    assert m, f"not an rgb() fill: {fill!r}"
    return tuple(int(x) for x in m.groups())


def download(page, button: str) -> bytes:
    """The file the figure button ``button`` saves (it is in the toolbar's "more" menu: opened first)."""
    if not page.locator(button).is_visible():
        page.click(".lw-more-summary")
    with page.expect_download() as info:
        page.locator(button).click()
    return open(info.value.path(), "rb").read()


def hostile_with_marks():
    """A hostile result whose top-1 at the final layer is the next token in columns 0 and 2."""
    r = make_result(hostile=True)
    for col in (0, 2):
        r.next_ids[0, col] = r.topk_ids[0, -1, col, 0]
    return r


# -- tracked tokens in the tooltip, and their colourings ---------------------------------------

def test_the_tooltip_lists_every_tracked_tokens_probability_and_rank(open_page):
    r = make_result(hostile=True)
    page = open_page(widget_state(r))
    frames(page)
    tip = page.locator(".lw-tooltip")
    for site, col in ((4, 0), (3, 2), (1, 4), (0, 5)):
        page.mouse.move(*cell_xy(page, r.n_sites - 1 - site, col))
        tip.wait_for(state="visible")
        assert (tip.get_attribute("data-site"), tip.get_attribute("data-col")) == (str(site), str(col))
        rows = tip.locator(".lw-tracked-row")
        assert rows.count() == len(r.tracked_ids)
        for m, tid in enumerate(r.tracked_ids.tolist()):
            row = rows.nth(m)
            p, rank = float(r.tracked_prob[0, site, col, m]), int(r.tracked_rank[0, site, col, m])
            assert int(row.get_attribute("data-id")) == tid
            assert float(row.get_attribute("data-prob")) == pytest.approx(p, rel=1e-6)
            assert int(row.get_attribute("data-rank")) == rank
            assert row.locator(".lw-tok").text_content() == display_token(r.token_strings[tid])
            assert row.locator(".lw-tracked-prob").text_content() == js_fmt(p)
            assert row.locator(".lw-tracked-rank").text_content() == str(rank)
            assert row.locator(".lw-id").text_content() == f"id {tid}"  # an id, labelled: not read as a rank
    # the top-k rows label their ids too
    assert tip.locator(".lw-tip-row .lw-id").first.text_content().startswith("id ")
    assert page.errors == []


@pytest.mark.parametrize("metric", ["tracked_logprob", "tracked_rank"])
@pytest.mark.parametrize("which", [0, 1])
def test_log_prob_and_rank_colourings_follow_their_scales(open_page, metric, which):
    r = make_result(hostile=True, n_sites=8)
    token = int(r.tracked_ids[which])
    page = open_page(widget_state(r, metric=metric, metric_token=token))
    frames(page)
    assert page.locator(".lens-widget").get_attribute("data-metric") == metric
    assert assert_grid_colours(page, r, metric, metric_token=token) == r.n_sites * r.n_positions
    # the scales spread the cells: not every cell dark but a few (the linear 0-1 probability's fault)
    _, want = metric_colours(r, metric, token)
    assert len(set(want.ravel().tolist())) >= r.n_sites * r.n_positions // 3
    # the tooltip's metric line: the rank as a whole number, the log-prob in nats
    site, col = 2, 3
    page.mouse.move(*cell_xy(page, r.n_sites - 1 - site, col))
    tip = page.locator(".lw-tooltip")
    tip.wait_for(state="visible")
    m = r.tracked_index(token)
    want_text = str(int(r.tracked_rank[0, site, col, m])) if metric == "tracked_rank" else js_fmt(float(np.float32(np.log(np.float64(r.tracked_prob[0, site, col, m])))))
    assert tip.locator(".lw-metric .lw-v").text_content() == want_text
    ticks = page.locator(".lw-legend-tick").all_text_contents()
    assert ticks[0].startswith("rank 1" if metric == "tracked_rank" else "log p ")
    # the check tells the scales apart
    with pytest.raises(AssertionError, match="palette index"):
        assert_grid_colours(page, r, "tracked_prob", metric_token=token)
    assert page.errors == []


def test_the_tracked_token_select_chooses_the_token_of_the_log_prob_grid(open_page):
    r = make_result(hostile=True)
    page = open_page(widget_state(r, metric="tracked_logprob"))
    frames(page)
    sel = page.locator("select.lw-metric-token")
    assert sel.is_visible()
    b = int(r.tracked_ids[1])
    assert sel.locator("option").nth(1).text_content().endswith(f"(id {b})")
    sel.select_option(str(b))
    frames(page)
    assert assert_grid_colours(page, r, "tracked_logprob", metric_token=b) == r.n_sites * r.n_positions
    assert page.errors == []


# -- the next-token mark ----------------------------------------------------------------------

def test_the_next_token_mark_has_one_colour_in_an_export_and_under_jupyterlab_theme_variables(open_page):
    r = hostile_with_marks()
    page = open_page(widget_state(r))
    frames(page)
    want = list(hex_rgb(NEXT_MARK_COLOR))
    canvas = page.locator(MAIN_CANVAS)
    g = grid_geometry(canvas)
    assert g["headW"] + g["colX"][2] <= canvas.bounding_box()["width"], "columns 0 and 1 are not both in view"
    corner = (g["headW"] + g["colX"][1] - 3, g["headH"] + 2)  # inside the triangle of (final layer, col 0)
    assert canvas_pixels(canvas, [corner]) == [want]
    # a cell without the mark: the corner is the cell's own colour
    assert canvas_pixels(canvas, [(g["headW"] + g["colX"][2] - 3, g["headH"] + 2)]) != [want]
    # JupyterLab's light theme defines its brand colour (blue): the mark keeps its colour
    page.evaluate("""() => {
      for (const [k, v] of [['--jp-brand-color1', '#1976d2'], ['--jp-layout-color0', '#ffffff'], ['--jp-ui-font-color0', '#000000']])
        document.body.style.setProperty(k, v);
      document.body.setAttribute('data-jp-theme-name', 'JupyterLab Light');
    }""")
    frames(page, 3)
    assert page.evaluate("() => getComputedStyle(document.querySelector('.lens-widget')).getPropertyValue('--lw-accent').trim()") == "#1976d2"
    assert canvas_pixels(canvas, [corner]) == [want]
    # the legend's key shows the same colour
    swatch = page.locator(".lw-legend .lw-mark-swatch")
    assert swatch.get_attribute("data-color") == NEXT_MARK_COLOR
    assert swatch.evaluate("e => getComputedStyle(e).borderTopColor") == "rgb({}, {}, {})".format(*want)
    assert page.locator(".lw-legend .lw-legend-mark").text_content().strip() == "top-1 = next token"
    assert page.errors == []


# -- figure export ----------------------------------------------------------------------------

def parse_svg(data: bytes) -> ET.Element:
    root = ET.fromstring(data)
    assert root.tag == f"{SVG_NS}svg"
    return root


@pytest.mark.parametrize("metric", ["top1_prob", "tracked_logprob", "tracked_rank", "kl"])
def test_the_svg_button_saves_one_rect_per_cell_in_its_colour_and_the_same_svg_as_python(open_page, metric):
    r = hostile_with_marks()
    page = open_page(widget_state(r, metric=metric))
    frames(page)
    data = download(page, "button.lw-figure-svg")
    root = parse_svg(data)
    cells = root.findall(f".//{SVG_NS}g[@class='cells']/{SVG_NS}rect")
    S, P = r.n_sites, r.n_positions
    assert len(cells) == S * P
    palette, want = metric_colours(r, metric)
    for rect in cells:
        site, col = int(rect.get("data-site")), int(rect.get("data-col"))
        assert fill_rgb(rect.get("fill")) == PALETTES[palette][want[site, col]], (site, col)
        assert int(rect.get("x")) == FIGURE["pad"] + FIGURE["head_w"] + col * FIGURE["cell_w"]
    assert len({(c.get("data-site"), c.get("data-col")) for c in cells}) == S * P
    assert len(root.findall(f".//{SVG_NS}g[@class='next-marks']/{SVG_NS}path")) == sum(
        int(r.topk_ids[0, s, c, 0] == r.next_ids[0, c]) for s in range(S) for c in range(P) if r.next_ids[0, c] >= 0)
    # Python writes the same figure without a browser
    assert data.decode("utf-8") == r.to_svg(metric=metric)
    assert page.errors == []


def test_the_svg_keeps_hostile_token_strings_as_text(open_page, browser, tmp_path):
    r = hostile_with_marks()
    page = open_page(widget_state(r))
    frames(page)
    data = download(page, "button.lw-figure-svg")
    root = parse_svg(data)
    # nothing but the figure's own elements: no markup from a token string became an element
    assert {e.tag.removeprefix(SVG_NS) for e in root.iter()} <= {"svg", "title", "rect", "text", "g", "path", "defs", "linearGradient", "stop"}
    texts = [t.text or "" for t in root.iter(f"{SVG_NS}text")]
    hostile_shown = {display_token(s) for s in HOSTILE_STRINGS}
    cell_words = [t.text or "" for t in root.findall(f".//{SVG_NS}g[@class='cell-text']/{SVG_NS}text")]
    assert any(w.startswith("<img") for w in cell_words + texts) or any(w in hostile_shown for w in cell_words + texts)
    for w in cell_words:  # each word is a (cut) display form of a token string, as text
        assert any(full.startswith(w.rstrip("…")) for full in hostile_shown | {f"t{i}" for i in range(50)}), w
    # opened as a page, the SVG runs nothing and asks nothing
    svg_path = tmp_path / "grid.svg"
    svg_path.write_bytes(data)
    p2 = browser.new_page()
    dialogs = []
    p2.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    p2.goto(svg_path.as_uri())
    p2.wait_for_timeout(200)
    assert p2.evaluate("() => [document.querySelectorAll('img, script, foreignObject').length, window.__pwned === undefined]") == [0, True]
    assert dialogs == []
    p2.close()
    assert page.errors == []


@pytest.mark.parametrize("scale", [1, 3])
def test_the_png_button_saves_the_figure_at_a_pixel_ratio_of_at_least_two(open_page, scale):
    r = hostile_with_marks()
    page = open_page(widget_state(r), scale=scale)
    frames(page)
    root = parse_svg(download(page, "button.lw-figure-svg"))
    w, h = int(root.get("width")), int(root.get("height"))
    png = Image.open(io.BytesIO(download(page, "button.lw-figure-png")))
    ratio = max(2, scale)
    assert png.format == "PNG" and png.size == (w * ratio, h * ratio)
    rgb = png.convert("RGB")
    palette, want = metric_colours(r, "top1_prob")
    for rect in root.findall(f".//{SVG_NS}g[@class='cells']/{SVG_NS}rect"):
        site, col = int(rect.get("data-site")), int(rect.get("data-col"))
        x, y = int(rect.get("x")) + 2, int(rect.get("y")) + int(rect.get("height")) - 3  # clear of text and mark
        got = rgb.getpixel((x * ratio, y * ratio))
        assert max(abs(a - b) for a, b in zip(got, PALETTES[palette][want[site, col]])) <= 2, (site, col, got)
    assert page.errors == []


def test_python_svg_escapes_labels_and_refuses_an_unknown_metric(tmp_path):
    r = make_result(hostile=True)
    r.model_name = "<script>alert(1)</script>"
    r.sites[1] = "resid_out_<b>&\x00"
    svg = r.to_svg(tmp_path / "g.svg", metric="next_rank", title="a < b & \ud800")
    assert (tmp_path / "g.svg").read_text(encoding="utf-8") == svg
    root = parse_svg(svg.encode("utf-8"))
    assert root.find(f"{SVG_NS}title").text == "a < b & \ufffd"
    assert "<script" not in svg and "&lt;script" not in svg  # the title replaced the model name
    assert "<b>" not in svg
    with pytest.raises(ValueError, match="metric must be one of"):
        r.to_svg(metric="nope")
    with pytest.raises(ValueError, match="not a tracked token"):
        r.to_svg(metric="tracked_prob", token="zzz")


# -- compare on one prompt with two lenses -----------------------------------------------------

def test_a_two_lens_comparison_on_one_prompt_is_labelled_by_the_lenses_with_one_compare_control(open_page):
    model = tiny("llama")
    w = LensWidget.compare(model, "Hello world", decoder_b=AffineLens(model), progress=False)
    try:
        page = open_page(w.export_state())
    finally:
        w.close()
    frames(page)
    title = page.locator(".lw-title").text_content()
    assert "compare: logit lens vs tuned lens" in title
    options = page.locator("select.lw-cmp-a option").all_text_contents()
    assert options == ["logit lens", "tuned lens"], options  # not "1: Hello world" twice
    assert page.locator("select.lw-cmp-b option").all_text_contents() == options
    # one compare control: the checkbox (no second "compare" button)
    assert page.locator("input.lw-compare-toggle").count() == 1
    assert page.locator(".lw-controls button", has_text=re.compile("^compare$")).count() == 0
    page.mouse.move(*cell_xy(page, 0, 1))
    tip = page.locator(".lw-tooltip")
    tip.wait_for(state="visible")
    assert tip.locator(".lw-cmp-side-a .lw-cmp-side-label").text_content() == "a: logit lens"
    assert tip.locator(".lw-cmp-side-b .lw-cmp-side-label").text_content() == "b: tuned lens"
    assert page.errors == []
