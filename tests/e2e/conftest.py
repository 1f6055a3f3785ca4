"""End-to-end fixtures: a real Jupyter server (JupyterLab 4 + Notebook 7) and a marimo app server,
each on 127.0.0.1 with a free port, in a temp root with temp config/data/settings/workspaces, in
its own process group killed at teardown; headless Debian Chromium through Playwright.

Failure artifacts (screenshots) go to ``$LENS_E2E_ARTIFACTS`` or ``<pytest basetemp>/e2e-artifacts``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = str(Path(__file__).parent)
# Our helpers have unique module names (e2e_support, jupyter_ui); the tests import them directly.
if HERE not in sys.path:
    sys.path.append(HERE)

from browser_support import free_port  # noqa: E402
from e2e_support import ROOT, Steps  # noqa: E402
from jupyter_server import Server, clean_env, running_jupyter  # noqa: E402


@pytest.fixture(scope="session")
def e2e_artifacts(tmp_path_factory) -> Path:
    env = os.environ.get("LENS_E2E_ARTIFACTS")
    path = Path(env) if env else tmp_path_factory.getbasetemp() / "e2e-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory):
    """One Jupyter server for JupyterLab (/lab) and Notebook 7 (/notebooks): root dir `server.root`
    (tests/jupyter_server.py, the helper tests/ui uses too)."""
    with running_jupyter(tmp_path_factory.mktemp("jupyter"), "jupyterlab") as server:
        server.name = "jupyter"
        yield server


@pytest.fixture(scope="module")
def marimo_server(tmp_path_factory):
    """`marimo run` of a temp copy of examples/marimo_demo.py (headless, no token)."""
    tmp = tmp_path_factory.mktemp("marimo")
    app = tmp / "marimo_demo.py"
    shutil.copyfile(ROOT / "examples" / "marimo_demo.py", app)
    env = clean_env(tmp, XDG_CONFIG_HOME=str(tmp / "xdg-config"), XDG_STATE_HOME=str(tmp / "xdg-state"), MARIMO_SKIP_UPDATE_CHECK="1")
    port = free_port()
    cmd = [
        sys.executable, "-m", "marimo", "run", str(app),
        "--host", "127.0.0.1", "--port", str(port), "--headless", "--no-token", "--no-sandbox", "--no-skew-protection",
    ]
    server = Server("marimo", cmd, env=env, cwd=tmp, log=tmp / "marimo.log", url=f"http://127.0.0.1:{port}", ready_path="/health")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def steps(request, e2e_artifacts):
    """steps(name) context manager + steps.watch(page); failures carry screenshots and server logs."""
    servers = [request.getfixturevalue(n) for n in ("jupyter_server", "marimo_server") if n in request.fixturenames]
    s = Steps(e2e_artifacts, servers, request.node.name)
    yield s
    for page in s.pages:
        if not page.is_closed():
            page.close()
    for server in servers:  # stop the test's kernels (each holds a model) before the next test
        if server.name == "jupyter" and server.proc is not None:
            server.shutdown_sessions()
