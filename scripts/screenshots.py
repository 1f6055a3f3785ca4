"""Regenerate the README's pictures from the real widget, light and dark.

    python scripts/screenshots.py            # writes docs/widget.png and docs/widget-dark.png

Runs the demo command (the embedded SmolLM2, every shipped lens, one recorded pass), opens the
exported page in Debian's Chromium (Playwright) with the system colour scheme light, then dark,
hovers the last token's cell in the top row (the final layer), and saves the widget with its tooltip.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def shoot(page_path: Path, out: Path, scheme: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, color_scheme=scheme, device_scale_factor=1)
        page.goto(page_path.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=30000)
        canvas = page.locator("canvas.lw-canvas").first
        box = canvas.bounding_box()
        assert box is not None, "no grid canvas on the demo page"
        # the top row is the final layer; hover the last column's cell, a little inside the canvas edge
        page.mouse.move(box["x"] + box["width"] - 20, box["y"] + 40)
        page.locator(".lw-tooltip").first.wait_for(state="visible", timeout=5000)
        widget = page.locator(".lens-widget").first.bounding_box()
        tip = page.locator(".lw-tooltip").first.bounding_box()
        x0, y0 = min(widget["x"], tip["x"]), min(widget["y"], tip["y"])
        x1 = max(widget["x"] + widget["width"], tip["x"] + tip["width"])
        y1 = max(widget["y"] + widget["height"], tip["y"] + tip["height"])
        page.screenshot(path=str(out), clip={"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}, full_page=True)
        browser.close()
    print(f"wrote {out}")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "demo.html"
        subprocess.run([sys.executable, "-m", "lens_widget", "demo", "--out", str(html)], check=True)
        shoot(html, ROOT / "docs" / "widget.png", "light")
        shoot(html, ROOT / "docs" / "widget-dark.png", "dark")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
