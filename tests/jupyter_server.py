"""The one way tests start servers: a process (and every child, e.g. kernels) in its own process
group, on 127.0.0.1 with a free port, its config/data/runtime dirs in a temp folder, killed at
teardown. Used by tests/ui (test_jupyterlab.py) and tests/e2e (conftest.py) alike.
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

from browser_support import free_port

ROOT = Path(__file__).resolve().parents[1]


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


@contextlib.contextmanager
def running_jupyter(tmp: Path, app: str = "jupyterlab", lab_settings: bool = True) -> Iterator[Server]:
    """A Jupyter server (``app``: ``"jupyterlab"`` or ``"notebook"`` for Notebook 7) serving the
    fresh folder ``server.root`` (``tmp / "root"``), no token, no password, stopped at the end.
    JupyterLab serves Notebook 7's ``/notebooks`` too (the notebook package is installed)."""
    root = tmp / "root"
    root.mkdir()
    env = clean_env(tmp)
    settings = Path(env["JUPYTERLAB_SETTINGS_DIR"])
    if lab_settings:
        write_lab_settings(settings)
    port = free_port()
    cmd = [
        sys.executable, "-m", app,
        "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        "--IdentityProvider.token=", "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True",  # lets tests DELETE sessions over REST (127.0.0.1, test only)
        f"--ServerApp.root_dir={root}",
    ]
    if app == "jupyterlab":
        cmd += [
            f"--LabApp.workspaces_dir={env['JUPYTERLAB_WORKSPACES_DIR']}",
            f"--LabApp.user_settings_dir={settings}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
    server = Server(app, cmd, env=env, cwd=root, log=tmp / f"{app}.log", url=f"http://127.0.0.1:{port}", ready_path="/api/status")
    server.root = root  # type: ignore[attr-defined]
    server.settings_dir = settings  # type: ignore[attr-defined]
    server.start()
    try:
        yield server
    finally:
        server.stop()


# Uncaught errors of the host application itself that every page load of it raises, with nothing
# of ours on the stack: (message pattern, the host bundle the whole stack is in). Anything else in
# a page (the widget's, anywidget's, or a new host error) fails the test.
KNOWN_HOST_ERRORS = [
    # Notebook 7.x's settings loader, on every /notebooks page (not JupyterLab's /lab)
    (re.compile(r"Cannot read properties of undefined \(reading 'schema'\)"), "/static/notebook/"),
    # Notebook 7 restoring its file-browser state before that plugin registered (seen under load)
    (re.compile(r"Command 'filebrowser:open-path' not registered"), "/static/notebook/"),
]


def unexpected_page_errors(errors: Sequence[str]) -> list[str]:
    """``errors`` (``"message @ stack"``) less the known host errors listed above."""

    def known(e: str) -> bool:
        ours = "blob:" in e or "data:text/javascript" in e or "anywidget" in e or "lens" in e.lower()
        return not ours and any(m.search(e) and host in e for m, host in KNOWN_HOST_ERRORS)

    return [e for e in errors if not known(e)]
