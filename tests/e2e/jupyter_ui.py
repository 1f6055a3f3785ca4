"""Driving JupyterLab 4 / Notebook 7 pages with Playwright: kernel readiness, Run All, cell reruns."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from e2e_support import KERNEL_MS, PROBE_MARK, UI_MS, parse_probe


def accept_dialogs(page) -> None:
    """Accept a modal dialog (e.g. the kernel chooser: "Select" keeps Python 3) if one is open."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        print("[e2e] accepting dialog:", dialog.first.inner_text()[:200].replace("\n", " | "))
        dialog.first.locator(".jp-mod-accept").first.click()


def wait_kernel_idle(page, server, name: str, timeout_ms: int = KERNEL_MS) -> None:
    """Wait until the notebook ``name`` has a kernel that is idle with the page connected to it
    (the page's own idle indicator also reads "idle" while no kernel exists yet: running cells
    then races the kernel's start). Accepts a kernel-chooser dialog if one shows."""
    end = time.monotonic() + timeout_ms / 1000
    sessions: Any = None
    while time.monotonic() < end:
        accept_dialogs(page)
        sessions = [s for s in server.api("/api/sessions") if s["path"].endswith(name)]
        kernel = sessions[0]["kernel"] if sessions else None
        if kernel and kernel["execution_state"] == "idle" and kernel["connections"] >= 1:
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"the kernel of {name} never became idle and connected: {sessions}")


def menu(page, top: str, item: str) -> None:
    """Click a main-menu entry, e.g. menu(page, "Run", "Run All Cells")."""
    page.locator(".lm-MenuBar-item", has=page.get_by_text(top, exact=True)).first.click()
    entry = page.locator(".lm-Menu-item", has=page.locator(".lm-Menu-itemLabel", has_text=item)).filter(
        has=page.get_by_text(item, exact=True)
    )
    entry.first.click(timeout=UI_MS)


def probe_cell(page):
    return page.locator(".jp-CodeCell", has_text=PROBE_MARK).last


def probe_output(page) -> list[dict[str, Any]] | None:
    cell = probe_cell(page)
    if not cell.count():
        return None
    return parse_probe(cell.locator(".jp-OutputArea").inner_text())


def wait_probe(page, check, what: str, timeout_ms: int = KERNEL_MS) -> list[dict[str, Any]]:
    """Wait until the probe cell's printed traits satisfy ``check``."""
    end = time.monotonic() + timeout_ms / 1000
    last = None
    while time.monotonic() < end:
        last = probe_output(page)
        if last is not None and check(last):
            return last
        page.wait_for_timeout(250)
    raise AssertionError(f"probe cell never showed {what}; last output: {last}")


def rerun_probe(page) -> None:
    """Re-run the probe cell in place (click into it, Ctrl+Enter), after clearing its old output."""
    cell = probe_cell(page)
    cell.scroll_into_view_if_needed()
    editor = cell.locator(".cm-content").first
    count = cell.locator(".jp-InputPrompt").inner_text()
    editor.click()
    page.keyboard.press("Control+Enter")
    # the prompt number changes once the kernel has run it again
    page.wait_for_function(
        "([el, before]) => el.textContent !== before && !el.textContent.includes('*')",
        arg=[cell.locator(".jp-InputPrompt").element_handle(), count],
        timeout=KERNEL_MS,
    )


def wait_all_ran(page, timeout_ms: int = KERNEL_MS) -> None:
    """Wait until no cell is queued or running and the probe (last) cell has run; fail fast on a
    cell that raised (Run All stops there)."""
    end = time.monotonic() + timeout_ms / 1000
    state = None
    while time.monotonic() < end:
        accept_dialogs(page)
        state = page.evaluate(_ALL_RAN_JS)
        if state == "done":
            return
        if state.startswith("error"):
            raise AssertionError(f"a notebook cell raised: {state}")
        page.wait_for_timeout(250)
    raise AssertionError(f"Run All did not finish in {timeout_ms / 1000:.0f} s ({state})")


_ALL_RAN_JS = f"""() => {{
  const err = document.querySelector('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]');
  if (err) return 'error: ' + err.textContent.slice(-2000);
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
  if (!prompts.length) return 'no cells';
  if (prompts.some(p => /\\[\\*\\]/.test(p.textContent))) return 'running';
  const probe = [...document.querySelectorAll('.jp-CodeCell')].filter(c => c.textContent.includes('{PROBE_MARK}')).pop();
  return !probe || /\\[\\d+\\]/.test(probe.querySelector('.jp-InputPrompt').textContent) ? 'done' : 'probe not run';
}}"""


def saved_widget_state(path: Path) -> dict[str, Any]:
    nb = json.loads(path.read_text())
    return nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})


def lens_models(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Saved widget models that are LensWidgets (anywidget models whose ESM is our bundle)."""
    out = []
    for model in state.values():
        st = model.get("state", {})
        if model.get("model_name") == "AnyModel" and "lens-widget" in str(st.get("_esm", ""))[:200000] and "data" in st:
            out.append(st)
    return out
