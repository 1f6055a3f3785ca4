"""Bokeh companion plots: glyphs, data checked against the result's arrays, hovers, no CDN, no raw HTML."""

from __future__ import annotations

import re

import numpy as np
import pytest
from bokeh.embed import file_html
from bokeh.models import ColorBar, GlyphRenderer, HoverTool, LogColorMapper, LogScale, Span
from bokeh.resources import INLINE
from fakes import HOSTILE_STRINGS, make_result

from lens_widget import plots
from lens_widget.metrics import RESULT_METRICS, TRAJECTORY_METRICS
from lens_widget.result import LensResult
from lens_widget.tokens import TokenLookupError, display_token

ALL = tuple(range(50))  # track the whole (synthetic) vocabulary


def glyphs(fig) -> dict[str, list[GlyphRenderer]]:
    out: dict[str, list[GlyphRenderer]] = {}
    for r in fig.renderers:
        if isinstance(r, GlyphRenderer):
            out.setdefault(type(r.glyph).__name__, []).append(r)
    return out


def tooltip_fields(fig) -> dict[str, str]:
    hovers = fig.select(type=HoverTool)
    assert len(hovers) == 1
    return dict(hovers[0].tooltips)


def data(renderer: GlyphRenderer) -> dict:
    return renderer.data_source.data


def html_of(fig) -> str:
    html = file_html(fig, INLINE, "test")
    assert '<script src="http' not in html
    assert not re.search(r"<link[^>]+href=\"http", html)
    return html


def axis_labels(axis) -> list[str]:
    overrides = axis.major_label_overrides
    return [overrides[i].text for i in sorted(overrides)]


# -- heatmap --------------------------------------------------------------------------------------
def test_heatmap_default_tokens_are_final_topk_with_exact_values():
    r = make_result(k=5, tracked=ALL)
    fig = plots.heatmap(r, position=-1)
    g = glyphs(fig)
    assert list(g) == ["Rect"]
    d = data(g["Rect"][0])
    assert {"x", "y", "token", "token_id", "layer", "value"} <= set(d)
    col = r.position_index(-1)
    ids = r.topk_ids[0, -1, col, :5].tolist()
    assert sorted(set(d["token_id"]), key=list(d["token_id"]).index) == ids
    for x, y, tid, tok, layer, v in zip(d["x"], d["y"], d["token_id"], d["token"], d["layer"], d["value"]):
        m = ALL.index(tid)
        assert v == pytest.approx(float(r.tracked_prob[0, y, col, m]))
        assert tid == ids[x] and tok == r.display(tid) and layer == r.site_labels[y]
    assert len(d["value"]) == r.n_sites * 5
    # rows bottom to top in depth order: the final site is the top row
    assert axis_labels(fig.yaxis[0]) == r.site_labels
    assert axis_labels(fig.xaxis[0]) == [r.display(i) for i in ids]
    assert any(isinstance(m, ColorBar) for m in fig.right)
    assert fig.right[0].color_mapper.high == pytest.approx(max(d["value"]))  # autoscaled, as in the tutorial
    assert set(tooltip_fields(fig)) >= {"token", "layer", "prob"}
    assert tooltip_fields(fig)["token"] == "@token"
    html_of(fig)


@pytest.mark.parametrize("metric", TRAJECTORY_METRICS)
def test_heatmap_tracked_tokens_each_metric(metric):
    array = f"tracked_{metric}"
    r = make_result(n_positions=4, tracked=(3, 7, 11))
    fig = plots.heatmap(r, tokens=[7, "t3"], position=2, metric=metric)
    d = data(glyphs(fig)["Rect"][0])
    assert set(d["token_id"]) == {3, 7}
    for y, tid, v in zip(d["y"], d["token_id"], d["value"]):
        m = r.tracked_ids.tolist().index(tid)
        assert v == pytest.approx(float(getattr(r, array)[0, y, 2, m]))
    assert metric in tooltip_fields(fig)
    mapper = fig.right[0].color_mapper
    assert isinstance(mapper, LogColorMapper) == (metric == "rank")


def test_heatmap_errors():
    r = make_result(tracked=(3, 7))
    with pytest.raises(TokenLookupError, match="track="):
        plots.heatmap(r, tokens=[3, 9])
    with pytest.raises(TokenLookupError, match="track="):
        plots.heatmap(r)  # the final top-k is not tracked
    with pytest.raises(TokenLookupError, match="track="):
        plots.heatmap(r, tokens=["no such token"])
    with pytest.raises(ValueError, match="metric"):
        plots.heatmap(r, tokens=[3], metric="probability")


def test_heatmap_tutorial_dict_any_token():
    rng = np.random.default_rng(1)
    layers = {i: rng.dirichlet(np.ones(30), size=(2, 4)) for i in range(3)}  # {layer: [batch, pos, vocab]}
    fig = plots.heatmap(layers, prompt=1, position=-1)
    d = data(glyphs(fig)["Rect"][0])
    top = np.argsort(-layers[2][1, -1])[:10].tolist()
    assert sorted(set(d["token_id"]), key=list(d["token_id"]).index) == top
    for y, tid, v in zip(d["y"], d["token_id"], d["value"]):
        assert v == pytest.approx(layers[y][1, -1, tid])
    ranks = data(glyphs(plots.heatmap(layers, tokens=[5], metric="rank"))["Rect"][0])
    for y, v in zip(ranks["y"], ranks["value"]):
        assert v == 1 + (layers[y][0, -1] > layers[y][0, -1, 5]).sum()

    class Tok:
        def decode(self, ids):
            return f" w{ids[0]}"

    named = data(glyphs(plots.heatmap(layers, tokens=[5, 6], tokenizer=Tok()))["Rect"][0])
    assert set(named["token"]) == {display_token(" w5"), display_token(" w6")}


# -- trajectory -----------------------------------------------------------------------------------
def test_trajectory_lines_per_token_and_position():
    r = make_result(tracked=(3, 7, 11))
    fig = plots.trajectory(r, [3, 11], positions=[1, -1], metric="prob")
    g = glyphs(fig)
    assert len(g["Line"]) == 4 and len(g["Scatter"]) == 4
    seen = set()
    for rend in g["Line"]:
        d = data(rend)
        assert {"x", "value", "layer", "token", "position"} <= set(d)
        tid, pos = d["token_id"][0], d["position"][0]
        m = r.tracked_ids.tolist().index(tid)
        np.testing.assert_allclose(d["value"], r.tracked_prob[0, :, pos, m], rtol=1e-6)
        assert list(d["layer"]) == r.site_labels
        seen.add((tid, pos))
    assert seen == {(3, 1), (3, 5), (11, 1), (11, 5)}
    labels = [item.label.value for item in fig.legend[0].items]
    assert labels == ["t3 @ 1", "t3 @ 5", "t11 @ 1", "t11 @ 5"]
    assert set(tooltip_fields(fig)) >= {"token", "position", "layer", "prob"}
    assert fig.select_one(HoverTool).renderers == g["Scatter"]
    html_of(fig)


def test_trajectory_rank_log_axis_and_errors():
    r = make_result(tracked=(3, 7))
    fig = plots.trajectory(r, 7, metric="rank")
    assert isinstance(fig.y_scale, LogScale)
    d = data(glyphs(fig)["Line"][0])
    np.testing.assert_array_equal(d["value"], r.tracked_rank[0, :, -1, 1])
    with pytest.raises(ValueError, match="metric"):
        plots.trajectory(r, 7, metric="kl")
    with pytest.raises(TokenLookupError, match="track="):
        plots.trajectory(r, 8)


# -- logit difference -----------------------------------------------------------------------------
def test_logit_diff_one_line_per_prompt():
    r = make_result(n_prompts=3, tracked=(3, 7))
    fig = plots.logit_diff(r, 3, 7, position=-2)
    g = glyphs(fig)
    assert len(g["Line"]) == 3 and len(g["Scatter"]) == 3
    for b, rend in enumerate(g["Line"]):
        d = data(rend)
        expected = r.tracked_logit[b, :, 4, 0] - r.tracked_logit[b, :, 4, 1]
        np.testing.assert_allclose(d["value"], expected, rtol=1e-6)
        assert d["prompt"][0].startswith(f"{b}:")
    spans = [m for m in fig.center if isinstance(m, Span)]
    assert len(spans) == 1 and spans[0].location == 0 and spans[0].dimension == "width"
    assert set(tooltip_fields(fig)) >= {"prompt", "layer", "logit diff"}
    html_of(fig)


def test_logit_diff_plain_values():
    fig = plots.logit_diff([0.5, -1.0, 2.0], labels=["L0", "L1", "L2"], token_a=" Paris", token_b=" London")
    (line,) = glyphs(fig)["Line"]
    np.testing.assert_array_equal(data(line)["value"], [0.5, -1.0, 2.0])
    assert axis_labels(fig.xaxis[0]) == ["L0", "L1", "L2"]
    assert "␣Paris" in fig.title.text.text  # the leading space made visible, as in the grid
    named = plots.logit_diff([[0.5, -1.0, 2.0], [1.0, 0.0, 0.5]], " Paris", " London", line_labels=["France", "Germany"])
    assert [item.label.value for item in named.legend[0].items] == ["France", "Germany"]
    with pytest.raises(ValueError, match="line_labels"):
        plots.logit_diff([[0.5, -1.0, 2.0]], line_labels=["a", "b"])
    two = plots.logit_diff(np.arange(8.0).reshape(2, 4))
    assert len(glyphs(two)["Line"]) == 2
    with pytest.raises(ValueError, match="labels"):
        plots.logit_diff([1.0, 2.0], labels=["a"])
    with pytest.raises(ValueError, match="token_a"):
        plots.logit_diff(make_result())
    with pytest.raises(TokenLookupError, match="track="):
        plots.logit_diff(make_result(), 3, 9)


# -- lens grid ------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", RESULT_METRICS)
def test_lens_grid_cells_match_result(metric):
    r = make_result(n_sites=6, n_positions=7, seed=3)
    fig = plots.lens_grid(r, metric=metric)
    g = glyphs(fig)
    assert set(g) == {"Rect", "Text"}
    assert g["Text"][0].glyph.text == "cell"
    d = data(g["Rect"][0])
    assert {"x", "y", "layer", "input", "top1", "top1_prob", "next", "next_rank", "entropy", "kl", "value"} <= set(d)
    assert len(d["value"]) == r.n_sites * r.n_positions
    arrays = {
        "top1_prob": r.topk_probs[..., 0],
        "next_prob": r.next_prob,
        "next_rank": np.where(r.next_rank > 0, r.next_rank, np.nan),
        "entropy": r.entropy,
        "kl": r.kl,
    }
    for i, (x, y) in enumerate(zip(d["x"], d["y"])):
        np.testing.assert_allclose(d["value"][i], arrays[metric][0, y, x], rtol=1e-6)
        assert d["top1"][i] == r.display(r.topk_ids[0, y, x, 0])
        assert d["input"][i] == r.display(r.input_ids[0, x])
        assert d["layer"][i] == r.site_labels[y]
        last = x == r.n_positions - 1  # no next token: rank 0 in the result, NaN (grey) in the plot
        assert np.isnan(d["next_rank"][i]) if last else d["next_rank"][i] == r.next_rank[0, y, x]
    assert axis_labels(fig.yaxis[0]) == r.site_labels  # final layer on top
    assert axis_labels(fig.below[0]) == [r.display(i) for i in r.input_ids[0]]
    assert axis_labels(fig.above[0]) == [r.display(i) if i >= 0 else "" for i in r.next_ids[0]]
    mapper = fig.right[0].color_mapper
    assert isinstance(mapper, LogColorMapper) == (metric == "next_rank")
    if metric.endswith("prob"):
        assert (mapper.low, mapper.high) == (0, 1)
    tips = tooltip_fields(fig)
    assert {"top-1", "top-1 prob", "next token", "next rank", "entropy", "KL to final"} <= set(tips)
    assert fig.select_one(HoverTool).renderers == g["Rect"]
    html_of(fig)


def test_lens_grid_positions_and_size():
    r = make_result(n_positions=12)
    full = plots.lens_grid(r)
    part = plots.lens_grid(r, positions=slice(-4, None))
    d = data(glyphs(part)["Rect"][0])
    assert sorted(set(d["position"])) == [8, 9, 10, 11]
    assert (full.frame_width, part.frame_width) == (12 * 64, 4 * 64)  # sized to the data
    assert plots.lens_grid(make_result(n_sites=9)).frame_height == 9 * 22
    picked = data(glyphs(plots.lens_grid(r, positions=[0, -1]))["Rect"][0])
    assert sorted(set(picked["position"])) == [0, 11]
    with pytest.raises(IndexError):
        plots.lens_grid(r, positions=[40])
    with pytest.raises(ValueError, match="metric"):
        plots.lens_grid(r, metric="prob")


# -- safety and output ----------------------------------------------------------------------------
def _hostile_figures() -> list:
    r = make_result(hostile=True, tracked=ALL, n_prompts=2)
    r.prompts = [HOSTILE_STRINGS[0], HOSTILE_STRINGS[1]]
    r.model_name = HOSTILE_STRINGS[1]
    return [
        plots.heatmap(r, tokens=[0, 1, 2]),
        plots.trajectory(r, [0, 1, 2], positions=[0, -1]),
        plots.logit_diff(r, 0, 1),
        plots.lens_grid(r),
        plots.logit_diff([1.0, 2.0], labels=HOSTILE_STRINGS[:2], token_a=HOSTILE_STRINGS[0]),
    ]


def test_hostile_token_strings_never_raw_html():
    raw = [HOSTILE_STRINGS[0], display_token(HOSTILE_STRINGS[0]), HOSTILE_STRINGS[1], "<script>window.__pwned"]
    for fig in _hostile_figures():
        html = html_of(fig)
        for s in raw:
            assert s not in html
        # the strings are there, as escaped JSON data
        assert "&lt;/script&gt;&lt;script&gt;window.__pwned=1" in html or "&lt;img" in html


def test_no_safe_tooltips_and_fields_are_columns():
    for fig in _hostile_figures():
        hover = fig.select_one(HoverTool)
        sources = [r.data_source.data for r in (hover.renderers if hover.renderers != "auto" else fig.renderers)]
        for _, template in hover.tooltips:
            assert "{safe}" not in template
            for field in re.findall(r"@(\w+)", template):
                assert all(field in d for d in sources), field


def test_save_show_and_notebook_are_inline(tmp_path, monkeypatch):
    fig = plots.lens_grid(make_result())
    path = plots.save(fig, tmp_path / "grid.html")
    text = path.read_text(encoding="utf-8")
    assert '<script src="http' not in text and "Bokeh" in text
    opened = []
    monkeypatch.setattr(plots.webbrowser, "open", opened.append)
    shown = plots.show(fig)
    assert opened == [shown.as_uri()] and '<script src="http' not in shown.read_text(encoding="utf-8")
    shown.unlink()
    calls = []
    monkeypatch.setattr(plots, "output_notebook", lambda **kw: calls.append(kw))
    plots.output_notebook_inline()
    assert calls == [{"resources": INLINE, "hide_banner": True}]


def test_the_fake_has_the_shape_of_a_real_result_and_plots_read_a_real_one():
    """The plot tests above run on fakes.make_result: it must look like what the engine returns
    (same fields, dtypes and ranks), and a real engine result must plot with its own numbers."""
    import dataclasses

    from lens_widget import LogitLens
    from zoo import tiny

    fake = make_result()
    real = LogitLens(tiny("llama")).run("Hello there", track=[5, 9], progress=False)
    assert isinstance(fake, LensResult) and isinstance(real, LensResult)
    for f in dataclasses.fields(LensResult):
        a, b = getattr(fake, f.name), getattr(real, f.name)
        if isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray) and a.ndim == b.ndim and a.dtype.kind == b.dtype.kind, (f.name, a.dtype, b.dtype)
        else:
            assert type(a) is type(b), f.name
    fig = plots.lens_grid(real, metric="kl")
    d = data(glyphs(fig)["Rect"][0])
    assert len(d["value"]) == real.n_sites * real.n_columns()
    for i, (x, y) in enumerate(zip(d["x"], d["y"])):
        np.testing.assert_allclose(d["value"][i], real.kl[0, y, x], rtol=1e-6)
        assert d["top1"][i] == real.display(real.topk_ids[0, y, x, 0])


@pytest.mark.parametrize("metric", ["prob", "rank"])
def test_generation_plot_one_line_per_layer_over_the_steps(metric):
    from lens_widget import LogitLens, display_token
    from zoo import tiny

    hm = tiny("llama")
    res = LogitLens(hm, compile="never").generate("Hello wor", 6, track=["o", "l"], progress=False)
    tid = hm.tokens.token_id("o")
    fig = plots.generation(res, tid, metric=metric)
    g = glyphs(fig)
    assert len(g["Line"]) == len(g["Scatter"]) == res.n_sites
    n0 = int(res.generated_from[0])
    ids = res.input_ids[0].tolist()
    m = res.tracked_ids.tolist().index(tid)
    table = res.tracked_prob if metric == "prob" else res.tracked_rank
    for s, rend in enumerate(g["Line"]):
        d = data(rend)
        assert list(d["layer"]) == [res.site_labels[s]] * 6
        # step i: the column whose next token is the i-th written one (position n0 + i - 1)
        want = [table[0, s, int(np.nonzero(res.positions[0] == n0 + i - 1)[0][0]), m] for i in range(6)]
        np.testing.assert_allclose(d["value"], want, rtol=1e-6)
        shown = [display_token(hm.tokenizer.decode([t])) for t in ids[n0:]]
        assert list(d["written"]) == [f"{x} #{t}" if shown.count(x) > 1 else x for x, t in zip(shown, ids[n0:])]
    assert fig.yaxis[0].__class__.__name__ == ("LogAxis" if metric == "rank" else "LinearAxis")
    assert set(tooltip_fields(fig)) >= {"layer", "step", "written", metric}
    html_of(fig)
    # a few layers only, by label
    assert len(glyphs(plots.generation(res, "o", layers=["emb", res.site_labels[-1]]))["Line"]) == 2


def test_generation_plot_needs_a_generation_and_a_tracked_token():
    r = make_result(tracked=(3,))
    with pytest.raises(ValueError, match="not a generation"):
        plots.generation(r, 3)
    from lens_widget import LogitLens
    from zoo import tiny

    res = LogitLens(tiny("llama"), compile="never").generate("ab", 2, track=["a"], progress=False)
    with pytest.raises(TokenLookupError, match="track="):
        plots.generation(res, 5)
