"""Pages from real LensResults of the embedded SmolLM2: the demo command's file and hostile prompts."""

from __future__ import annotations

import subprocess
import sys

import pytest
from ui_support import cell_xy

from lens_widget import LogitLens
from lens_widget.tokens import display_token
from lens_widget.widget import LensWidget

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOSTILE_PROMPT = 'Say <img src=x onerror=alert(1)> then </script><script>window.__pwned=1</script> and "\'& javascript:alert(2)'


def load(browser, path):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.errors, page.dialogs = [], []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=15000)
    page.wait_for_function("document.querySelector('.lens-widget')?.dataset.firstPaintMs !== undefined")
    return page


def hover_rows(page, row, col):
    page.mouse.move(*cell_xy(page, row, col))
    tip = page.locator(".lw-tooltip")
    tip.wait_for(state="visible")
    rows = tip.locator(".lw-tip-row")
    return [(int(rows.nth(j).get_attribute("data-id")), float(rows.nth(j).get_attribute("data-prob"))) for j in range(rows.count())]


def test_demo_command_page_shows_the_grid(browser, tmp_path):
    out = tmp_path / "demo.html"
    proc = subprocess.run([sys.executable, "-m", "lens_widget", "demo", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    page = load(browser, out)
    assert page.locator("canvas.lw-canvas").count() == 1
    # top row is the final layer; the last column is "␣is", whose top-1 is ␣Paris
    top = hover_rows(page, 0, 4)
    assert page.locator(".lw-tooltip .lw-tip-row .lw-tok").first.text_content() == "␣Paris"
    assert top[0][1] == pytest.approx(0.77, abs=0.02)
    assert page.errors == [] and page.dialogs == []
    # the README's pictures are this page, light and dark: scripts/screenshots.py
    shot = page.screenshot(path=str(tmp_path / "widget.png"), full_page=True)
    assert len(shot) > 10_000


def test_hover_matches_python_and_hostile_tokens_stay_text(browser, tmp_path, smollm):
    r = LogitLens(smollm).run(HOSTILE_PROMPT, k=10, progress=False)
    path = LensWidget(result=r).save_html(tmp_path / "hostile.html")
    page = load(browser, path)
    # header tokens are drawn on canvas; the tooltip shows the hovered column's token as text
    site, col = r.n_sites - 1, 3
    got = hover_rows(page, 0, col)
    want = [(int(i), float(p)) for i, p in zip(r.topk_ids[0, site, col], r.topk_probs[0, site, col])]
    assert [g[0] for g in got] == [w[0] for w in want]
    assert [g[1] for g in got] == pytest.approx([w[1] for w in want], rel=1e-6)
    texts = page.locator(".lw-tooltip .lw-tip-row .lw-tok").all_text_contents()
    assert texts == [display_token(r.token(i)) for i, _ in want]
    # sweep the whole first row so every input token's string reaches the tooltip
    for c in range(min(r.n_positions, 18)):
        hover_rows(page, 0, c)
    assert page.evaluate("window.__pwned") is None
    assert page.dialogs == [] and page.errors == []
    assert page.locator(".lens-widget img").count() == 0 and page.locator(".lens-widget script").count() == 0


def test_save_html_of_a_model_backed_widget_restores_metric_pins_transpose_tracked(browser, tmp_path):
    """A widget with a model, changed as a user would, saved: the page opens in that state."""
    from zoo import tiny

    w = LensWidget(tiny("llama"), "Hello world", track=["H"], progress=False)
    e = w.track("o")
    w.metric, w.metric_token = "tracked_prob", e
    w.pinned = [[2, 3], [1, 7]]
    w.transpose = True
    r = w.result
    page = load(browser, w.save_html(tmp_path / "widget.html"))
    model = "window.__lensModel"
    assert page.evaluate(f"() => {model}.get('metric')") == "tracked_prob"
    assert page.evaluate(f"() => {model}.get('metric_token')") == e
    assert page.evaluate(f"() => {model}.get('pinned')") == [[2, 3], [1, 7]]
    assert page.evaluate(f"() => {model}.get('tracked')") == [w.model.tokens.token_id("H"), e]
    assert page.evaluate(f"() => {model}.get('busy')") is False
    assert page.locator("select.lw-metric").input_value() == "tracked_prob"
    assert page.locator("select.lw-metric-token").input_value() == str(e)
    assert page.locator(".lw-transpose input").is_checked()
    assert page.locator(".lens-widget").get_attribute("data-metric") == "tracked_prob"
    chips = page.locator(".lw-chip")
    assert [(chips.nth(i).get_attribute("data-site"), chips.nth(i).get_attribute("data-col")) for i in range(chips.count())] == [("2", "3"), ("1", "7")]
    # transposed grid (rows are positions, the first column is the final layer, row header 120 px):
    # the hovered cell is Python's cell, with its tracked probability in the tooltip
    site, col = r.n_sites - 2, 4
    page.mouse.move(*cell_xy(page, col, r.n_sites - 1 - site))
    tip = page.locator(".lw-tooltip")
    tip.wait_for(state="visible")
    assert (tip.get_attribute("data-site"), tip.get_attribute("data-col")) == (str(site), str(col))
    ids = [int(x) for x in tip.locator(".lw-tip-row").evaluate_all("rs => rs.map(r => r.dataset.id)")]
    assert ids == r.topk_ids[0, site, col].tolist()
    from lens_widget.scales import fmt as js_fmt  # format.ts fmt: how the tooltip prints a value

    assert tip.locator(".lw-metric .lw-v").text_content() == js_fmt(float(r.tracked(e)[0, site, col]))
    assert page.errors == [] and page.dialogs == []
    w.close()
