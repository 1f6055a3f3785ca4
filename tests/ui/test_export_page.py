"""The exported page in headless Chromium: drawing, hover, pins, metrics, keyboard, hostile strings."""

from __future__ import annotations

import bisect
import json
import re

import numpy as np
import pytest
from browser_support import grid_geometry
from ui_support import assert_grid_colours, cell_xy, widget_state
from fakes import make_result

from lens_widget.widget.export import standalone_html
from lens_widget.tokens import display_token
from lens_widget.scales import fmt as js_fmt  # format.ts fmt: how the tooltip prints a value

pytestmark = pytest.mark.browser

NONBLANK = """() => {
  const c = document.querySelector('canvas.lw-canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] !== 255 || d[i+1] !== 255 || d[i+2] !== 255) n++;
  return n;
}"""


def frames(page, n: int = 2) -> None:
    page.evaluate(f"() => new Promise(r => {{ let k = {n}; const f = () => (--k ? requestAnimationFrame(f) : r()); requestAnimationFrame(f); }})")


def test_canvas_is_drawn(open_page):
    r = make_result(hostile=True)
    page = open_page(widget_state(r))
    frames(page)
    assert page.evaluate(NONBLANK) > 2000
    # every cell is drawn in the colour of Python's top-1 probability on the viridis scale
    assert assert_grid_colours(page, r, "top1_prob") == r.n_sites * r.n_positions
    with pytest.raises(AssertionError, match="palette index"):  # the check tells metrics apart
        assert_grid_colours(page, r, "entropy")
    assert page.errors == []


@pytest.mark.parametrize("site,col", [(4, 0), (4, 3), (2, 5), (0, 1)])
def test_hover_shows_python_topk(open_page, site, col):
    r = make_result(hostile=True)
    page = open_page(widget_state(r))
    frames(page)
    row = r.n_sites - 1 - site  # final layer on top
    page.mouse.move(*cell_xy(page, row, col))
    tip = page.locator(".lw-tooltip")
    tip.wait_for(state="visible")
    assert tip.get_attribute("data-site") == str(site) and tip.get_attribute("data-col") == str(col)
    rows = tip.locator(".lw-tip-row")
    assert rows.count() == r.k
    for j in range(r.k):
        tid = int(r.topk_ids[0, site, col, j])
        p = float(r.topk_probs[0, site, col, j])
        rj = rows.nth(j)
        assert int(rj.get_attribute("data-id")) == tid
        assert float(rj.get_attribute("data-prob")) == pytest.approx(p, rel=1e-6)
        assert rj.locator(".lw-prob").text_content() == f"{p:.4f}"
        assert rj.locator(".lw-tok").text_content() == display_token(r.token_strings[tid])
    stats = tip.locator(".lw-entropy").text_content()
    assert f"{float(r.entropy[0, site, col]):.3f}" in stats
    # KL and the next token's probability and rank: Python's numbers for this cell
    assert tip.locator(".lw-kl .lw-v").text_content() == f"{js_fmt(float(r.kl[0, site, col]))} nats"
    nxt = int(r.next_ids[0, col])
    if nxt >= 0:
        assert tip.locator(".lw-next .lw-tok").text_content() == display_token(r.token_strings[nxt])
        assert tip.locator(".lw-next .lw-v").text_content() == f" p={js_fmt(float(r.next_prob[0, site, col]))} rank {int(r.next_rank[0, site, col])}"
    else:
        assert "(last token)" in tip.locator(".lw-next").text_content()
    assert page.errors == []


@pytest.mark.parametrize("metric", ["tracked_prob", "logit_diff"])
def test_hover_shows_the_tracked_metric_of_python(open_page, metric):
    r = make_result(hostile=True)
    a, b = (int(i) for i in r.tracked_ids[:2])
    page = open_page(widget_state(r, metric=metric, metric_token=b, diff_tokens=[b, a]))
    frames(page)
    m = r.tracked_index(b)
    for site, col in ((4, 0), (2, 3), (0, 5)):
        page.mouse.move(*cell_xy(page, r.n_sites - 1 - site, col))
        tip = page.locator(".lw-tooltip")
        tip.wait_for(state="visible")
        assert (tip.get_attribute("data-site"), tip.get_attribute("data-col")) == (str(site), str(col))
        want = r.tracked_prob[0, site, col, m] if metric == "tracked_prob" else np.float32(r.tracked_logit[0, site, col, m]) - np.float32(r.tracked_logit[0, site, col, r.tracked_index(a)])
        assert tip.locator(".lw-metric .lw-v").text_content() == js_fmt(float(want))
    assert assert_grid_colours(page, r, metric, metric_token=b, diff_tokens=[b, a]) == r.n_sites * r.n_positions
    assert page.errors == []


def test_click_pins_and_selects(open_page):
    r = make_result(hostile=True)
    page = open_page(widget_state(r))
    frames(page)
    page.mouse.click(*cell_xy(page, 1, 2))  # site S-2, col 2
    state = page.evaluate("() => ({sel: window.__lensModel.get('selected'), pins: window.__lensModel.get('pinned')})")
    assert state["sel"] == {"site": r.n_sites - 2, "col": 2, "position": 2}
    assert state["pins"] == [[r.n_sites - 2, 2]]
    chip = page.locator(".lw-chip")
    assert chip.count() == 1
    assert chip.get_attribute("data-site") == str(r.n_sites - 2)
    # detail panel shows the same top-k
    ids = [int(x) for x in page.locator(".lw-detail-row").evaluate_all("rs => rs.map(r => r.dataset.id)")]
    assert ids == r.topk_ids[0, r.n_sites - 2, 2].tolist()


def test_metric_switch_recolours(open_page):
    r = make_result(hostile=True)
    state = widget_state(r)
    page = open_page(state)
    frames(page)
    before = page.evaluate("() => document.querySelector('canvas.lw-canvas').toDataURL()")
    for metric in ["entropy", "kl", "next_rank", "next_prob", "tracked_prob", "logit_diff"]:
        page.select_option("select.lw-metric", metric)
        frames(page)
        after = page.evaluate("() => document.querySelector('canvas.lw-canvas').toDataURL()")
        assert after != before, metric
        assert page.evaluate("() => window.__lensModel.get('metric')") == metric
        assert page.locator(".lens-widget").get_attribute("data-metric") == metric
        # each cell in the colour of Python's value on that metric's scale (no-value cells excepted)
        n = assert_grid_colours(page, r, metric, diff_tokens=state["diff_tokens"])
        assert n >= r.n_sites * (r.n_positions - (1 if metric.startswith("next") else 0)), (metric, n)
        before = after
    assert page.errors == []


def test_hostile_strings_stay_text(open_page):
    r = make_result(hostile=True)
    state = widget_state(r, error="<img src=x onerror=\"window.__pwned=2\">", prompt="</script><script>window.__pwned=3</script>")
    page = open_page(state, title="</title><script>window.__pwned=4</script>")
    frames(page)
    # hover every cell so every hostile top-k string is rendered in the tooltip
    seen = set()
    for row in range(r.n_sites):
        for col in range(r.n_positions):
            page.mouse.move(*cell_xy(page, row, col))
            seen.update(page.locator(".lw-tooltip .lw-tip-row .lw-tok").all_text_contents())
    page.mouse.click(*cell_xy(page, 0, 0))
    page.wait_for_timeout(100)
    assert page.evaluate("() => window.__pwned") is None
    assert page.dialogs == []
    assert page.errors == []
    # no element was created from data: the only <img> / extra <script> would be injected ones
    assert page.locator(".lens-widget img").count() == 0
    assert page.locator("script").count() == 3
    assert page.title() == "</title><script>window.__pwned=4</script>"
    assert page.locator(".lw-error").text_content() == state["error"]
    hostile_shown = {display_token(r.token_strings[i]) for i in range(8) if i in r.topk_ids}
    assert hostile_shown and hostile_shown <= seen
    assert 0 in r.topk_ids  # the <img> string is a top-k token of this result: it must have been shown
    assert "<img␣src=x␣onerror=alert(1)>" in seen


def test_exported_page_has_no_breakout_and_no_network():
    r = make_result(hostile=True)
    html = standalone_html(widget_state(r, prompt="</script><!--"), title="a<b>&c")
    assert "<title>a&lt;b&gt;&amp;c</title>" in html
    # the only closing script tags are ours
    assert len(re.findall(r"</script", html, re.I)) == 3
    assert "http://" not in html.split("<script", 1)[0] and "https://cdn" not in html
    m = re.search(r'<script type="application/json" id="lw-state">(.*?)</script>', html, re.S)
    state = json.loads(m.group(1))
    assert state["prompt"] == "</script><!--"
    arr = state["data"]["topk_ids"]
    assert set(arr) == {"dtype", "shape", "b64"}


def test_keyboard_navigation(open_page):
    r = make_result(hostile=True)
    page = open_page(widget_state(r))
    frames(page)
    page.mouse.click(*cell_xy(page, 0, 0))  # selects (and pins) final layer, col 0
    page.keyboard.press("Escape")
    assert page.evaluate("() => window.__lensModel.get('pinned')") == []
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    sel = page.evaluate("() => window.__lensModel.get('selected')")
    assert sel == {"site": r.n_sites - 2, "col": 2, "position": 2}
    page.keyboard.press("Enter")
    assert page.evaluate("() => window.__lensModel.get('pinned')") == [[r.n_sites - 2, 2]]
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    assert page.evaluate("() => window.__lensModel.get('pinned')") == [[r.n_sites - 2, 2], [r.n_sites - 1, 2]]
    page.keyboard.press("Escape")
    assert page.evaluate("() => window.__lensModel.get('pinned')") == []


#: what each kernel-only control of the front end is (a request only the kernel answers)
KERNEL_ONLY = {
    "run (the prompt box)": "form.lw-prompt button[type=submit]",
    "generate": ".lw-generate",
    "new tokens": ".lw-generate-n",
    "stop": ".lw-stop",
    "search box": ".lw-search-input",
    "search": "form.lw-search button[type=submit]",
    "full vocabulary detail": ".lw-detail .lw-more",
    "track (detail panel)": ".lw-detail .lw-track",
}
#: controls the page answers by itself (everything is in the page's data)
CLIENT_SIDE = ("lw-lens", "lw-prompt-select", "lw-metric", "lw-metric-token", "lw-diff-a", "lw-diff-b", "lw-compare-toggle",
               "lw-traj-metric", "lw-chip-label", "lw-chip-x", "lw-chart-toggle", "transpose",
               "lw-patch-side", "lw-patch-cone-toggle",  # which grid of a patch, and its cone: drawn here
               "lw-figure-svg", "lw-figure-png",  # figures of the grid shown: drawn from the page's data
               "lw-zoom-out", "lw-zoom-level", "lw-zoom-in", "lw-compact", "lw-fit", "lw-range-from", "lw-range-to", "lw-range-all")  # the grid's size

ENABLED_CONTROLS = """() => [...document.querySelectorAll('.lens-widget button, .lens-widget input, .lens-widget select, .lens-widget textarea')]
  .filter(e => !e.disabled && !(e.tagName === 'INPUT' && e.readOnly))
  .map(e => e.className || (e.closest('label')?.textContent.trim() ?? e.tagName))"""


def test_no_kernel_only_control_is_enabled_in_an_exported_page(open_page, tmp_path):
    """An exported page (no kernel): every kernel-only control is disabled with a title saying
    why, the prompt box is read-only, and what stays enabled is what the page answers alone."""
    from lens_widget.widget import LensWidget
    from zoo import tiny

    w = LensWidget(tiny("llama"), "Hello world", track=["H"], progress=False)
    page = open_page(w.export_state())
    w.close()
    frames(page)
    page.mouse.click(*cell_xy(page, 1, 2))  # the detail panel: "full vocabulary detail" and track buttons appear
    page.wait_for_selector(".lw-detail .lw-more")
    frames(page)
    for name, sel in KERNEL_ONLY.items():
        loc = page.locator(sel)
        assert loc.count() >= 1, name
        for i in range(loc.count()):
            c = loc.nth(i)
            assert c.is_disabled(), name
            assert "needs a kernel" in (c.get_attribute("title") or ""), name
    prompt = page.locator(".lw-prompt-input")
    assert not prompt.is_editable() and prompt.input_value() == "Hello world"
    prompt.press("Enter")  # nothing to run it: no request, no "no kernel" error left on screen
    gen = page.locator(".lw-generate")
    assert gen.is_disabled()  # and the task bar is hidden: no real click can reach it
    if gen.is_visible():
        gen.click(force=True)  # a disabled button: no "generating…" either
    frames(page)
    assert page.locator(".lw-error:not([hidden])").count() == 0, page.locator(".lw-error:not([hidden])").all_inner_texts()
    assert "generating" not in page.locator(".lens-widget").inner_text()
    # everything still enabled is one of the page's own controls
    enabled = page.evaluate(ENABLED_CONTROLS)
    assert enabled and all(any(c in name for c in CLIENT_SIDE) for name in enabled), [n for n in enabled if not any(c in n for c in CLIENT_SIDE)]
    frames(page)
    assert page.evaluate(NONBLANK) > 2000  # the grid is drawn as ever


def test_the_title_says_which_positions_the_grid_holds(open_page):
    from lens_widget.widget import LensWidget
    from zoo import tiny

    text = "Hello world, again"  # one token per character: 18 tokens
    for positions, note in (("last:8", "positions 10–17 of 18"), ("last-3", "position 14 of 18"), ("all", None)):
        w = LensWidget(tiny("llama"), text, positions=positions, progress=False)
        cols = w.result.positions[0].tolist()
        page = open_page(w.export_state())
        w.close()
        title = page.locator(".lw-title").text_content()
        if note is None:
            assert cols == list(range(18)) and "position" not in title, title
        else:
            assert note in title and str(cols[0]) in note and str(cols[-1]) in note, title


def test_big_grid_scrolls_and_final_layer_stays(open_page):
    r = make_result(n_sites=31, n_positions=512, k=10, vocab=300, seed=1)
    page = open_page(widget_state(r, height=300))
    frames(page)
    page.evaluate("() => { const v = document.querySelector('.lw-viewport'); v.scrollTop = 200; v.scrollLeft = 5000; }")
    frames(page)
    assert page.evaluate(NONBLANK) > 10000
    # final layer row is frozen: hovering just under the header still shows the final site
    g = grid_geometry(page.locator("canvas.lw-canvas"))  # columns are as wide as their text
    box = page.locator("canvas.lw-canvas").bounding_box()
    x, y = box["x"] + g["headW"] + (g["colX"][3] + g["colX"][4]) / 2, box["y"] + g["headH"] + g["rowH"] / 2
    page.mouse.move(x, y)
    tip = page.locator(".lw-tooltip")
    tip.wait_for(state="visible")
    assert tip.get_attribute("data-site") == str(r.n_sites - 1)
    col = bisect.bisect_right(g["colX"], 5000 + (g["colX"][3] + g["colX"][4]) / 2) - 1
    assert tip.get_attribute("data-col") == str(col)
    ids = [int(x) for x in tip.locator(".lw-tip-row").evaluate_all("rs => rs.map(r => r.dataset.id)")]
    assert ids == r.topk_ids[0, -1, col].tolist()


def test_transpose(open_page):
    r = make_result(hostile=True)
    page = open_page(widget_state(r))
    page.click(".lw-more-summary")  # transpose is in the toolbar's "more" menu
    page.check(".lw-transpose input")
    frames(page)
    assert page.evaluate("() => window.__lensModel.get('transpose')") is True
    # transposed: rows are positions, first column is the final layer, row header 120 px wide
    assert grid_geometry(page.locator("canvas.lw-canvas"))["headW"] == 120
    page.mouse.move(*cell_xy(page, 3, 1))
    tip = page.locator(".lw-tooltip")
    tip.wait_for(state="visible")
    assert (tip.get_attribute("data-site"), tip.get_attribute("data-col")) == (str(r.n_sites - 2), "3")


def test_nonfinite_cells_are_hatched(open_page):
    r = make_result()
    r.nonfinite[0, 2, 1] = True
    page = open_page(widget_state(r))
    frames(page)
    x, y = cell_xy(page, r.n_sites - 1 - 2, 1)
    box = page.locator("canvas.lw-canvas").bounding_box()
    colors = page.evaluate(
        """([x, y]) => { const c = document.querySelector('canvas.lw-canvas'); const s = c.width / c.getBoundingClientRect().width;
        const d = c.getContext('2d').getImageData(Math.round((x - 20) * s), Math.round((y - 6) * s), Math.round(40 * s), Math.round(12 * s)).data;
        const set = new Set(); for (let i = 0; i < d.length; i += 4) set.add(d[i] + ',' + d[i+1] + ',' + d[i+2]); return [...set]; }""",
        [x - box["x"], y - box["y"]],
    )
    assert "187,187,187" in colors and "102,102,102" in colors  # the hatch pattern's two greys
    page.mouse.move(x, y)
    page.locator(".lw-tooltip .lw-warn").wait_for(state="visible")


def test_device_pixel_ratio(open_page):
    r = make_result(hostile=True)
    page = open_page(widget_state(r), scale=2)
    frames(page)
    w, css_w = page.evaluate("() => { const c = document.querySelector('canvas.lw-canvas'); return [c.width, c.getBoundingClientRect().width]; }")
    assert w == round(2 * css_w)
    page.mouse.move(*cell_xy(page, 0, 4))
    tip = page.locator(".lw-tooltip")
    tip.wait_for(state="visible")
    assert (tip.get_attribute("data-site"), tip.get_attribute("data-col")) == (str(r.n_sites - 1), "4")


def test_theme_change_redraws(open_page):
    page = open_page(widget_state(make_result(hostile=True)))
    frames(page)
    before = page.evaluate("() => document.querySelector('canvas.lw-canvas').toDataURL()")
    page.evaluate("""() => { const s = document.createElement('style');
        s.textContent = 'body[data-jp-theme-light=false] { --jp-layout-color0: #111111; --jp-layout-color2: #222222; --jp-ui-font-color0: #eeeeee; }';
        document.head.appendChild(s); document.body.dataset.jpThemeLight = 'false'; }""")
    frames(page, 3)
    assert page.evaluate("() => document.querySelector('canvas.lw-canvas').toDataURL()") != before
