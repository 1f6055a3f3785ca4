"""The exported page of a finished generation, in headless Chromium with no kernel: the whole
grid (prompt + generated tokens) is there, the boundary is drawn, and the tooltip of a generated
column shows exactly what Python computed."""

from __future__ import annotations

import pytest
from browser_support import grid_geometry
from ui_support import cell_xy

from lens_widget.tokens import display_token
from lens_widget.widget import LensWidget
from zoo import tiny

pytestmark = pytest.mark.browser

PROMPT = "Hello"


@pytest.fixture(scope="module")
def finished():
    w = LensWidget(tiny("llama"), PROMPT, track=["o"], progress=False)
    w.send = lambda *a, **k: None
    w.generate(6, wait=True)
    yield w
    w.close()


def pixel(page, x: float, y: float) -> list[int]:
    """RGBA of the canvas at page point (x, y) (device scale 1)."""
    return page.evaluate(
        "([x, y]) => { const c = document.querySelector('canvas.lw-canvas'); const b = c.getBoundingClientRect();"
        " return Array.from(c.getContext('2d').getImageData(Math.round(x - b.left), Math.round(y - b.top), 1, 1).data); }",
        [x, y],
    )


def test_exported_generation_works_offline(open_page, finished):
    r = finished.result
    n0, P, S = len(PROMPT), r.n_positions, r.n_sites
    assert P == n0 + 6 and finished.data["generated_from"] == n0
    page = open_page(finished.export_state())
    root = page.locator(".lens-widget")
    assert root.get_attribute("data-n-positions") == str(P)
    assert root.get_attribute("data-generated-from") == str(n0)
    assert f"× {P} tokens" in page.locator(".lw-title").text_content()
    # no kernel: the generate controls hide themselves
    page.wait_for_function("document.querySelector('.lw-tasks').hidden === true")
    # a generated column's tooltip: Python's top-k there
    col = n0 + 3
    page.mouse.move(*cell_xy(page, 0, col))
    tip = page.locator(".lw-tooltip")
    tip.wait_for(state="visible")
    rows = tip.locator(".lw-tip-row")
    for j in range(r.k):
        tid = int(r.topk_ids[0, S - 1, col, j])
        assert int(rows.nth(j).get_attribute("data-id")) == tid
        assert float(rows.nth(j).get_attribute("data-prob")) == pytest.approx(float(r.topk_probs[0, S - 1, col, j]), rel=1e-6)
        assert rows.nth(j).locator(".lw-tok").text_content() == display_token(r.token_strings[tid])
    page.mouse.move(0, 0)
    # the boundary: a line in the header row before the first generated column, none before the one after it
    canvas = page.locator("canvas.lw-canvas")
    box, g = canvas.bounding_box(), grid_geometry(canvas)
    y = box["y"] + g["headH"] / 2
    left = lambda col: box["x"] + g["headW"] + g["colX"][col]  # noqa: E731
    at = pixel(page, left(n0) - 2, y)
    before = pixel(page, left(n0 - 1) - 2, y)
    after = pixel(page, left(n0 + 1) - 2, y)
    assert before == after != at
