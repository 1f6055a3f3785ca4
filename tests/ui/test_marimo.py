"""The widget in marimo (`mo.ui.anywidget`), served by `marimo run` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import CELL_H, CELL_W, HEAD_H, HEAD_W

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

APP = '''\
import marimo

app = marimo.App()


@app.cell
def _():
    import json, sys
    sys.path.insert(0, {tests!r}); sys.path.insert(0, {root!r})
    import marimo as mo
    from fakes import make_result
    from lens_widget.widget import LensWidget
    r = make_result(hostile=True)
    with open({truth!r}, "w") as f:
        json.dump({{"topk": r.topk_ids[0].tolist(), "S": r.n_sites}}, f)
    w = mo.ui.anywidget(LensWidget(result=r))
    w
    return (w,)


if __name__ == "__main__":
    app.run()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def marimo_app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("marimo")
    truth = str(tmp / "truth.json")
    (tmp / "app.py").write_text(APP.format(tests=str(ROOT / "tests"), root=str(ROOT), truth=truth))
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), MARIMO_SKIP_UPDATE_CHECK="1")
    log = open(tmp / "marimo.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "marimo", "run", str(tmp / "app.py"), "--headless", "--no-token", "--port", str(port), "--host", "127.0.0.1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError((tmp / "marimo.log").read_text())
                time.sleep(0.5)
        else:
            raise RuntimeError("marimo did not start:\n" + (tmp / "marimo.log").read_text())
        yield base, truth
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_widget_in_marimo(browser, marimo_app):
    base, truth_path = marimo_app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.goto(base, timeout=60000)
        canvas = page.locator(".lens-widget canvas.lw-canvas")  # Playwright's CSS locators pierce shadow DOM
        canvas.wait_for(timeout=120000)
        page.locator(".lens-widget[data-first-paint-ms]").wait_for(state="attached", timeout=30000)
        truth = json.loads(Path(truth_path).read_text())
        S = truth["S"]
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + HEAD_W + 3 * CELL_W + CELL_W / 2, box["y"] + HEAD_H + CELL_H + CELL_H / 2)
        tip = page.locator(".lens-widget .lw-tooltip")
        tip.wait_for(state="visible")
        ids = [int(i) for i in tip.locator(".lw-tip-row").evaluate_all("rs => rs.map(r => r.dataset.id)")]
        assert ids == truth["topk"][S - 2][3]
        page.mouse.click(box["x"] + HEAD_W + 3 * CELL_W + CELL_W / 2, box["y"] + HEAD_H + CELL_H + CELL_H / 2)
        page.locator(".lens-widget .lw-chip").first.wait_for(timeout=10000)
        page.select_option(".lens-widget select.lw-metric", "entropy")
        page.wait_for_timeout(300)
        assert page.locator(".lens-widget").get_attribute("data-metric") == "entropy"
        assert page.evaluate("() => window.__pwned") is None
        assert dialogs == []
    finally:
        page.close()
