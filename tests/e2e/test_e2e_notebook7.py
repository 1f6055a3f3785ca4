"""The widget in Jupyter Notebook 7 (/notebooks/NB.ipynb): Run All from the menu, the grid draws,
hovering shows the tooltip with the prompt's tokens."""

from __future__ import annotations

import json

import pytest
from e2e_support import KERNEL_MS, UI_MS, cell_center, code_cell, notebook, wait_canvas_drawn
from jupyter_ui import menu, wait_all_ran, wait_kernel_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CELLS = [
    "from lens_widget import HookedModel\nfrom lens_widget.widget import LensWidget\nmodel = HookedModel.default()",
    'w = LensWidget(model, "The capital of France is", progress=False)\nw',
]


def test_widget_in_notebook7(browser, jupyter_server, steps):
    server = jupyter_server
    name = "nb7_e2e.ipynb"
    (server.root / name).write_text(json.dumps(notebook([code_cell(src, f"c{i}") for i, src in enumerate(CELLS)])))
    page = steps.watch(browser.new_page(viewport={"width": 1300, "height": 1000}))
    widget = page.locator(".lens-widget").first
    canvas = widget.locator("canvas.lw-canvas")

    with steps("open in Notebook 7, kernel idle"):
        page.goto(f"{server.url}/notebooks/{name}", timeout=UI_MS * 2)
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=UI_MS * 2)
        wait_kernel_idle(page, server, name)

    with steps("Run > Run All Cells"):
        menu(page, "Run", "Run All Cells")
        wait_all_ran(page, KERNEL_MS)

    with steps("grid canvas drawn"):
        widget.scroll_into_view_if_needed(timeout=UI_MS)
        wait_canvas_drawn(page, canvas)
        assert "31 sites × 5 tokens" in widget.locator(".lw-title").inner_text()

    with steps("hover shows the tooltip with token text"):
        canvas.scroll_into_view_if_needed()
        page.mouse.move(*cell_center(canvas, 0, 1), steps=2)  # final layer, column 1: " capital"
        tip = widget.locator(".lw-tooltip")
        tip.wait_for(state="visible", timeout=UI_MS)
        assert tip.locator(".lw-tip-head .lw-tok").inner_text() == "␣capital"
        assert tip.locator(".lw-tip-row").count() == 10  # k = 10 top tokens
        assert all(t.strip() for t in tip.locator(".lw-tip-row .lw-tok").all_inner_texts())

    with steps("no uncaught errors in the page"):
        steps.assert_no_page_errors()
