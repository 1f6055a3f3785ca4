"""examples/marimo_demo.py served by `marimo run`: the widget (mo.ui.anywidget) draws its grid,
clicking a cell re-runs the dependent cell, whose text names the clicked cell, and every request
the front end sends through marimo's transport (trajectory, cell detail, track, search, prompt)
gets its reply, with the numbers Python computes for the same cell."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from e2e_support import KERNEL_MS, UI_MS, cell_center, wait_canvas_drawn

pytestmark = [pytest.mark.browser, pytest.mark.slow]


PROMPT = "The capital of France is"
TRACKED = {"prob": "tracked_prob", "logit": "tracked_logit", "rank": "tracked_rank"}


def test_marimo_demo(browser, marimo_server, steps, smollm):
    from lens_widget import LogitLens

    truth = LogitLens(smollm).run(PROMPT, k=50, progress=False)  # what the app's kernel computes
    site, col = 29, 2
    page = steps.watch(browser.new_page(viewport={"width": 1300, "height": 1000}))
    # Playwright's CSS locators pierce marimo's shadow roots
    widget = page.locator(".lens-widget").first
    canvas = widget.locator("canvas.lw-canvas")
    # the dependent cell's output (marimo renders markdown paragraphs as span.paragraph)
    selected = page.locator(".paragraph, p", has_text="Selected cell:").first

    with steps("app runs, grid canvas drawn"):
        page.goto(marimo_server.url + "/", timeout=UI_MS * 2)
        canvas.wait_for(timeout=KERNEL_MS)
        canvas.scroll_into_view_if_needed(timeout=UI_MS)
        wait_canvas_drawn(page, canvas)
        assert "31 sites × 5 tokens" in widget.locator(".lw-title").inner_text()
        selected.wait_for(timeout=UI_MS)
        assert "none yet" in selected.inner_text(), selected.inner_text()

    with steps("hover shows the tooltip"):
        page.mouse.move(*cell_center(canvas, 0, 1), steps=2)  # final layer, column 1: " capital"
        tip = widget.locator(".lw-tooltip")
        tip.wait_for(state="visible", timeout=UI_MS)
        assert tip.locator(".lw-tip-head .lw-tok").inner_text() == "␣capital"

    with steps("click a cell, the dependent cell shows it"):
        page.mouse.click(*cell_center(canvas, 1, 2))  # row 1 = site 29 (layer 28), column 2
        page.wait_for_function(
            "el => el.textContent.includes('site 29') && el.textContent.includes('position 2')",
            arg=selected.element_handle(),
            timeout=KERNEL_MS,
        )
        text = selected.inner_text()
        assert "layer 28" in text and "␣of" in text, text

    with steps("trajectory reply: the chart's series are the kernel's numbers"):
        chart = widget.locator("canvas.lw-chart")
        page.wait_for_function(
            "el => { const s = el.dataset.series; return s && JSON.parse(s).length > 0 && JSON.parse(s).every(x => !x.partial); }",
            arg=chart.element_handle(timeout=UI_MS),
            timeout=KERNEL_MS,
        )
        series = json.loads(chart.get_attribute("data-series"))
        metric = chart.get_attribute("data-metric")
        ids = [s["id"] for s in series]
        traced = LogitLens(smollm).run(PROMPT, track=ids, progress=False)
        for m, s in enumerate(series):
            want = getattr(traced, TRACKED[metric])[0, :, col, m]
            np.testing.assert_allclose(np.array(s["values"], dtype=float), want, rtol=1e-3, atol=1e-6, err_msg=f"{metric} of {s['id']}")

    with steps("cell_detail reply: the full-vocabulary top-50 of the clicked cell"):
        widget.locator(".lw-more").click()
        full = widget.locator(".lw-full .lw-detail-row")
        full.nth(49).wait_for(timeout=KERNEL_MS)
        assert full.count() == 50
        got_ids = [int(i) for i in full.evaluate_all("rs => rs.map(r => r.dataset.id)")]
        got_p = [float(p) for p in full.evaluate_all("rs => rs.map(r => r.dataset.prob)")]
        assert got_ids == truth.topk_ids[0, site, col].tolist()
        np.testing.assert_allclose(got_p, truth.topk_probs[0, site, col], rtol=1e-3, atol=1e-7)

    with steps("track reply: a token from the detail is tracked"):
        tid = got_ids[20]
        full.nth(20).locator(".lw-track").click()
        page.wait_for_function(
            "([el, id]) => [...el.options].some(o => o.value === String(id))",
            arg=[widget.locator("select.lw-metric-token").element_handle(), tid],
            timeout=KERNEL_MS,
        )

    with steps("search reply: the exact match comes first"):
        search = widget.locator(".lw-search-input")
        search.fill(" Paris")
        search.press("Enter")
        exact = widget.locator(".lw-search-out .lw-match.lw-exact")
        exact.first.wait_for(timeout=KERNEL_MS)
        assert int(exact.first.get_attribute("data-id")) == smollm.tokens.token_id(" Paris")

    with steps("set_prompt reply: a new prompt recomputes the grid"):
        new = "Roses are red, violets are"
        box = widget.locator(".lw-prompt-input")
        box.fill(new)
        box.press("Enter")
        n = int(smollm.encode(new).lengths[0])
        page.wait_for_function(
            "([el, n]) => el.textContent.includes(`× ${n} tokens`)", arg=[widget.locator(".lw-title").element_handle(), n], timeout=KERNEL_MS
        )
        assert widget.locator(".lw-error").is_hidden()
        assert re.search(rf"31 sites × {n} tokens", widget.locator(".lw-title").inner_text())

    with steps("generate through marimo's transport: the grid grows by the model's own greedy tokens"):
        want = LogitLens(smollm).generate(new, max_new_tokens=3, progress=False)
        widget.locator(".lw-generate-n").fill("3")
        widget.locator(".lw-generate").click()
        page.wait_for_function(
            "([el, n]) => el.textContent.includes(`× ${n} tokens`)",
            arg=[widget.locator(".lw-title").element_handle(), n + 3],
            timeout=KERNEL_MS,
        )
        assert int(want.lengths[0]) == n + 3
        # the prompt box still holds the prompt; the generated tokens are the greedy ones
        page.mouse.move(*cell_center(canvas, 0, n + 1), steps=2)  # final layer, second generated column
        tip = widget.locator(".lw-tooltip")
        tip.wait_for(state="visible", timeout=UI_MS)
        assert tip.locator(".lw-tip-head .lw-tok").inner_text() == want.display(int(want.input_ids[0, n + 1]))
        assert widget.locator(".lw-error").is_hidden()

    with steps("no uncaught errors in the page"):
        steps.assert_no_page_errors()
