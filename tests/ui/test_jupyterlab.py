"""The widget in a real JupyterLab 4 and Notebook 7 (127.0.0.1) with a live kernel and a tiny random model.

Checks the real transport: the `data` trait's bytes arrive as DataViews, clicks reach the kernel's
`selected` trait, and every request (trajectory, cell_detail, track, search, set_prompt) round-trips
with binary reply buffers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from browser_support import CELL_H, CELL_W, HEAD_H, HEAD_W
from jupyter_server import running_jupyter, unexpected_page_errors

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

# What every cell starts with: the tests' helpers importable, and dump() writing JSON for the test.
PREAMBLE = """\
import sys, json
sys.path.insert(0, {tests!r}); sys.path.insert(0, {root!r})
from lens_widget.widget import LensWidget
OUT = {out!r}
def dump(name, value):
    with open(OUT + name, "w") as f:
        json.dump(value, f)
"""

CELL = PREAMBLE + """\
from zoo import tiny
w = LensWidget(tiny("gpt2"), "hello world", progress=False)
w.observe(lambda ch: dump(".selected", ch["new"]), names=["selected"])
w.observe(lambda ch: dump(".tracked", list(ch["new"])), names=["tracked"])
dump(".truth", {{"topk": w.result.topk_ids[0].tolist(), "S": w.result.n_sites}})
w
"""

# Two lenses over a batch of two prompts: the lens switch and the prompt selector, live.
CELL_LENSES = PREAMBLE + """\
from zoo import AffineLens, tiny
m = tiny("gpt2")
w = LensWidget(m, ["hello world", "abc"], decoders={{"logit": None, "tuned": AffineLens(m)}}, progress=False)
w.observe(lambda ch: dump(".view", [w.lens, w.prompt_index, w.data["lens_name"], w.data["prompt"]]), names=["data"])
dump(".truth", {{label: r.topk_ids.tolist() for label, r in w.results.items()}})
w
"""

APPS = {
    # app -> (python -m module, page path)
    "jupyterlab": ("jupyterlab", "/lab/tree/lens.ipynb?reset"),
    "notebook7": ("notebook", "/notebooks/lens.ipynb"),
}


@pytest.fixture(scope="module", params=sorted(APPS))
def lab(request, tmp_path_factory):
    """The app's server (tests/jupyter_server.py, the helper tests/e2e uses too) with lens.ipynb."""
    yield from _serve(tmp_path_factory.mktemp(request.param), *APPS[request.param], CELL)


@pytest.fixture(scope="module")
def lab_lenses(tmp_path_factory):
    yield from _serve(tmp_path_factory.mktemp("lenses"), *APPS["jupyterlab"], CELL_LENSES)


def _serve(tmp, module: str, url: str, cell: str):
    """A notebook of one cell (``cell``) served by ``module`` on 127.0.0.1: yields (page url, output prefix)."""
    out = str(tmp / "out")
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [],
                   "source": cell.format(tests=str(ROOT / "tests"), root=str(ROOT), out=out)}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    with running_jupyter(tmp, module) as server:
        (server.root / "lens.ipynb").write_text(json.dumps(nb))
        yield server.url + url, out


def _read(path: str, timeout: float = 30.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            time.sleep(0.1)
    raise AssertionError(f"{path} was never written")


def _run_first_cell(page) -> None:
    """Run the notebook's cell once the kernel is up (retrying if the key press was swallowed)."""
    page.locator(".jp-Cell .cm-content").first.wait_for(timeout=60000)
    try:
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(state="attached", timeout=60000)
    except Exception:  # older/newer toolbars: fall through to the retry loop
        pass
    prompt = page.locator(".jp-Cell .jp-InputPrompt").first
    for _ in range(4):
        dialog = page.locator(".jp-Dialog")
        if dialog.count():  # e.g. a kernel chooser: accept the default (Python 3)
            print("dialog:", dialog.first.text_content())
            dialog.first.locator(".jp-mod-accept").first.click()
        page.locator(".jp-Cell .cm-content").first.click()
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function(
                "el => /\\[(\\*|\\d+)\\]/.test(el.textContent)", arg=prompt.element_handle(), timeout=15000
            )
            return
        except Exception:
            continue
    raise AssertionError("could not run the notebook cell: " + str(prompt.text_content()))


def test_widget_in_jupyter(browser, lab):
    url, out = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"{e} @ {(e.stack or '')[:600]}"))
    try:
        page.goto(url, timeout=60000)
        _run_first_cell(page)
        canvas = page.locator(".lens-widget canvas.lw-canvas")
        canvas.wait_for(timeout=120000)
        page.wait_for_function("document.querySelector('.lens-widget')?.dataset.firstPaintMs !== undefined")
        truth = _read(out + ".truth")
        S = truth["S"]

        # hover: tooltip shows the kernel's top-k (the data trait's buffers arrived intact)
        box = canvas.bounding_box()
        x, y = box["x"] + HEAD_W + 2 * CELL_W + CELL_W / 2, box["y"] + HEAD_H + CELL_H / 2
        page.mouse.move(x, y)
        tip = page.locator(".lens-widget .lw-tooltip")
        tip.wait_for(state="visible")
        ids = [int(i) for i in tip.locator(".lw-tip-row").evaluate_all("rs => rs.map(r => r.dataset.id)")]
        assert ids == truth["topk"][S - 1][2]

        # click: the kernel sees `selected`
        page.mouse.click(x, y)
        assert _read(out + ".selected") == {"site": S - 1, "col": 2, "position": 2}

        # trajectory: every chosen token gets a full (non-partial) series from the kernel
        page.wait_for_function(
            "() => { const s = document.querySelector('.lens-widget canvas.lw-chart')?.dataset.series;"
            " return s && JSON.parse(s).length > 0 && JSON.parse(s).every(x => !x.partial); }",
            timeout=30000,
        )
        # full-vocabulary detail (cell_detail) and tracking a token from it (track)
        page.locator(".lens-widget .lw-more").click()
        full = page.locator(".lens-widget .lw-full .lw-detail-row")
        full.first.wait_for(timeout=30000)
        assert full.count() == 50
        tid = int(full.nth(20).get_attribute("data-id"))
        full.nth(20).locator(".lw-track").click()
        page.wait_for_function(
            f"() => [...document.querySelectorAll('.lens-widget select.lw-metric-token option')].some(o => o.value === '{tid}')",
            timeout=30000,
        )
        assert tid in _read(out + ".tracked")

        # search
        page.fill(".lens-widget .lw-search-input", "h")
        page.press(".lens-widget .lw-search-input", "Enter")
        page.wait_for_function("() => !document.querySelector('.lens-widget .lw-search-out').textContent.includes('searching')", timeout=30000)
        assert page.locator(".lens-widget .lw-match").count() > 0, page.locator(".lens-widget .lw-search-out").text_content()

        # a new prompt recomputes the grid; a bad request shows its error and keeps the grid
        page.fill(".lens-widget .lw-prompt-input", "hi there")
        page.press(".lens-widget .lw-prompt-input", "Enter")
        page.wait_for_function("() => document.querySelector('.lens-widget .lw-title').textContent.includes('× 8 tokens')", timeout=60000)
        page.fill(".lens-widget .lw-prompt-input", "")
        page.press(".lens-widget .lw-prompt-input", "Enter")
        page.locator(".lens-widget .lw-error:not([hidden])").wait_for(timeout=30000)
        assert "× 8 tokens" in page.locator(".lens-widget .lw-title").text_content()
        # every uncaught error in the page fails the test, except the host's own listed ones
        assert unexpected_page_errors(errors) == [], errors
    finally:
        page.close()


def test_lens_switch_and_prompt_selector_in_jupyterlab(browser, lab_lenses):
    """The front end's choice reaches the kernel (``data`` follows it) and the kernel's answers
    (cell_detail) are for the lens and prompt shown."""
    url, out = lab_lenses
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"{e} @ {(e.stack or '')[:600]}"))
    try:
        page.goto(url, timeout=60000)
        _run_first_cell(page)
        canvas = page.locator(".lens-widget canvas.lw-canvas")
        canvas.wait_for(timeout=120000)
        truth = _read(out + ".truth")
        S = len(truth["logit"][0])
        page.select_option(".lens-widget select.lw-lens", "tuned")
        page.select_option(".lens-widget select.lw-prompt-select", "1")
        end = time.time() + 30
        while _read(out + ".view") != ["tuned", 1, "tuned lens", "abc"] and time.time() < end:
            time.sleep(0.2)
        assert _read(out + ".view") == ["tuned", 1, "tuned lens", "abc"]
        box = canvas.bounding_box()
        page.mouse.click(box["x"] + HEAD_W + 2 * CELL_W + CELL_W / 2, box["y"] + HEAD_H + CELL_H / 2)  # final layer, col 2
        page.locator(".lens-widget .lw-detail .lw-tip-lens").wait_for(timeout=30000)
        assert page.locator(".lens-widget .lw-detail .lw-tip-lens").text_content() == "tuned"
        page.locator(".lens-widget .lw-more").click()
        full = page.locator(".lens-widget .lw-full .lw-detail-row")
        full.first.wait_for(timeout=30000)
        ids = [int(i) for i in full.evaluate_all("rs => rs.map(r => r.dataset.id)")]
        k = len(truth["tuned"][1][S - 1][2])
        assert ids[:k] == truth["tuned"][1][S - 1][2] != truth["logit"][1][S - 1][2]
        ours = [e for e in errors if "blob:" in e or "data:text/javascript" in e or "anywidget" in e]
        assert ours == [], ours
    finally:
        page.close()
