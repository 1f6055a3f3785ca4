"""The widget in a real JupyterLab 4 and Notebook 7 (127.0.0.1) with a live kernel and a tiny random model.

Checks the real transport: the `data` trait's bytes arrive as DataViews, clicks reach the kernel's
`selected` trait, and every request (trajectory, cell_detail, track, search, set_prompt) round-trips
with binary reply buffers.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from browser_support import cell_center
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


@contextlib.contextmanager
def _lab_page(browser, url: str, height: int = 1000) -> Iterator[tuple[Any, Any, list[str]]]:
    """A page on the notebook at ``url`` whose first cell has run and drawn its grid: ``(page, the
    grid's canvas, the page's uncaught errors so far and to come)``; closed at the end."""
    page = browser.new_page(viewport={"width": 1400, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"{e} @ {(e.stack or '')[:600]}"))
    try:
        page.goto(url, timeout=60000)
        canvas = page.locator(".lens-widget canvas.lw-canvas")
        _run_until_drawn(page, canvas)
        yield page, canvas, errors
    finally:
        page.close()


def _run_until_drawn(page, canvas, attempts: int = 2) -> None:
    """Run the notebook's first cell once the kernel is up (``_press_run`` retries a swallowed key
    press) and wait for the widget's grid. Under load a host can lose the first messages on a
    kernel websocket it is still making: jupyter_server may answer a new kernel's first websocket
    with a 500, and an execute request sent on the lost connection never runs (the cell stays at
    [*]); or the widget's first comm messages are lost, and the output area shows but the view
    never gets its model ("Loading widget..."). Either way, reload the page (a new connection to
    the same kernel) and run the cell again, once; if the grid still does not draw, fail with what
    the cell's output area says."""
    for attempt in range(attempts):
        _press_run(page)
        try:
            canvas.wait_for(timeout=180000)
            return
        except Exception:
            outputs = page.evaluate(
                "() => [...document.querySelectorAll('.jp-Cell .jp-OutputArea-output')].map(e => e.textContent.slice(0, 400))"
            )
            if attempt + 1 == attempts:
                raise AssertionError(f"the widget's grid never drew; the cell's outputs: {outputs}") from None
            print("no grid after the cell ran, its outputs:", outputs, "- reloading the page and running it again")
            page.reload(timeout=60000)


def _press_run(page) -> None:
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
    with _lab_page(browser, url) as (page, canvas, errors):
        page.wait_for_function("document.querySelector('.lens-widget')?.dataset.firstPaintMs !== undefined")
        truth = _read(out + ".truth")
        S = truth["S"]

        # hover: tooltip shows the kernel's top-k (the data trait's buffers arrived intact)
        x, y = cell_center(canvas, 0, 2)
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


def test_lens_switch_and_prompt_selector_in_jupyterlab(browser, lab_lenses):
    """The front end's choice reaches the kernel (``data`` follows it) and the kernel's answers
    (cell_detail) are for the lens and prompt shown."""
    url, out = lab_lenses
    with _lab_page(browser, url) as (page, canvas, errors):
        truth = _read(out + ".truth")
        S = len(truth["logit"][0])
        page.select_option(".lens-widget select.lw-lens", "tuned")
        page.select_option(".lens-widget select.lw-prompt-select", "1")
        end = time.time() + 30
        while _read(out + ".view") != ["tuned", 1, "tuned lens", "abc"] and time.time() < end:
            time.sleep(0.2)
        assert _read(out + ".view") == ["tuned", 1, "tuned lens", "abc"]
        page.mouse.click(*cell_center(canvas, 0, 2))  # final layer, col 2
        page.locator(".lens-widget .lw-detail .lw-tip-lens").wait_for(timeout=30000)
        assert page.locator(".lens-widget .lw-detail .lw-tip-lens").text_content() == "tuned"
        page.locator(".lens-widget .lw-more").click()
        full = page.locator(".lens-widget .lw-full .lw-detail-row")
        full.first.wait_for(timeout=30000)
        ids = [int(i) for i in full.evaluate_all("rs => rs.map(r => r.dataset.id)")]
        k = len(truth["tuned"][1][S - 1][2])
        assert ids[:k] == truth["tuned"][1][S - 1][2] != truth["logit"][1][S - 1][2]
        # every uncaught error in the page fails the test, except the host's own listed ones
        assert unexpected_page_errors(errors) == [], errors


# Generation, live: a tiny model slowed down (its final norm sleeps, so every lens chunk and every
# step takes a while) so that the page can watch the grid grow, and stop it half way.
CELL_GENERATE = PREAMBLE + """\
import time
from zoo import tiny
from lens_widget import LogitLens
from lens_widget.arch import get_path
m = tiny("gpt2")
get_path(m.model, m.arch.final_norm).register_forward_hook(lambda *a: time.sleep(0.04))
w = LensWidget(m, "hello", progress=False, memory_budget=13 * 101 * 2)
def done(ch):
    r = w.result
    ids = r.input_ids[0, : r.lengths[0]].tolist()
    ref = LogitLens(m, compile="never").run([ids], progress=False)
    dump(".data", {{"n": w.data["n_positions"], "ids": ids, "prompt": r.prompts[0], "generated_from": w.data["generated_from"],
                   "topk": r.topk_ids[0].tolist(), "ref_topk": ref.topk_ids[0].tolist(), "S": r.n_sites}})
w.observe(done, names=["data"])
w
"""


@pytest.fixture(scope="module", params=sorted(APPS))
def lab_generate(request, tmp_path_factory):
    yield from _serve(tmp_path_factory.mktemp(f"generate-{request.param}"), *APPS[request.param], CELL_GENERATE)


def _root_state(page) -> dict:
    return page.evaluate(
        "() => { const r = document.querySelector('.lens-widget'); return {n: Number(r.dataset.nPositions), task: r.dataset.task || '',"
        " kind: r.dataset.taskKind || '', progress: r.dataset.progress || '', text: r.querySelector('.lw-progress-text').textContent,"
        " title: r.querySelector('.lw-title').textContent, stop: !r.querySelector('.lw-stop').hidden}; }"
    )


def test_generation_grows_live_and_stop_keeps_it_in_jupyter(browser, lab_generate):
    """JupyterLab and Notebook 7: the grid grows before the generation ends, stop keeps it, a long
    recompute shows progress and stops, and the widget keeps working."""
    url, out = lab_generate
    with _lab_page(browser, url) as (page, canvas, errors):
        page.wait_for_function("document.querySelector('.lens-widget')?.dataset.nPositions === '5'", timeout=60000)

        # generate 40 tokens: the grid grows while the kernel still writes
        page.fill(".lens-widget .lw-generate-n", "40")
        page.click(".lens-widget .lw-generate")
        page.wait_for_function(
            "() => { const r = document.querySelector('.lens-widget'); return Number(r.dataset.nPositions) >= 8 && r.dataset.task === 'running'; }",
            timeout=60000,
        )
        mid = _root_state(page)
        assert mid["task"] == "running" and mid["stop"] and mid["kind"] == "generate", mid
        assert mid["text"].startswith("generating ") and "/ 40 tokens" in mid["text"], mid
        assert 8 <= mid["n"] < 45
        # the boundary: generated tokens start after the prompt
        assert page.evaluate("document.querySelector('.lens-widget').dataset.generatedFrom") == "5"

        # stop half way: the tokens so far stay, the stop button goes
        page.click(".lens-widget .lw-stop")
        page.wait_for_function("document.querySelector('.lens-widget').dataset.task === 'stopped'", timeout=60000)
        final = _read(out + ".data")
        end = time.time() + 30
        while _root_state(page)["n"] != final["n"] and time.time() < end:  # the finished `data` trait lands
            time.sleep(0.2)
            final = _read(out + ".data")
        after = _root_state(page)
        assert not after["stop"] and "stopped" in after["text"], after
        assert mid["n"] <= after["n"] == final["n"] < 45
        assert final["generated_from"] == 5 and len(final["ids"]) == final["n"]
        # the kernel's grid of the tokens so far is the lens of that text
        assert final["topk"] == final["ref_topk"]
        # and the page shows it: the tooltip of the last column is the kernel's top-k there
        S = final["S"]
        page.evaluate("() => { const v = document.querySelector('.lens-widget .lw-viewport'); v.scrollLeft = 0; }")
        box = canvas.bounding_box()
        col = 6
        page.mouse.move(*cell_center(canvas, 0, col))
        tip = page.locator(".lens-widget .lw-tooltip")
        tip.wait_for(state="visible")
        ids = [int(i) for i in tip.locator(".lw-tip-row").evaluate_all("rs => rs.map(r => r.dataset.id)")]
        assert ids == final["topk"][S - 1][col]

        # a long recompute (a new prompt) shows progress; stop keeps the grid there is
        page.mouse.move(box["x"] - 50, box["y"] - 50)
        page.fill(".lens-widget .lw-prompt-input", "a much longer prompt than before")
        page.press(".lens-widget .lw-prompt-input", "Enter")
        page.wait_for_function(
            "() => { const r = document.querySelector('.lens-widget'); return r.dataset.taskKind === 'compute' && r.dataset.task === 'running'; }",
            timeout=60000,
        )
        busy = _root_state(page)
        assert busy["text"].startswith("computing ") and "chunks" in busy["text"] and busy["stop"], busy
        done, total = (int(x) for x in busy["progress"].split("/"))
        assert 0 < done < total
        page.click(".lens-widget .lw-stop")
        page.wait_for_function("document.querySelector('.lens-widget').dataset.task === 'stopped'", timeout=60000)
        kept = _root_state(page)
        assert kept["n"] == final["n"] and f"× {final['n']} tokens" in kept["title"], kept
        assert page.locator(".lens-widget .lw-error:not([hidden])").count() == 0
        # the widget keeps working: a short prompt recomputes to the end
        page.fill(".lens-widget .lw-prompt-input", "hi there")
        page.press(".lens-widget .lw-prompt-input", "Enter")
        page.wait_for_function("() => document.querySelector('.lens-widget .lw-title').textContent.includes('× 8 tokens')", timeout=60000)
        assert _read(out + ".data")["prompt"] == "hi there"
        assert unexpected_page_errors(errors) == [], errors


# Issue 18, live: the attribution panel and the click-click patch flow against a real kernel.
CELL_PATCH = PREAMBLE + """\
from zoo import tiny
w = LensWidget(tiny("llama"), ["Hello there", "Hi there"], progress=False)
truth = w.attribution(2, 3)
dump(".truth", {{"bars": truth["bars"], "logit": truth["logit"], "S": w.result.n_sites}})
w.observe(lambda ch: dump(".patch", {{k: v for k, v in ch["new"].get("patch", {{}}).items() if k != "cone"}}), names=["comparison"])
w
"""


@pytest.fixture(scope="module")
def lab_patch(tmp_path_factory):
    yield from _serve(tmp_path_factory.mktemp("patch"), *APPS["jupyterlab"], CELL_PATCH)


def test_attribution_panel_and_patch_flow_in_jupyterlab(browser, lab_patch):
    """A click, "who wrote this?": the panel shows the kernel's attribution (the bars of
    ``w.attribution``); patch mode, a source cell on prompt 1, prompt 2, a target column: the kernel
    patches exactly that and the page shows the diff grid with the cone."""
    url, out = lab_patch
    with _lab_page(browser, url, height=1200) as (page, canvas, errors):
        page.wait_for_function("document.querySelector('.lens-widget')?.dataset.kernel === 'yes'", timeout=60000)
        truth = _read(out + ".truth")
        S = truth["S"]
        at = lambda site, col: cell_center(canvas, S - 1 - site, col)  # noqa: E731
        page.mouse.click(*at(2, 3))
        page.locator(".lens-widget .lw-attr-go").click()
        page.locator(".lens-widget .lw-attr[data-state='done']").wait_for(timeout=60000)
        names = page.locator(".lens-widget .lw-attr-row .lw-attr-name").all_text_contents()
        assert names == truth["bars"]["names"]
        # the patch: source (prompt 1, site 2, col 3), target prompt 2, col 5
        page.locator(".lens-widget button.lw-patch-mode").click()
        page.mouse.click(*at(2, 3))
        page.select_option(".lens-widget select.lw-prompt-select", "1")
        page.mouse.click(*at(0, 5))
        page.wait_for_function("document.querySelector('.lens-widget').dataset.patch === 'diff'", timeout=60000)
        p = _read(out + ".patch")
        assert (p["source_prompt_index"], p["site"], p["source_col"], p["target_prompt_index"], p["target_col"]) == (0, 2, 3, 1, 5)
        # the comparison trait (data-patch) and the request's reply are two messages: the task bar
        # says how the patch ended when the reply is in
        page.wait_for_function("document.querySelector('.lens-widget .lw-progress-text').textContent.startsWith('patch done in')", timeout=60000)
        assert unexpected_page_errors(errors) == [], errors
