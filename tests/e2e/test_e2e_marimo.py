"""examples/marimo_demo.py served by `marimo run`: the widget (mo.ui.anywidget) draws its grid,
and clicking a cell re-runs the dependent cell, whose text names the clicked cell."""

from __future__ import annotations

import pytest
from e2e_support import KERNEL_MS, UI_MS, cell_center, wait_canvas_drawn

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_marimo_demo(browser, marimo_server, steps):
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
