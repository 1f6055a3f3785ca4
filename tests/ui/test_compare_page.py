"""Exported pages of a comparison in headless Chromium: the diff grid recolours by each compare
metric exactly as Python computed it (pixels against the front end's scales, written again here),
the tooltip shows both sides' top-k next to each other, a click pins the cell on both sides, and
hostile token strings and labels stay text on both sides."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fakes import HOSTILE_STRINGS, make_result
from ui_support import N_COLORS, cell_xy, grid_pixels, nearest

from lens_widget import compare
from lens_widget.metrics import COMPARE_METRICS, DELTA_METRICS
from lens_widget.tokens import display_token
from lens_widget.widget import LensWidget
from lens_widget.scales import fmt as js_fmt  # format.ts fmt: how the tooltip prints a value
from zoo import tiny

pytestmark = pytest.mark.browser

PROMPT_A = "Hello there"
PROMPT_B = "Hi there"


def frames(page, n: int = 2) -> None:
    page.evaluate(f"() => new Promise(r => {{ let k = {n}; const f = () => (--k ? requestAnimationFrame(f) : r()); requestAnimationFrame(f); }})")


def _index(t: float) -> int:
    return 0 if t <= 0 else N_COLORS - 1 if t >= 1 else int(math.floor(t * (N_COLORS - 1) + 0.5))


def compare_colours(c, metric: str) -> tuple[str, np.ndarray]:
    """(palette, ``[S, P]`` colour index, -1 none) of the diff grid coloured by ``metric``
    (compare.ts ``compareView`` written again: Δ metrics diverging about the largest |Δ| of the
    cells with data, JS sequential 0..max, agreement 0..1)."""
    v = c.metric(metric).astype(np.float32).astype(float)
    ok = np.isfinite(v) & ~c.nonfinite
    if metric in DELTA_METRICS:
        m = float(np.abs(v[ok]).max()) if ok.any() else 0.0
        m = m if m > 0 else 1.0
        return "div", np.vectorize(lambda x: -1 if x != x else _index((x + m) / (2 * m)))(v)
    hi = 1.0 if metric == "top1_agree" else max(float(v[ok].max()) if ok.any() else 0.0, 1e-12)
    return "seq", np.vectorize(lambda x: -1 if x != x else _index(x / hi))(v)


def assert_diff_colours(page, c, metric: str) -> int:
    palette, want = compare_colours(c, metric)
    S, P = want.shape
    checked = 0
    for (row, col), rgb in grid_pixels(page, S, P).items():
        site = S - 1 - row
        if c.nonfinite[site, col]:
            continue
        got, dist = nearest(palette, rgb)
        if want[site, col] < 0:
            assert dist > 3, f"{metric}: ({site}, {col}) has no value but is drawn {rgb}"
            continue
        assert dist <= 3 and abs(got - want[site, col]) <= 1, f"{metric}: ({site}, {col}) is index {got}, Python says {want[site, col]}"
        checked += 1
    return checked


def hover(page, site: int, col: int, n_sites: int):
    page.mouse.move(0, 0)
    page.mouse.move(*cell_xy(page, n_sites - 1 - site, col))
    tip = page.locator(".lw-tooltip")
    tip.wait_for(state="visible")
    assert (tip.get_attribute("data-site"), tip.get_attribute("data-col")) == (str(site), str(col))
    return tip


def assert_side(tip, which: str, result, b: int, site: int, col: int) -> None:
    rows = tip.locator(f".lw-cmp-side-{which} .lw-tip-row")
    assert rows.count() == result.k
    for j in range(result.k):
        tid = int(result.topk_ids[b, site, col, j])
        assert int(rows.nth(j).get_attribute("data-id")) == tid
        assert float(rows.nth(j).get_attribute("data-prob")) == pytest.approx(float(result.topk_probs[b, site, col, j]), rel=1e-6)
        assert rows.nth(j).locator(".lw-tok").text_content() == display_token(result.token_strings[tid])


@pytest.fixture(scope="module")
def compared():
    w = LensWidget.compare(tiny("llama"), PROMPT_A, PROMPT_B, track=["e", "H"], progress=False)
    yield w
    w.close()


def test_the_diff_grid_recolours_by_every_compare_metric(open_page, compared):
    w = compared
    c = w.compared
    page = open_page(w.export_state())
    frames(page)
    root = page.locator(".lens-widget")
    assert root.get_attribute("data-view") == "compare"
    assert page.locator("input.lw-compare-toggle").is_checked()
    assert page.locator("select.lw-metric").input_value() == "js" and "exact" in page.locator(".lw-legend").text_content()
    seen = {}
    for metric in COMPARE_METRICS:
        page.select_option("select.lw-metric", metric)
        frames(page)
        assert root.get_attribute("data-metric") == metric
        assert assert_diff_colours(page, c, metric) >= c.n_sites * (c.n_positions - 1) - 2, metric
        seen[metric] = page.evaluate("() => document.querySelector('canvas.lw-canvas').toDataURL()")
    assert len(set(seen.values())) >= len(COMPARE_METRICS) - 1  # the grid really recolours
    # off: the plain grid of the prompt shown, its own metrics
    page.locator("input.lw-compare-toggle").uncheck()
    frames(page)
    assert root.get_attribute("data-view") != "compare" and page.evaluate("() => window.__lensModel.get('metric')") == "top1_prob"


def test_a_cell_where_b_is_below_a_is_drawn_below_the_middle_of_the_diverging_scale(open_page, compared):
    """The sign of each Δ on the page, against values read off results of the two prompts run alone
    (not ``c.metric()``): the cell where b is furthest below a is drawn in the lower (blue) half of
    the diverging scale, the one where b is furthest above in the upper (red) half."""
    from lens_widget import LogitLens

    w = compared
    c = w.compared
    lens = LogitLens(tiny("llama"), compile="never")
    ra, rb = lens.run(PROMPT_A, progress=False), lens.run(PROMPT_B, progress=False)
    ta, tb = len(PROMPT_A), len(PROMPT_B)  # one token per character, aligned on the last token
    ca = [ra.position_index(p) for p in range(ta - tb, ta)]
    cb = [rb.position_index(p) for p in range(tb)]
    np.testing.assert_array_equal(c.positions_a, np.arange(ta - tb, ta))
    with np.errstate(divide="ignore", invalid="ignore"):
        alone = {
            "d_next_prob": rb.next_prob[0][:, cb].astype(float) - ra.next_prob[0][:, ca],
            "d_top1_prob": rb.topk_probs[0][:, cb, 0].astype(float) - ra.topk_probs[0][:, ca, 0],
            "next_rank_log_ratio": np.log(rb.next_rank[0][:, cb].astype(float)) - np.log(ra.next_rank[0][:, ca].astype(float)),
        }
    page = open_page(w.export_state())
    frames(page)
    S, middle = c.n_sites, (N_COLORS - 1) / 2
    for metric, want in alone.items():
        want = np.where(np.isfinite(want), want, np.nan)
        page.select_option("select.lw-metric", metric)
        frames(page)
        px = grid_pixels(page, S, c.n_positions)
        low = np.unravel_index(np.nanargmin(want), want.shape)
        high = np.unravel_index(np.nanargmax(want), want.shape)
        assert want[low] < -1e-3 and want[high] > 1e-3, (metric, want[low], want[high])
        for (site, col), below in ((low, True), (high, False)):
            got, dist = nearest("div", px[(S - 1 - site, col)])
            assert dist <= 3, f"{metric}: ({site}, {col}) is not a diverging-scale colour"
            assert (got < middle) == below, f"{metric}: Δ {want[site, col]:+.4f} at ({site}, {col}) is drawn at index {got}"


def test_the_tooltip_shows_both_sides_and_a_click_pins_the_cell_on_both(open_page, compared):
    w = compared
    c = w.compared
    page = open_page(w.export_state())
    frames(page)
    page.select_option("select.lw-metric", "d_entropy")
    frames(page)
    S = c.n_sites
    for site, col in [(0, 0), (S - 1, c.n_positions - 1), (2, 3)]:
        tip = hover(page, site, col, S)
        assert_side(tip, "a", c.a, c.prompt_a, site, int(c.cols_a[col]))
        assert_side(tip, "b", c.b, c.prompt_b, site, int(c.cols_b[col]))
        assert tip.locator(".lw-cmp-side-a .lw-cmp-side-label").text_content() == f"a: {c.label_a}"
        assert tip.locator(".lw-cmp-side-b .lw-cmp-side-label").text_content() == f"b: {c.label_b}"
        assert tip.locator(".lw-cmp-js .lw-v").text_content() == js_fmt(float(c.js[site, col]))
        assert tip.locator(".lw-cmp-value .lw-v").text_content() == js_fmt(float(c.deltas["d_entropy"][site, col]))
        assert tip.locator(".lw-cmp-agree .lw-v").text_content() == ("agrees" if c.top1_agree[site, col] else "differs")
    # a click pins the diff cell: the chip names both sides' top-1
    page.mouse.click(*cell_xy(page, S - 1 - 2, 3))
    assert page.evaluate("() => window.__lensModel.get('pinned')") == [[2, 3]]
    chip = page.locator(".lw-chip")
    top = lambda r, b, col: display_token(r.token_strings[int(r.topk_ids[b, 2, col, 0])])  # noqa: E731
    assert chip.locator(".lw-pin-a").text_content() == top(c.a, c.prompt_a, int(c.cols_a[3]))
    assert chip.locator(".lw-pin-b").text_content() == top(c.b, c.prompt_b, int(c.cols_b[3]))
    # the detail panel shows both sides too
    assert page.locator(".lw-detail .lw-cmp-side-a .lw-tip-row").count() == c.a.k


def test_hostile_token_strings_and_labels_stay_text_on_both_sides(open_page):
    a = make_result(hostile=True, seed=0)
    b = make_result(hostile=True, seed=3)
    c = compare(a, b, labels=('<img src=x onerror="window.__pwned=1">', "</script><script>window.__pwned=2</script>"))
    w = LensWidget(comparison=c)
    try:
        page = open_page(w.export_state())
    finally:
        w.close()
    frames(page)
    seen: set[str] = set()
    for site in range(c.n_sites):
        for col in range(c.n_positions):
            tip = hover(page, site, col, c.n_sites)
            for which in ("a", "b"):
                seen |= set(tip.locator(f".lw-cmp-side-{which} .lw-tok").all_text_contents())
            assert tip.locator(".lw-cmp-side-a .lw-cmp-side-label").text_content() == f"a: {c.label_a}"
    assert page.evaluate("() => window.__pwned") is None
    assert page.dialogs == [] and page.errors == []
    assert page.locator(".lens-widget img").count() == 0
    hostile_shown = {display_token(s) for i, s in enumerate(HOSTILE_STRINGS) if i in a.topk_ids or i in b.topk_ids}
    assert hostile_shown and hostile_shown <= seen
    assert "approximation" in page.locator(".lw-legend").text_content()
