"""The example notebooks run top to bottom in a fresh kernel, offline, and show what they promise.

Each notebook is executed in memory (nbclient, kernel ``python3``, working directory ``examples/``);
nothing is written back: the committed notebooks stay without outputs.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = ["logit_lens_tutorial.ipynb", "quickstart.ipynb", "analysis.ipynb", "tuned_lens.ipynb"]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
BOKEH_EXEC = "application/vnd.bokehjs_exec.v0+json"
BOKEH_LOAD = "application/vnd.bokehjs_load.v0+json"
SCRIPT_SRC = re.compile(r"""<script[^>]*\bsrc\s*=\s*["']?https?:""", re.I)
# bokeh's loader fetches what these lists name; INLINE resources leave them empty
URL_LISTS = re.compile(r"\b(?:js|css)_urls\s*=\s*(\[[^\]]*\])")


def _execute(name: str) -> tuple[object, float]:
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    return nb, time.perf_counter() - start


def _cells(nb) -> dict[str, object]:
    return {c.id: c for c in nb.cells}


def _mimes(cell) -> set[str]:
    return {m for o in cell.get("outputs", []) for m in o.get("data", {})}


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def _assert_offline_bokeh(nb) -> None:
    """BokehJS was loaded inline once, and no output points a browser at a CDN.

    (The inlined BokehJS itself contains URLs, e.g. MathJax's, fetched only for TeX labels,
    which the plots never use; what matters is the loader's URL lists and script tags.)
    """
    loads = [c for c in nb.cells if BOKEH_LOAD in _mimes(c)]
    assert len(loads) == 1, f"BokehJS loaded in cells {[c.id for c in loads]}, expected once"
    lists = URL_LISTS.findall(loads[0].outputs[0]["data"].get("application/javascript", ""))
    assert lists and all(u.replace(" ", "") == "[]" for u in lists), lists
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            for mime, value in out.get("data", {}).items():
                text = value if isinstance(value, str) else json.dumps(value)
                assert not SCRIPT_SRC.search(text), f"cell {cell.id}: {mime} loads a script from the network"


def _assert_bokeh_figure(cell) -> None:
    mimes = _mimes(cell)
    assert BOKEH_EXEC in mimes or "text/html" in mimes, f"cell {cell.id} shows no bokeh figure: {mimes}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean(name):
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    nbformat.validate(nb)
    ids = [c.id for c in nb.cells]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[a-z0-9-]+", i) for i in ids), ids
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: cell {cell.id} has outputs"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.slow
def test_tutorial_notebook():
    nb, seconds = _execute("logit_lens_tutorial.ipynb")
    cells = _cells(nb)
    _assert_offline_bokeh(nb)
    for cid in ("logit-diff", "heatmap", "lens-grid"):
        _assert_bokeh_figure(cells[cid])
    assert WIDGET_VIEW in _mimes(cells["widget"])
    # the BOS note shows what encode gives, and the lens finds Paris at the end
    assert "tokenizer.encode(' Paris') = [7042]" in _text(cells["token-ids"])
    assert "MultiTokenError" in _text(cells["token-ids"])
    assert "from site 30 (resid_out_29)" in _text(cells["checks"])
    assert seconds < 120, f"took {seconds:.0f} s"


@pytest.mark.slow
def test_quickstart_notebook():
    nb, seconds = _execute("quickstart.ipynb")
    cells = _cells(nb)
    ids = [c.id for c in nb.cells]
    # a real JupyterLab session (Playwright) relies on these cells and their order
    assert ids.index("widget") < ids.index("observe") < ids.index("selected") < ids.index("track")
    assert WIDGET_VIEW in _mimes(cells["widget"])
    assert WIDGET_VIEW in _mimes(cells["observe"])  # the Output widget that logs clicks
    assert _text(cells["selected"]).strip() == "{}"  # nothing clicked in a headless run
    assert "␣London" in _text(cells["track"])
    assert "lens.html" in _text(cells["save"])
    assert seconds < 120, f"took {seconds:.0f} s"


@pytest.mark.slow
def test_analysis_notebook():
    nb, seconds = _execute("analysis.ipynb")
    cells = _cells(nb)
    _assert_offline_bokeh(nb)
    for cid in ("logit-diff", "mean-prob"):
        _assert_bokeh_figure(cells[cid])
    assert "text/html" in _mimes(cells["depth-table"])
    assert "mean probability of the answer at the final layer" in _text(cells["checks"])
    assert seconds < 120, f"took {seconds:.0f} s"


@pytest.mark.slow
def test_tuned_lens_notebook():
    nb, seconds = _execute("tuned_lens.ipynb")
    cells = _cells(nb)
    _assert_offline_bokeh(nb)
    _assert_bokeh_figure(cells["kl-plot"])
    assert "step 3: mean KL over layers" in _text(cells["train"])
    assert "TunedLens('SmolLM2-135M-Instruct', layers=30, d_model=576)" in _text(cells["shipped"])
    assert WIDGET_VIEW in _mimes(cells["grid-logit"]) and WIDGET_VIEW in _mimes(cells["grid-tuned"])
    assert "tuned lens" in _text(cells["grid-tuned"])
    text = _text(cells["kl-plot"])
    logit, tuned = (float(text.split(f"{name} ")[1].split(" nats")[0]) for name in ("logit lens", "tuned lens"))
    assert tuned < logit / 3, text
    assert seconds < 240, f"took {seconds:.0f} s"
