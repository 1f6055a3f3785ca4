"""Shared fixtures: tests/ on sys.path (for `fakes`), tiny random models, the embedded model."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest


@pytest.fixture(scope="session")
def smollm():
    """The embedded SmolLM2-135M (real weights), loaded once per test session."""
    from lens_widget import HookedModel

    return HookedModel.default()


@pytest.fixture(scope="session")
def browser():
    """The one headless Chromium of the test session (Playwright's sync API allows one at a time)."""
    from browser_support import CHROMIUM, CHROMIUM_ARGS, require_browser_tools
    from playwright.sync_api import sync_playwright

    require_browser_tools()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
