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
_THIS = sys.modules.get(__name__)
# Our helpers have unique module names (e2e_support, jupyter_ui) and need this folder on sys.path;
# put it last, so that `import conftest` elsewhere never finds this file first.
while HERE in sys.path:
    sys.path.remove(HERE)
sys.path.append(HERE)


def pytest_sessionstart(session):
    # tests/ui's modules do `from conftest import ...`. When pytest loads this file after
    # tests/ui/conftest.py (`pytest tests/ui tests/e2e`), this module is left as
    # sys.modules["conftest"]; drop that name (pytest keeps its own reference) so their import
    # finds tests/ui/conftest.py on sys.path.
    if _THIS is not None and sys.modules.get("conftest") is _THIS:
        del sys.modules["conftest"]


from e2e_support import CHROMIUM, CHROMIUM_ARGS, ROOT, Server, Steps, clean_env, free_port, write_lab_settings  # noqa: E402


def _require_tools() -> None:
    from lens_widget.export import BUNDLE_PATH

    if not BUNDLE_PATH.exists():
        pytest.fail(f"front-end bundle {BUNDLE_PATH} is missing: run `bash scripts/setup.sh` (or `cd js && npm run build`)", pytrace=False)
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium or set CHROMIUM_PATH "
                    "(or deselect these tests with -m 'not browser')", pytrace=False)


@pytest.fixture(scope="module")
def e2e_browser():
    # Module scope: Playwright's sync API cannot run twice at once, and tests/ui starts its own
    # (session-scoped) instance; releasing ours after each module lets `pytest tests` run both.
    _require_tools()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def e2e_artifacts(tmp_path_factory) -> Path:
    env = os.environ.get("LENS_E2E_ARTIFACTS")
    path = Path(env) if env else tmp_path_factory.getbasetemp() / "e2e-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory):
    """One Jupyter server for JupyterLab (/lab) and Notebook 7 (/notebooks): root dir `server.root`."""
    tmp = tmp_path_factory.mktemp("jupyter")
    root = tmp / "root"
    root.mkdir()
    env = clean_env(tmp)
    write_lab_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
    port = free_port()
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        "--IdentityProvider.token=", "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True",  # lets the fixture DELETE sessions over REST (127.0.0.1, test only)
        f"--ServerApp.root_dir={root}",
        f"--LabApp.workspaces_dir={env['JUPYTERLAB_WORKSPACES_DIR']}",
        f"--LabApp.user_settings_dir={env['JUPYTERLAB_SETTINGS_DIR']}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    server = Server("jupyter", cmd, env=env, cwd=root, log=tmp / "jupyter.log", url=f"http://127.0.0.1:{port}", ready_path="/api/status")
    server.root = root  # type: ignore[attr-defined]
    server.settings_dir = Path(env["JUPYTERLAB_SETTINGS_DIR"])  # type: ignore[attr-defined]
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
