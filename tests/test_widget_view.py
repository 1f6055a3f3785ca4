"""The traits that size the grid (lens_widget/widget/viewing.py): defaults, keywords, checks, export."""

from __future__ import annotations

import pytest
import traitlets as t

from lens_widget.widget import LensWidget
from lens_widget.widget.viewing import ZOOM_MAX, ZOOM_MIN
from zoo import tiny

VIEW = ("height", "compact", "zoom", "fit_width", "col_range")


@pytest.fixture(scope="module")
def model():
    return tiny("llama")


def test_defaults_are_the_whole_grid_at_its_own_height(model):
    w = LensWidget(model, "Hello world", progress=False)
    try:
        assert (w.height, w.compact, w.zoom, w.fit_width, w.col_range) == (0, False, 1.0, False, [])
        state = w.export_state()
        assert {k: state[k] for k in VIEW} == {"height": 0, "compact": False, "zoom": 1.0, "fit_width": False, "col_range": []}
        synced = {name for name in w.keys}
        assert set(VIEW) <= synced  # they reach the front end
    finally:
        w.close()


def test_keywords_set_them_and_an_exported_page_keeps_them(model):
    w = LensWidget(model, "Hello world", compact=True, zoom=2, fit_width=True, col_range=[-3, -1], height=300, progress=False)
    try:
        state = w.export_state()
        assert {k: state[k] for k in VIEW} == {"height": 300, "compact": True, "zoom": 2.0, "fit_width": True, "col_range": [-3, -1]}
    finally:
        w.close()


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("zoom", ZOOM_MAX + 0.5, "zoom must be in"),
        ("zoom", ZOOM_MIN / 2, "zoom must be in"),
        ("zoom", 0, "zoom must be in"),
        ("col_range", [3], "col_range must be"),
        ("col_range", [1, 2, 3], "col_range must be"),
        ("col_range", [5, 2], "first <= last"),
        ("col_range", [-1, -4], "first <= last"),
        ("height", -1, "height must be"),
    ],
)
def test_bad_values_are_refused_naming_the_trait(model, name, value, words):
    w = LensWidget(model, "Hello world", progress=False)
    try:
        with pytest.raises(t.TraitError, match=words):
            setattr(w, name, value)
        w.col_range = [2, -1]  # mixed signs: from column 2 to the last, checked by the front end's clamp
        assert w.col_range == [2, -1]
    finally:
        w.close()
