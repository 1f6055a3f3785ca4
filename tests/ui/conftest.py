"""Browser tests: headless Debian Chromium on pages written by `lens_widget.export.standalone_html`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lens_widget.export import BUNDLE_PATH

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Geometry of the grid (js/src/grid.ts): not transposed.
HEAD_W, HEAD_H, CELL_W, CELL_H = 52, 22, 56, 20


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        uses_browser = {"browser", "open_page"} & set(getattr(item, "fixturenames", ()))
        if uses_browser and Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)


def require_bundle() -> None:
    if not BUNDLE_PATH.exists():
        pytest.fail(
            f"front-end bundle {BUNDLE_PATH} is missing: run `cd js && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci "
            "&& npm run build` before the browser tests",
            pytrace=False,
        )


def widget_state(result: Any, **over: Any) -> dict[str, Any]:
    state = {
        "data": result.to_wire(),
        "prompt": result.prompts[0],
        "metric": "top1_prob",
        "metric_token": -1,
        "diff_tokens": [int(i) for i in result.tracked_ids[:2]],
        "tracked": [int(i) for i in result.tracked_ids],
        "pinned": [],
        "selected": {},
        "transpose": False,
        "busy": False,
        "error": "",
        "height": 420,
    }
    state.update(over)
    return state


@pytest.fixture(scope="session")
def browser():
    require_bundle()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def open_page(browser, tmp_path):
    """open_page(state) -> a Playwright page showing the exported widget (file://)."""
    pages = []

    def _open(state: dict[str, Any], title: str = "lens_widget", viewport=(1100, 900), scale: float = 1):
        from lens_widget.export import standalone_html

        path = tmp_path / f"page{len(pages)}.html"
        path.write_text(standalone_html(state, title=title), encoding="utf-8")
        page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]}, device_scale_factor=scale)
        page.errors = []
        page.dialogs = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))

        def on_dialog(d):
            page.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", on_dialog)
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=15000)
        page.wait_for_function("document.querySelector('.lens-widget')?.dataset.firstPaintMs !== undefined")
        pages.append(page)
        return page

    yield _open
    for p in pages:
        p.close()


def cell_xy(page, row: int, col: int) -> tuple[float, float]:
    """Page coordinates of the centre of grid cell (display row, display column), no scroll."""
    box = page.locator("canvas.lw-canvas").bounding_box()
    return box["x"] + HEAD_W + col * CELL_W + CELL_W / 2, box["y"] + HEAD_H + row * CELL_H + CELL_H / 2
