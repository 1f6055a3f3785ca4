"""The example notebooks run top to bottom in a fresh kernel, offline, and show what they promise.

Each notebook is executed in memory (nbclient, kernel ``python3``, working directory ``examples/``);
nothing is written back: the committed notebooks stay without outputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbclient  # a test dependency (pyproject's [test] extra): missing, these tests error, never skip
import nbformat
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = ["logit_lens_tutorial.ipynb", "quickstart.ipynb", "analysis.ipynb", "tuned_lens.ipynb"]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
BOKEH_EXEC = "application/vnd.bokehjs_exec.v0+json"
BOKEH_LOAD = "application/vnd.bokehjs_load.v0+json"
SCRIPT_SRC = re.compile(r"""<script[^>]*\bsrc\s*=\s*["']?https?:""", re.I)
# bokeh's loader fetches what these lists name; INLINE resources leave them empty
URL_LISTS = re.compile(r"\b(?:js|css)_urls\s*=\s*(\[[^\]]*\])")


def _execute(name: str):
    """Run a notebook in memory (timings belong in bench/, not here)."""
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    return nb


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


def _assert_bokeh_figure(cell, *glyphs: str) -> str:
    """The cell shows a bokeh Figure: a root ``<div data-root-id>`` (text/html) and the BokehJS
    exec output whose document renders a ``Figure`` with that id into that div, holding
    ``glyphs`` (e.g. ``"Rect"``). Any other HTML does not count. Returns the document's JS."""
    outs = [o for o in cell.get("outputs", []) if o.get("output_type") == "display_data"]
    html = "".join(o["data"]["text/html"] for o in outs if "text/html" in o.get("data", {}))
    js = "".join(o["data"].get("application/javascript", "") for o in outs if BOKEH_EXEC in o.get("data", {}))
    assert js, f"cell {cell.id} has no BokehJS exec output: {_mimes(cell)}"
    divs = re.findall(r'<div id="([^"]+)" data-root-id="([^"]+)"', html)
    assert len(divs) == 1, f"cell {cell.id}: expected one bokeh root div, got {divs} in {html[:300]!r}"
    div, root = divs[0]
    assert f'"roots":{{"{root}":"{div}"}}' in js, f"cell {cell.id}: the document does not render into its div"
    assert f'"name":"Figure","id":"{root}"' in js, f"cell {cell.id}: the root {root} is not a Figure"
    for glyph in glyphs:
        assert f'"name":"{glyph}"' in js, f"cell {cell.id}: the figure has no {glyph} glyph"
    return js


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
    nb = _execute("logit_lens_tutorial.ipynb")
    cells = _cells(nb)
    _assert_offline_bokeh(nb)
    for cid, glyph in (("logit-diff", "Line"), ("heatmap", "Rect"), ("lens-grid", "Rect")):
        _assert_bokeh_figure(cells[cid], glyph)
    assert '"text":{"type":"field","field":"cell"}' in _assert_bokeh_figure(cells["lens-grid"], "Text")
    assert WIDGET_VIEW in _mimes(cells["widget"])
    # the BOS note shows what encode gives, and the lens finds Paris at the end
    assert "tokenizer.encode(' Paris') = [7042]" in _text(cells["token-ids"])
    assert "MultiTokenError" in _text(cells["token-ids"])
    assert "from site 30 (resid_out_29)" in _text(cells["checks"])
    # the check cells ran (an assert failing there would have raised) and read the figure itself
    assert "fig.renderers" in "".join(cells["heatmap-check"].source)


@pytest.mark.slow
def test_quickstart_notebook():
    nb = _execute("quickstart.ipynb")
    cells = _cells(nb)
    ids = [c.id for c in nb.cells]
    # a real JupyterLab session (Playwright) relies on these cells and their order
    assert ids.index("widget") < ids.index("observe") < ids.index("selected") < ids.index("track")
    assert WIDGET_VIEW in _mimes(cells["widget"])
    assert WIDGET_VIEW in _mimes(cells["observe"])  # the Output widget that logs clicks
    assert _text(cells["selected"]).strip() == "{}"  # nothing clicked in a headless run
    assert "␣London" in _text(cells["track"])
    assert "lens.html" in _text(cells["save"])
    # the shipped lenses side by side in one widget (the last cell: a JupyterLab session drives the ones above)
    assert ids[-1] == "lenses" and WIDGET_VIEW in _mimes(cells["lenses"])
    assert _text(cells["lenses"]).strip() == "['logit lens', 'tuned lens', 'J lens']"


@pytest.mark.slow
def test_analysis_notebook():
    nb = _execute("analysis.ipynb")
    cells = _cells(nb)
    _assert_offline_bokeh(nb)
    for cid in ("logit-diff", "mean-prob"):
        _assert_bokeh_figure(cells[cid], "Line")
    assert "text/html" in _mimes(cells["depth-table"])
    assert "mean probability of the answer at the final layer" in _text(cells["checks"])

@pytest.mark.slow
def test_tuned_lens_notebook():
    nb = _execute("tuned_lens.ipynb")
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
