"""The built wheel ships the front-end bundle (hatch `artifacts`)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

from browser_support import require_bundle

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_bundle(tmp_path):
    require_bundle()
    # hatchling in this environment: build offline; otherwise pip fetches it into an isolated env
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", *isolation, "-w", str(tmp_path), "-q"],
        check=True,
    )
    wheels = list(tmp_path.glob("lens_widget-*.whl"))
    assert len(wheels) == 1, wheels
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "lens_widget/static/widget.js" in names
    assert "lens_widget/widget/export.py" in names
