"""Browser tests: headless Debian Chromium on pages written by `lens_widget.widget.export.standalone_html`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        uses_browser = {"browser", "open_page"} & set(getattr(item, "fixturenames", ()))
        if uses_browser and Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)


@pytest.fixture
def open_page(browser, tmp_path):
    """open_page(state, title=, viewport=, scale=, init_script=) -> a Playwright page showing the
    exported widget (file://). ``init_script`` runs before the page's own (e.g. a stand-in kernel
    that answers ``model.send``); the page is then awaited until it believes a kernel is there."""
    pages = []

    def _open(state: dict[str, Any], title: str = "lens_widget", viewport=(1100, 900), scale: float = 1,
              init_script: str | None = None):
        from lens_widget.widget.export import standalone_html

        path = tmp_path / f"page{len(pages)}.html"
        path.write_text(standalone_html(state, title=title), encoding="utf-8")
        page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]}, device_scale_factor=scale)
        page.errors, page.dialogs = [], []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
        if init_script is not None:
            page.add_init_script(init_script)
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=15000)
        page.wait_for_function("document.querySelector('.lens-widget')?.dataset.firstPaintMs !== undefined")
        if init_script is not None:
            page.wait_for_function("document.querySelector('.lens-widget')?.dataset.kernel === 'yes'")
        pages.append(page)
        return page

    yield _open
    errors = {i: p.errors for i, p in enumerate(pages) if p.errors}
    for p in pages:
        p.close()
    # every page a test opened: an uncaught error fails it, even where the test did not look
    assert not errors, f"uncaught errors in the pages: {errors}"
