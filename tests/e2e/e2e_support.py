"""Helpers of the end-to-end tests: servers in their own process group, Chromium, debuggable steps.

Kept out of ``conftest.py`` (and under a unique module name) so that test modules can import it
without clashing with ``tests/ui/conftest.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[2]
from browser_support import CELL_H, CELL_W, HEAD_H, HEAD_W

# Bounded waits (ms). The machine has 2 shared cores: a kernel that imports torch and loads
# SmolLM2 takes 10-40 s here.
KERNEL_MS = 240_000
UI_MS = 30_000


class Server:
    """A server process (and every child, e.g. kernels) in its own process group, with a log file."""

    def __init__(self, name: str, cmd: Sequence[str], *, env: dict[str, str], cwd: Path, log: Path, url: str, ready_path: str):
        self.name, self.cmd, self.env, self.cwd, self.log_path = name, list(cmd), env, cwd, log
        self.url, self.ready_path = url, ready_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "Server":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before it was ready\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready after {timeout:.0f} s\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the whole process group (server and its kernels), SIGKILL what is left after 10 s."""
        proc = self.proc
        if proc is None:
            return
        try:
            pgid = os.getpgid(proc.pid)
        except ProcessLookupError:
            pgid = None
        if pgid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        if pgid is not None:  # kernels may outlive the server: make sure the group is gone
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        self._log.close()
        self.proc = None

    def log_tail(self, chars: int = 6000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"({self.log_path} unreadable)"
        return text[-chars:]

    def shutdown_sessions(self) -> None:
        """Jupyter only: delete every session (and its kernel)."""
        with contextlib.suppress(OSError, ValueError):
            for session in self.api("/api/sessions"):
                with contextlib.suppress(OSError):
                    self.api(f"/api/sessions/{session['id']}", method="DELETE")

    def api(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The test environment, with every Jupyter config/data/runtime dir in ``tmp``."""
    env = dict(os.environ)
    for key in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "JUPYTERLAB_DIR"):
        env.pop(key, None)
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"),
        JUPYTER_DATA_DIR=str(tmp / "jupyter-data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-workspaces"),
        IPYTHONDIR=str(tmp / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        **extra,
    )
    return env


def write_lab_settings(settings_dir: Path) -> None:
    """User settings: save widget state with the notebook; start the kernel without asking; offline."""
    files = {
        "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {"saveState": True},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
        # no "Select Kernel" dialog popping over the notebook at an unpredictable moment
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"autoStartDefaultKernel": True},
    }
    for rel, value in files.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


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


def cell_center(canvas_locator, row: int, col: int) -> tuple[float, float]:
    """Page coordinates of the centre of a grid cell (display row, column), unscrolled grid."""
    box = canvas_locator.bounding_box()
    assert box, "grid canvas has no bounding box (not displayed)"
    return box["x"] + HEAD_W + col * CELL_W + CELL_W / 2, box["y"] + HEAD_H + row * CELL_H + CELL_H / 2


class Steps:
    """Named steps: a failure becomes an AssertionError with the step, a screenshot, the browser's
    errors and the server log tail, so a failing run on CI can be understood from its report."""

    def __init__(self, artifacts: Path, servers: Sequence[Server], test_name: str):
        self.artifacts, self.servers, self.test_name = artifacts, list(servers), test_name
        self.pages: list[Any] = []
        self.console: list[str] = []

    def watch(self, page) -> Any:
        self.pages.append(page)
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        page.on("console", lambda m: self.console.append(f"console.{m.type}: {m.text[:1000]}") if m.type == "error" else None)
        return page

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
