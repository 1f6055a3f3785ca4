"""The grid's frame on a real 30-layer model and a 34-token prompt (issue 20, item 9): at the default
size every row shows without an inner scroll box, columns are as wide as their tokens, the view
controls (compact, zoom, fit-to-width, column range) resize the grid, the detail panel sits beside
the grid on a wide page with no empty chart before the first click, and the toolbar of a compare
view takes at most two lines at 1000 px."""

from __future__ import annotations

import pytest
from browser_support import cell_center, grid_geometry

from lens_widget.tokens import display_token
from lens_widget.widget import LensWidget

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROMPT = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
          "It is named after the engineer Gustave Eiffel, whose company")
OTHER = ("The Colosseum is an elliptical amphitheatre in the centre of the city of Rome, Italy, "
         "just east of the Roman Forum. It is the largest ancient amphitheatre")


@pytest.fixture(scope="module")
def states(smollm):
    """Exported states: the default widget of PROMPT, and a two-prompt widget in its compare view."""
    assert len(smollm.tokenizer(PROMPT)["input_ids"]) == 34
    one = LensWidget(smollm, PROMPT, progress=False)
    two = LensWidget(smollm, [PROMPT, OTHER], progress=False)
    two.compare_with(("logit lens", 0), ("logit lens", 1))
    two.compare_view = True
    out = {"one": one.export_state(), "compare": two.export_state(), "result": one.result}
    one.close()
    two.close()
    return out


def frames(page, n: int = 2) -> None:
    page.evaluate(f"() => new Promise(r => {{ let k = {n}; const f = () => (--k ? requestAnimationFrame(f) : r()); requestAnimationFrame(f); }})")


def geometry(page) -> dict:
    return grid_geometry(page.locator("canvas.lw-canvas"))


def widths(g: dict) -> list[float]:
    x = g["colX"]
    return [b - a for a, b in zip(x, x[1:])]


#: width of each string in the grid's font, measured on a canvas of the page's own (not the grid's)
MEASURE_JS = """([texts, px]) => {
  const family = getComputedStyle(document.querySelector('.lens-widget')).getPropertyValue('--lw-font').trim();
  const g = document.createElement('canvas').getContext('2d');
  g.font = px + 'px ' + family;
  return texts.map(t => g.measureText(t).width);
}"""


def test_every_row_shows_and_tokens_are_not_cut(open_page, states):
    r = states["result"]
    S, P = r.n_sites, r.n_positions
    assert (S, P) == (31, 34)
    page = open_page(states["one"])  # the default widget: no height=, no view traits
    frames(page)
    g = geometry(page)
    sizes = page.evaluate("""() => { const v = document.querySelector('.lw-viewport');
      return {sh: v.scrollHeight, ch: v.clientHeight, inner: window.innerHeight}; }""")
    assert sizes["sh"] == sizes["ch"], sizes  # no inner vertical scroll
    assert g["height"] == 0 and g["rowH"] == 20
    canvas = page.locator("canvas.lw-canvas")
    box = canvas.bounding_box()
    assert box["height"] == g["headH"] + S * g["rowH"]  # every row is drawn
    # the first row (final layer) and the last row (the embeddings) lie inside the page's viewport
    first_top = box["y"] + g["headH"]
    last_bottom = box["y"] + g["headH"] + S * g["rowH"]
    assert 0 <= first_top and last_bottom <= sizes["inner"], (first_top, last_bottom, sizes)
    # hovering the last row shows the embeddings' cell (site 0), the first row the final layer
    for row, site in ((0, S - 1), (S - 1, 0)):
        page.mouse.move(*cell_center(canvas, row, 0, g))
        tip = page.locator(".lw-tooltip")
        tip.wait_for(state="visible")
        assert tip.get_attribute("data-site") == str(site)
    page.mouse.move(0, 0)

    # each column is at least as wide as its token and every top-1 token drawn in it
    ids = r.input_ids[0][r.positions[0]].tolist()
    heads = [display_token(r.token(i)) for i in ids]
    tops = [[display_token(r.token(int(r.topk_ids[0, s, c, 0]))) for s in range(S)] for c in range(P)]
    head_w = page.evaluate(MEASURE_JS, [heads, g["font"]])
    top_w = page.evaluate(MEASURE_JS, [[t for col in tops for t in col], g["font"]])
    w = widths(g)
    assert len(w) == P
    for c in range(P):
        need = max(head_w[c], *top_w[c * S : (c + 1) * S])
        assert w[c] >= need, f"column {c} ({heads[c]!r}) is {w[c]} px, its text needs {need:.1f}"
    assert max(w) > min(w)  # widths follow the text (not one width for all)


def test_compact_zoom_fit_and_range(open_page, states):
    page = open_page(states["one"])
    frames(page)
    model = "window.__lensModel"
    normal = geometry(page)
    # compact: colour only, every column narrower than in normal mode
    page.click("button.lw-compact")
    frames(page)
    compact = geometry(page)
    assert page.evaluate(f"() => {model}.get('compact')") is True
    assert all(c < n for c, n in zip(widths(compact), widths(normal)))
    assert max(widths(compact)) == 10
    page.click("button.lw-compact")
    frames(page)
    assert widths(geometry(page)) == widths(normal)

    # zoom in: rows, headers and columns grow; zoom out returns to the same sizes
    page.click("button.lw-zoom-in")
    frames(page)
    big = geometry(page)
    assert page.evaluate(f"() => {model}.get('zoom')") == 1.25
    assert big["rowH"] == 25 and big["headH"] > normal["headH"]
    assert all(b > n for b, n in zip(widths(big), widths(normal)))
    assert page.locator("canvas.lw-canvas").bounding_box()["height"] == big["headH"] + 31 * 25
    page.click("button.lw-zoom-out")
    frames(page)
    assert geometry(page)["rowH"] == 20 and widths(geometry(page)) == widths(normal)

    # fit-to-width: the whole grid fits the box (no horizontal scroll), the box fits its container
    vp = "document.querySelector('.lw-viewport')"
    assert page.evaluate(f"() => {vp}.scrollWidth > {vp}.clientWidth")  # 34 natural columns do not fit
    page.click("button.lw-fit")
    frames(page)
    fit = geometry(page)
    sizes = page.evaluate(f"""() => ({{sw: {vp}.scrollWidth, cw: {vp}.clientWidth,
      box: document.querySelector('.lw-gridbox').getBoundingClientRect().width,
      vpw: {vp}.getBoundingClientRect().width}})""")
    assert fit["headW"] + fit["colX"][-1] <= sizes["cw"]
    assert sizes["sw"] <= sizes["cw"] and sizes["vpw"] <= sizes["box"]
    page.click("button.lw-fit")
    frames(page)

    # a column range: columns 26..33 only; the first one shown is column 26
    page.click(".lw-more-summary")
    page.fill("input.lw-range-from", "26")
    page.fill("input.lw-range-to", "33")
    page.press("input.lw-range-to", "Enter")
    page.locator("input.lw-range-to").dispatch_event("change")
    frames(page)
    assert page.evaluate(f"() => {model}.get('col_range')") == [26, 33]
    ranged = geometry(page)
    assert len(ranged["colX"]) - 1 == 8 and ranged["first"] == 26
    assert widths(ranged) == widths(normal)[26:34]
    page.mouse.move(*cell_center(page.locator("canvas.lw-canvas"), 0, 0, ranged))
    tip = page.locator(".lw-tooltip")
    tip.wait_for(state="visible")
    assert tip.get_attribute("data-col") == "26"


def test_view_traits_from_python_reach_the_page(open_page, states):
    state = dict(states["one"], compact=True, zoom=1.5, col_range=[-8, -1])
    page = open_page(state)
    frames(page)
    g = geometry(page)
    assert g["compact"] is True and g["zoom"] == 1.5 and g["rowH"] == 30
    assert g["first"] == 26 and len(g["colX"]) - 1 == 8
    assert page.locator("button.lw-compact").get_attribute("aria-pressed") == "true"
    assert page.locator("button.lw-zoom-level").text_content() == "150%"


def test_panel_beside_the_grid_and_no_empty_chart(open_page, states):
    page = open_page(states["one"], viewport=(1100, 900))
    frames(page)
    grid = page.locator(".lw-gridbox").bounding_box()
    panel = page.locator(".lw-panel").bounding_box()
    assert panel["x"] >= grid["x"] + grid["width"] and abs(panel["y"] - grid["y"]) < 2  # beside, at the top
    assert not page.locator("canvas.lw-chart").is_visible()  # no empty chart before the first click
    assert "Select a cell" in page.locator(".lw-detail").inner_text()
    page.mouse.click(*cell_center(page.locator("canvas.lw-canvas"), 0, 5))
    page.locator("canvas.lw-chart").wait_for(state="visible")
    chart = page.locator("canvas.lw-chart").bounding_box()
    assert chart["y"] < page.evaluate("window.innerHeight")  # seen without scrolling the page
    # a narrow page: the panel goes under the grid
    narrow = open_page(states["one"], viewport=(700, 900))
    frames(narrow)
    grid = narrow.locator(".lw-gridbox").bounding_box()
    panel = narrow.locator(".lw-panel").bounding_box()
    assert panel["y"] >= grid["y"] + grid["height"]


#: the toolbar's lines: distinct tops of its visible controls (a control on a new line is lower)
TOOLBAR_LINES_JS = """() => {
  const items = [...document.querySelectorAll('.lens-widget .lw-controls > *')]
    .filter(e => e.getClientRects().length && getComputedStyle(e).display !== 'none');
  const tops = items.map(e => e.getBoundingClientRect()).map(r => [r.top, r.bottom]).sort((a, b) => a[0] - b[0]);
  const lines = [];
  for (const [top, bottom] of tops) {
    const line = lines.find(l => top < l[1] - 2);
    if (line) line[1] = Math.max(line[1], bottom); else lines.push([top, bottom]);
  }
  return {lines: lines.length, items: items.length};
}"""


def test_compare_toolbar_is_two_lines_at_1000px(open_page, states):
    page = open_page(states["compare"], viewport=(1000, 900))
    frames(page)
    assert page.locator(".lens-widget").get_attribute("data-view") == "compare"
    assert page.locator("select.lw-cmp-a").is_visible() and page.locator("select.lw-prompt-select").is_visible()
    got = page.evaluate(TOOLBAR_LINES_JS)
    assert got["items"] >= 8 and got["lines"] <= 2, got
    # with a kernel the task bar (generate, count, progress, stop) is there too: still two lines
    page.evaluate("() => { const t = document.querySelector('.lw-tasks'); t.hidden = false; t.querySelectorAll('[hidden]').forEach(e => e.hidden = false); }")
    frames(page)
    got = page.evaluate(TOOLBAR_LINES_JS)
    assert got["lines"] <= 2, got
    # and the view controls and the "more" menu work there
    page.click(".lw-more-summary")
    assert page.locator(".lw-transpose input").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator(".lw-transpose input").is_visible()
