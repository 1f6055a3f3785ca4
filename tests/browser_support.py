"""What every browser test shares: Debian's Chromium, its launch flags, the grid's geometry."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Playwright's own browser download does not work here; without the networking flags Chromium
# keeps trying (and failing) to reach Google's hosts.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The grid's geometry (js/src/grid.ts publishes it as the viewport's data-geometry): header sizes,
# the row height, and the columns' left edges (columns are as wide as their text). Every Grid does:
# the main one (`.lw-viewport`) and those beside it, the sweep's and the other prompt's
# (js/src/subgrid.ts: `.lw-subgrid-viewport`); a helper is given the canvas of the grid it means.
VIEWPORT = "c.closest('.lw-viewport, .lw-subgrid-viewport')"
GEOMETRY_JS = f"c => JSON.parse({VIEWPORT}.dataset.geometry)"
SCROLL_LEFT_JS = f"c => {VIEWPORT}.scrollLeft"


def grid_geometry(canvas) -> dict:
    """``{headW, headH, rowH, colX, ...}`` of the grid whose canvas is ``canvas`` (a Playwright locator)."""
    return canvas.evaluate(GEOMETRY_JS)


def scroll_grid_to(canvas, left: float) -> None:
    """Scroll the grid's box horizontally to ``left`` and wait for the redraw."""
    canvas.evaluate(
        f"(c, left) => new Promise(r => {{ {VIEWPORT}.scrollLeft = left; requestAnimationFrame(() => requestAnimationFrame(r)); }})",
        left,
    )


def cell_center(canvas, row: int, col: int, geometry: dict | None = None) -> tuple[float, float]:
    """Page coordinates of the centre of a grid cell (display row, column; not transposed, row 0
    is the final layer, frozen at the top). A column not wholly in view (columns are as wide as
    their text) is scrolled to first: the grid scrolls back to its start when the column fits there."""
    box = canvas.bounding_box()
    assert box, "grid canvas has no bounding box (not displayed)"
    g = geometry or grid_geometry(canvas)
    hw, x0, x1 = g["headW"], g["colX"][col], g["colX"][col + 1]
    frozen = g.get("transpose") and col == 0  # the final layer's column stays put when transposed
    shift = 0 if frozen else canvas.evaluate(SCROLL_LEFT_JS)
    if not frozen and (hw + x0 - shift < hw or hw + x1 - shift > box["width"]):
        scroll_grid_to(canvas, 0 if hw + x1 <= box["width"] else x0)
        shift = canvas.evaluate(SCROLL_LEFT_JS)
    return box["x"] + hw + (x0 + x1) / 2 - shift, box["y"] + g["headH"] + row * g["rowH"] + g["rowH"] / 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_bundle() -> None:
    from lens_widget.widget.export import BUNDLE_PATH

    if not BUNDLE_PATH.exists():
        pytest.fail(
            f"front-end bundle {BUNDLE_PATH} is missing: run `bash scripts/setup.sh` "
            "(or `cd js && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci && npm run build`)",
            pytrace=False,
        )


def require_browser_tools() -> None:
    require_bundle()
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's chromium or set CHROMIUM_PATH "
            "(or deselect these tests with -m 'not browser')",
            pytrace=False,
        )
