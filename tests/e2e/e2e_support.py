"""Helpers of the end-to-end tests: servers in their own process group, Chromium, debuggable steps.

Kept out of ``conftest.py`` (and under a unique module name) so that test modules can import it
without clashing with ``tests/ui/conftest.py``.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from browser_support import cell_center  # noqa: F401  (the e2e tests import it from here)
from jupyter_server import ROOT, Server, clean_env, unexpected_page_errors, write_lab_settings  # noqa: F401  (the one server helper, tests/jupyter_server.py)

# Bounded waits (ms). The machine has 2 shared cores: a kernel that imports torch and loads
# SmolLM2 takes 10-40 s here.
KERNEL_MS = 240_000
UI_MS = 30_000


def code_cell(source: str, cell_id: str) -> dict[str, Any]:
    return {"cell_type": "code", "execution_count": None, "id": cell_id, "metadata": {}, "outputs": [], "source": source}


def notebook(cells: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


# A cell appended to the COPY of a notebook: prints every LensWidget's kernel-side traits as JSON.
PROBE_MARK = "E2E-PROBE"
PROBE_SOURCE = f"""\
# {PROBE_MARK}: added by tests/e2e to its copy of the notebook (not part of the example)
import json as _e2e_json
from lens_widget.widget import LensWidget as _E2E_LensWidget
print("{PROBE_MARK}", _e2e_json.dumps([
    {{"selected": _v.selected, "prompt": _v.prompt, "tracked": list(_v.tracked),
      "columns": [_v.result.display(int(_v.result.input_ids[0][_p])) for _p in _v.result.positions[0] if _p >= 0]}}
    for _k, _v in list(globals().items()) if isinstance(_v, _E2E_LensWidget) and not _k.startswith("_")
]))
"""


def parse_probe(text: str) -> list[dict[str, Any]] | None:
    m = re.search(PROBE_MARK + r" (\[.*\])", text or "")
    return json.loads(m.group(1)) if m else None


# JS run on the grid canvas: how many distinct colours it holds (a blank canvas has 1).
CANVAS_COLOURS_JS = """
c => {
  if (!c.width || !c.height) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const seen = new Set();
  for (let i = 0; i < d.length && seen.size < 500; i += 4 * 7) seen.add((d[i] << 24) | (d[i+1] << 16) | (d[i+2] << 8) | d[i+3]);
  return seen.size;
}
"""


def canvas_colours(canvas_locator) -> int:
    return int(canvas_locator.evaluate(CANVAS_COLOURS_JS))


def wait_canvas_drawn(page, canvas_locator, timeout_ms: int = UI_MS, min_colours: int = 20) -> int:
    """Wait until the grid canvas shows a drawn grid (many distinct colours); return the count."""
    canvas_locator.wait_for(state="visible", timeout=timeout_ms)
    end = time.monotonic() + timeout_ms / 1000
    n = 0
    while time.monotonic() < end:
        n = canvas_colours(canvas_locator)
        if n >= min_colours:
            return n
        page.wait_for_timeout(200)
    raise AssertionError(f"the grid canvas stayed blank ({n} distinct colours after {timeout_ms / 1000:.0f} s)")


class Steps:
    """Named steps: a failure becomes an AssertionError with the step, a screenshot, the browser's
    errors and the server log tail, so a failing run on CI can be understood from its report."""

    def __init__(self, artifacts: Path, servers: Sequence[Server], test_name: str):
        self.artifacts, self.servers, self.test_name = artifacts, list(servers), test_name
        self.pages: list[Any] = []
        self.console: list[str] = []
        self.page_errors: list[str] = []

    def _page_error(self, e: Any) -> None:
        self.page_errors.append(f"{e} @ {(getattr(e, 'stack', '') or '')[:600]}")
        self.console.append(f"pageerror: {e}")

    def watch(self, page) -> Any:
        self.pages.append(page)
        page.on("pageerror", self._page_error)
        page.on("console", lambda m: self.console.append(f"console.{m.type}: {m.text[:1000]}") if m.type == "error" else None)
        return page

    def assert_no_page_errors(self) -> None:
        """No uncaught exception in any watched page, ours or the host's (except the host's own
        errors listed in ``jupyter_server.KNOWN_HOST_ERRORS``)."""
        assert unexpected_page_errors(self.page_errors) == [], f"uncaught errors in the page: {self.page_errors}"

    def screenshot(self, label: str) -> list[str]:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        shots = []
        for i, page in enumerate(self.pages):
            if page.is_closed():
                continue
            path = self.artifacts / f"{self.test_name}-{label}-{i}.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(path), full_page=True, timeout=10_000)
                shots.append(str(path))
        return shots

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        except Exception as exc:
            label = re.sub(r"\W+", "_", name)[:40]
            shots = self.screenshot(label)
            logs = "\n".join(f"--- {s.name} log ({s.log_path}) ---\n{s.log_tail()}" for s in self.servers)
            console = "\n".join(self.console[-30:]) or "(none)"
            raise AssertionError(
                f"step '{name}' failed after {time.monotonic() - t0:.1f} s: {type(exc).__name__}: {exc}\n"
                f"screenshots: {shots or '(none)'}\n--- browser errors ---\n{console}\n{logs}"
            ) from exc
        finally:
            print(f"[e2e] {self.test_name}: {name}: {time.monotonic() - t0:.1f} s", file=sys.stderr)
