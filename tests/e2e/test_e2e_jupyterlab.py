"""The quickstart notebook in a real JupyterLab 4, driven like a user would.

Opens a COPY of examples/quickstart.ipynb (plus one appended probe cell that prints every
LensWidget's kernel-side traits), runs all cells from the Run menu, then: the canvas grid draws,
hovering shows the tooltip, a click reaches the kernel's ``selected``, a new prompt typed in the
widget recomputes the grid, a vocabulary search + click tracks a token; Ctrl+S saves the notebook
with its widget state, and after the kernel is shut down the reopened notebook draws the grid from
the saved state alone (a fresh kernel starts but runs nothing). Choosing "No Kernel" instead leaves
JupyterLab 4.6's widget manager on "Loading widget..." (it waits for a session that never becomes
ready), so the fresh-kernel reopen is what a user sees.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from e2e_support import (
    KERNEL_MS,
    PROBE_SOURCE,
    ROOT,
    UI_MS,
    cell_center,
    code_cell,
    wait_canvas_drawn,
)
from jupyter_ui import accept_dialogs, lens_models, menu, rerun_probe, saved_widget_state, wait_all_ran, wait_kernel_idle, wait_probe

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUICKSTART = ROOT / "examples" / "quickstart.ipynb"
NEW_PROMPT = "Roses are red, violets are"

def _notebook_copy(root) -> str:
    """Copy the quickstart (never modified) into the server root, plus the probe cell."""
    assert QUICKSTART.exists(), f"{QUICKSTART} is missing"
    nb = json.loads(QUICKSTART.read_text(encoding="utf-8"))
    nb.setdefault("metadata", {}).pop("widgets", None)  # start from no saved widget state
    nb["cells"] = list(nb["cells"]) + [code_cell(PROBE_SOURCE, "e2e-probe")]
    name = "quickstart_e2e.ipynb"
    (root / name).write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return name


def _title_counts(page) -> tuple[int, int]:
    title = page.locator(".lens-widget .lw-title").first
    # the probe cell's rerun scrolls the notebook to its end: bring the grid back (JupyterLab's
    # windowed notebook stops rendering cells far out of view, and their inner text reads empty)
    title.scroll_into_view_if_needed(timeout=UI_MS)
    text = title.text_content() or ""
    m = re.search(r"(\d+) sites × (\d+) tokens", text)
    assert m, f"unexpected widget title {text!r}"
    return int(m.group(1)), int(m.group(2))


def _hover(page, canvas, row: int, col: int):
    """Hover a grid cell; return (tooltip locator, its header token text, its data-site/col)."""
    canvas.scroll_into_view_if_needed(timeout=UI_MS)
    page.mouse.move(1, 1)
    x, y = cell_center(canvas, row, col)
    page.mouse.move(x, y, steps=2)
    tip = page.locator(".lens-widget .lw-tooltip").first
    tip.wait_for(state="visible", timeout=UI_MS)
    head = tip.locator(".lw-tip-head").inner_text()
    return tip, head, (int(tip.get_attribute("data-site")), int(tip.get_attribute("data-col")))


def _one_token_id(text: str) -> int:
    """The id of ``text`` in the embedded model's tokenizer (the quickstart's model), which must be one token."""
    from lens_widget.loading import default_model_path
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(default_model_path())(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (text, ids)
    return ids[0]


def test_quickstart_in_jupyterlab(browser, jupyter_server, steps):
    server = jupyter_server
    name = _notebook_copy(server.root)
    page = steps.watch(browser.new_page(viewport={"width": 1400, "height": 1000}))
    widget = page.locator(".lens-widget").first
    canvas = widget.locator("canvas.lw-canvas")

    with steps("open notebook, kernel idle"):
        page.goto(f"{server.url}/lab/tree/{name}?reset", timeout=UI_MS * 2)
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=UI_MS * 2)
        wait_kernel_idle(page, server, name)

    with steps("Run > Run All Cells"):
        menu(page, "Run", "Run All Cells")
        wait_all_ran(page)

    with steps("grid canvas drawn"):
        widget.scroll_into_view_if_needed(timeout=UI_MS)
        wait_canvas_drawn(page, canvas)
        S, P = _title_counts(page)
        assert S > 2 and P > 1, (S, P)

    with steps("hover shows the tooltip with token text"):
        tip, head, (site, col) = _hover(page, canvas, 1, 1)
        assert (site, col) == (S - 2, 1)
        pos = int(re.search(r"pos (\d+)", head).group(1))
        assert tip.locator(".lw-tip-head .lw-tok").inner_text().strip(), head
        rows = tip.locator(".lw-tip-row .lw-tok").all_inner_texts()
        assert rows and all(r.strip() for r in rows), rows

    with steps("click reaches the kernel's `selected`"):
        canvas.scroll_into_view_if_needed(timeout=UI_MS)
        page.mouse.click(*cell_center(canvas, 1, 1))
        expected = {"site": S - 2, "col": 1, "position": pos}
        # the quickstart's observer cell appends f"selected {change['new']}" to an ipywidgets.Output
        page.get_by_text(f"selected {expected!r}").first.wait_for(timeout=KERNEL_MS)
        rerun_probe(page)
        wait_probe(page, lambda ws: expected in [w["selected"] for w in ws], f"selected == {expected}")

    with steps("a new prompt typed in the widget recomputes the grid"):
        # the probe's rerun scrolled the notebook to its end, past the quickstart's last widget: bring the
        # grid back before reading (the windowed notebook stops rendering far cells: inner text reads empty)
        widget.scroll_into_view_if_needed(timeout=UI_MS)
        old_title = widget.locator(".lw-title").text_content()
        assert re.search(r"\d+ sites × \d+ tokens", old_title or ""), old_title
        prompt_box = widget.locator(".lw-prompt-input")
        prompt_box.fill(NEW_PROMPT)
        prompt_box.press("Enter")
        page.wait_for_function(
            "([el, old]) => el.textContent !== old", arg=[widget.locator(".lw-title").element_handle(), old_title], timeout=KERNEL_MS
        )
        widget.locator(".lw-busy").wait_for(state="hidden", timeout=KERNEL_MS)
        assert widget.locator(".lw-error").is_hidden(), widget.locator(".lw-error").inner_text()
        wait_canvas_drawn(page, canvas)
        rerun_probe(page)
        probe = wait_probe(page, lambda ws: any(w["prompt"] == NEW_PROMPT for w in ws), f"prompt == {NEW_PROMPT!r}")
        columns = next(w["columns"] for w in probe if w["prompt"] == NEW_PROMPT)
        assert _title_counts(page)[1] == len(columns) > 5
        # the column headers (the tooltip repeats the hovered column's token) are the new prompt's tokens
        shown = [_hover(page, canvas, 0, c)[0].locator(".lw-tip-head .lw-tok").inner_text() for c in range(3)]
        assert shown == columns[:3], (shown, columns)

    with steps("search + click a match tracks the token (kernel reply)"):
        page.mouse.move(1, 1)
        search = widget.locator(".lw-search-input")
        search.fill(" blue")
        search.press("Enter")
        # " blue" is one token of the quickstart's model (SmolLM2): it is listed among the exact
        # matches (with the other exact forms: "blue", " Blue", ...), once, and that one is clicked
        tid = _one_token_id(" blue")
        target = widget.locator(f'.lw-search-out .lw-match.lw-exact[data-id="{tid}"]')
        target.wait_for(timeout=KERNEL_MS)
        assert target.count() == 1
        target.click()
        page.wait_for_function(
            "([el, id]) => [...el.options].some(o => o.value === String(id))",
            arg=[widget.locator("select.lw-metric-token").element_handle(), tid],
            timeout=KERNEL_MS,
        )
        widget.scroll_into_view_if_needed(timeout=UI_MS)
        assert f"id {tid}" in (widget.locator(".lw-status").text_content() or "")
        rerun_probe(page)
        wait_probe(page, lambda ws: any(tid in w["tracked"] for w in ws), f"{tid} tracked")

    path = server.root / name
    with steps("Ctrl+S saves the notebook with the widget state"):
        before = path.stat().st_mtime
        page.locator(".jp-NotebookPanel .jp-Cell .jp-InputPrompt").first.click()  # focus the notebook, not the widget
        page.keyboard.press("Control+s")
        end = time.monotonic() + UI_MS / 1000
        models = []
        while time.monotonic() < end:
            if path.stat().st_mtime != before:
                models = lens_models(saved_widget_state(path))
                if any(m.get("prompt") == NEW_PROMPT for m in models):
                    break
            page.wait_for_timeout(250)
        assert any(m.get("prompt") == NEW_PROMPT and tid in m.get("tracked", []) for m in models), (
            f"no saved LensWidget state with the new prompt and tracked token in {path}: "
            f"{[{k: m.get(k) for k in ('prompt', 'tracked')} for m in models]}"
        )

    with steps("shut down the kernel, close the page"):
        old_kernel = next(s["kernel"]["id"] for s in server.api("/api/sessions") if s["path"].endswith(name))
        menu(page, "Kernel", "Shut Down Kernel")
        end = time.monotonic() + UI_MS / 1000
        while any(s["path"].endswith(name) for s in server.api("/api/sessions")):
            accept_dialogs(page)  # "Shut down kernel?" where the host asks
            assert time.monotonic() < end, f"the kernel still runs: {server.api('/api/sessions')}"
            page.wait_for_timeout(250)
        page.close()

    page2 = steps.watch(browser.new_page(viewport={"width": 1400, "height": 1000}))
    widget2 = page2.locator(".lens-widget").first
    canvas2 = widget2.locator("canvas.lw-canvas")
    with steps("reopened after the kernel shut down, the saved widget state draws"):
        # A fresh kernel starts (the notebook's kernelspec) but runs nothing: it holds no widget,
        # so the grid can only come from the state saved in the notebook.
        page2.goto(f"{server.url}/lab/tree/{name}?reset", timeout=UI_MS * 2)
        page2.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=UI_MS * 2)
        end = time.monotonic() + UI_MS * 2 / 1000
        while not canvas2.count():
            assert time.monotonic() < end, "the widget was not restored from the saved state"
            accept_dialogs(page2)
            page2.wait_for_timeout(250)
        widget2.scroll_into_view_if_needed(timeout=UI_MS)
        wait_canvas_drawn(page2, canvas2)
        assert _title_counts(page2)[0] == S
        assert widget2.locator(".lw-prompt-input").input_value() == NEW_PROMPT
        options = widget2.locator("select.lw-metric-token option").evaluate_all("os => os.map(o => o.value)")
        assert str(tid) in options, (tid, options)
        shown = [_hover(page2, canvas2, 0, c)[0].locator(".lw-tip-head .lw-tok").inner_text() for c in range(3)]
        assert shown == columns[:3], (shown, columns)
        kernels = [s["kernel"]["id"] for s in server.api("/api/sessions") if s["path"].endswith(name) and s.get("kernel")]
        assert old_kernel not in kernels, (old_kernel, kernels)

    with steps("no uncaught errors in either page"):
        steps.assert_no_page_errors()
