"""The progress bar of a run (the widget's first grid, ``LogitLens.run``, a comparison): it
waits :data:`~lens_widget.progress.BAR_DELAY_S` before it shows, so a quick run draws none, and
in a notebook it vanishes when done (a finished ipywidgets bar stayed above every widget)."""

from __future__ import annotations

import pytest
from tqdm.std import tqdm as std_tqdm

from lens_widget import progress
from lens_widget.engine import LogitLens
from lens_widget.widget import LensWidget
from zoo import tiny


def recording_bar(module: str):
    """A tqdm class whose MRO has one from ``module`` (``tqdm.notebook`` as in a notebook), that
    records how each bar was made."""
    made: list[dict] = []
    base = type("Base", (std_tqdm,), {"__module__": module})

    class Bar(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            super().__init__(*args, **{**kwargs, "disable": True})

    return Bar, made


@pytest.mark.parametrize(("module", "leave"), [("tqdm.notebook", False), ("tqdm.std", True)])
def test_the_widgets_first_grid_bar_is_delayed_and_in_a_notebook_does_not_stay(monkeypatch, module, leave):
    Bar, made = recording_bar(module)
    monkeypatch.setattr(progress, "tqdm", Bar)
    w = LensWidget(tiny("llama"), "Hello world")
    w.close()
    assert [(k["desc"], k["delay"], k["leave"], k["disable"]) for k in made] == [("Logit lens", progress.BAR_DELAY_S, leave, False)]
    assert progress.BAR_DELAY_S > 0


def test_a_quick_run_prints_no_bar_but_a_slow_one_does(monkeypatch, capsys):
    lens = LogitLens(tiny("llama"))
    monkeypatch.setattr(progress, "BAR_DELAY_S", 1e6)  # every run is quicker than this
    lens.run("Hello world")
    assert "chunk" not in capsys.readouterr().err
    monkeypatch.setattr(progress, "BAR_DELAY_S", 0)  # the control: with no delay the bar shows
    lens.run("Hello world")
    assert "Logit lens" in capsys.readouterr().err


def test_a_comparison_run_uses_the_same_bar(monkeypatch):
    Bar, made = recording_bar("tqdm.notebook")
    monkeypatch.setattr(progress, "tqdm", Bar)
    lens = LogitLens(tiny("llama"))
    lens.compare("Hello world", "Hi world")
    assert [(k["desc"], k["leave"], k["delay"]) for k in made] == [("Compare", False, progress.BAR_DELAY_S)]
