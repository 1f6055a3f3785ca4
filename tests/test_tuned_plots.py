"""The held-out KL by layer plot (logit vs tuned), in tests/test_plots.py's style: glyphs, data
checked against the inputs, hover fields, no CDN."""

from __future__ import annotations

import numpy as np
import pytest
from bokeh.models import GlyphRenderer, HoverTool
from fakes import make_result

from lens_widget import plots

HELD = {
    "model": "m",
    "sites": ["embed", "resid_out_0", "resid_out_1", "resid_out_2"],
    "tokens": 100,
    "kl": {"logit lens": [9.0, 5.0, 2.0, 0.0], "tuned lens": [1.5, 1.0, 0.5, 0.0]},
}


def lines(fig):
    return [r for r in fig.renderers if isinstance(r, GlyphRenderer) and type(r.glyph).__name__ == "Line"]


def test_held_out_dict_one_line_per_lens():
    fig = plots.kl_by_layer(HELD)
    ls = lines(fig)
    assert len(ls) == 2
    for r, name in zip(ls, ["logit lens", "tuned lens"]):
        d = r.data_source.data
        np.testing.assert_allclose(d["value"], HELD["kl"][name])
        assert list(d["layer"]) == ["emb", "0", "1", "2"] and set(d["lens"]) == {name}
    hover = fig.select_one(HoverTool)
    assert dict(hover.tooltips) == {"lens": "@lens", "layer": "@layer", "KL (nats)": "@value{%.4g}"}
    assert len(hover.renderers) == 2
    assert '<script src="http' not in plots.to_html(fig)


def test_mapping_of_results_and_log_axis():
    a, b = make_result(seed=1), make_result(seed=2)
    fig = plots.kl_by_layer({"logit lens": a, "tuned lens": b}, log=True)
    ls = lines(fig)
    for r, res in zip(ls, (a, b)):
        want = np.nanmean(np.moveaxis(res.kl, 1, 0).reshape(res.n_sites, -1), axis=1)
        keep = want > 0
        np.testing.assert_allclose(r.data_source.data["value"], want[keep], rtol=1e-6)
    fig2 = plots.kl_by_layer({"logit lens": HELD, "tuned lens": [1, 2, 3, 0]}, log=True)
    assert list(lines(fig2)[1].data_source.data["value"]) == [1, 2, 3]  # the 0 is left off a log axis


def test_errors():
    with pytest.raises(ValueError, match="needs"):
        plots.kl_by_layer({})
    with pytest.raises(TypeError, match="expected a LensResult"):
        plots.kl_by_layer({"x": object()})
    with pytest.raises(ValueError, match="name one of them"):
        plots.kl_by_layer({"other": HELD})
