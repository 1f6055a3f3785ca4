"""The lens-quality measures (scripts/jlens_quality.py) against independent computations on a
tiny model, their plot (plots.lens_quality_plot: glyph data = the table, hover, no CDN), and the
measured table that ships (bench/results/jlens_quality.json) is whole and self-consistent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bokeh.models import GlyphRenderer, HoverTool

from lens_widget import plots
from lens_widget.decoders import Decoder
from lens_widget.jacobian_lens import JacobianLens
from test_jacobian_lens import naive_jlens, random_jacobians
from zoo import tiny

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "jlens_quality.json"


def quality_script():
    spec = importlib.util.spec_from_file_location("jlens_quality", ROOT / "scripts" / "jlens_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- the measures ------------------------------------------------------------------------------------
def test_per_layer_kl_and_top1_equal_a_naive_computation():
    from lens_widget.corpus import corpus_texts
    from lens_widget.tuned_training import token_stream

    q = quality_script()
    hm = tiny("llama")
    jac = random_jacobians(hm)
    decs = {"logit": Decoder(hm), "jacobian": JacobianLens(hm, jac)}
    sites = hm.default_sites()
    got = q.per_layer(hm, decs, sites, n_tokens=40, seq_len=24, skip_first=4)
    # the same rows, by hand: Hugging Face's hidden states, J h, the model's own norm and head, float64
    rows = token_stream(hm, corpus_texts("held_out"), 24)
    kl = {n: np.zeros(len(sites)) for n in decs}
    top1 = {n: np.zeros(len(sites)) for n in decs}
    n = 0
    eye = {k: torch.eye(32) for k in jac}
    while n < 40:
        row = next(rows)
        for name, mats in (("logit", eye), ("jacobian", jac)):
            z = naive_jlens(hm, mats, None, ids=row)[:, 4:]  # [sites, T, V]
            logp = z - np.logaddexp.reduce(z, axis=-1, keepdims=True)
            final = logp[-1]
            kl[name] += (np.exp(final) * (final - logp)).sum(-1).sum(-1)
            top1[name] += (z.argmax(-1) == z[-1].argmax(-1)).sum(-1)
        n += z.shape[1]
    assert got["tokens"] == n
    for name in decs:
        np.testing.assert_allclose(got["kl"][name], kl[name] / n, rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(got["top1"][name], top1[name] / n, atol=1.5 / n, err_msg=name)  # a near-tie may flip
    assert got["kl"]["logit"][-1] == pytest.approx(0, abs=1e-6) and got["top1"]["jacobian"][-1] == 1.0
    assert not np.allclose(got["kl"]["logit"][:-1], got["kl"]["jacobian"][:-1])


def test_two_hop_ranks_equal_a_naive_computation(monkeypatch):
    q = quality_script()
    hm = tiny("llama")
    jac = random_jacobians(hm)
    monkeypatch.setattr(q, "TWO_HOP", [("The cat sat on the", "mat", "rug"), ("Call me Ishmael", "whale", "sea")])
    rows = q.two_hop(hm, {"logit": Decoder(hm), "jacobian": JacobianLens(hm, jac)}, hm.default_sites())
    assert len(rows) == 2
    for row, (prompt, hidden, _) in zip(rows, q.TWO_HOP):
        hid = q.first_token(hm, hidden)
        assert row["hidden_id"] == hid
        for name, mats in (("logit", {k: torch.eye(32) for k in jac}), ("jacobian", jac)):
            z = naive_jlens(hm, mats, prompt)[:, -1]  # [sites, V] at the last position
            ranks = [1 + int((zs > zs[hid]).sum()) for zs in z]
            got = row["lenses"][name]
            assert got["ranks"] == ranks, name
            before = ranks[:-1]
            first = next((hm.default_sites()[i] for i, r in enumerate(before) if r <= 10), None)
            assert got["first_top10"] == first and got["best_rank"] == min(before)
            other = q.first_token(hm, [h for _, h, _ in q.TWO_HOP if h != hidden][0])
            assert other != hid  # the control: the other prompt's hidden token, here
            assert got["control_median_best_rank"] == min(1 + int((zs > zs[other]).sum()) for zs in z[:-1])
        assert row["final_rank"] == ranks[-1]


# -- the plot ----------------------------------------------------------------------------------------
TABLE = {
    "sites": ["embed", "resid_out_0", "resid_out_1", "resid_out_2"],
    "tokens": 100,
    "kl": {"logit": [9.0, 5.0, 2.0, 0.0], "tuned": [1.5, 1.0, 0.5, 0.0], "jacobian": [4.0, 3.0, 1.0, 0.0]},
    "top1": {"logit": [0.0, 0.1, 0.5, 1.0], "tuned": [0.3, 0.4, 0.7, 1.0], "jacobian": [0.05, 0.2, 0.6, 1.0]},
}


def lines(fig):
    return [r for r in fig.renderers if isinstance(r, GlyphRenderer) and type(r.glyph).__name__ == "Line"]


def test_lens_quality_plot_draws_the_table():
    layout = plots.lens_quality_plot(TABLE)
    kl_fig, top_fig = layout.children
    assert kl_fig.y_scale.__class__.__name__ == "LogScale" and top_fig.x_range is kl_fig.x_range
    for fig, key, keep in ((kl_fig, "kl", slice(0, 3)), (top_fig, "top1", slice(0, 4))):
        ls = lines(fig)
        assert [set(r.data_source.data["lens"]) for r in ls] == [{"logit"}, {"tuned"}, {"jacobian"}]
        for r, name in zip(ls, TABLE[key]):
            np.testing.assert_allclose(r.data_source.data["value"], TABLE[key][name][keep])  # log axis: the final 0 left off
            assert list(r.data_source.data["layer"]) == ["emb", "0", "1", "2"][keep]
    assert "top-1 agreement" in dict(top_fig.select_one(HoverTool).tooltips)
    assert "100 held-out tokens" in top_fig.title.text.text
    assert '<script src="http' not in plots.to_html(layout)
    only = plots.lens_quality_plot(TABLE, lenses=["jacobian"])
    assert [set(r.data_source.data["lens"]) for r in lines(only.children[1])] == [{"jacobian"}]


def test_lens_quality_plot_errors():
    with pytest.raises(ValueError, match="needs a quality table"):
        plots.lens_quality_plot({"kl": {}})
    with pytest.raises(ValueError, match="no curves for 'R-lens'"):
        plots.lens_quality_plot(TABLE, lenses=["R-lens"])


# -- the measured table that ships -------------------------------------------------------------------
def test_the_measured_table_is_whole():
    out = json.loads(RESULTS.read_text())
    S = len(out["sites"])
    assert out["sites"][0] == "embed" and out["sites"][-1] == "resid_out_29" and S == 31
    assert {"logit", "tuned", "jacobian"} <= set(out["kl"]) and out["tokens"] >= 1024
    for name in out["kl"]:
        assert len(out["kl"][name]) == len(out["top1"][name]) == S
        assert out["kl"][name][-1] == pytest.approx(0, abs=1e-4) and out["top1"][name][-1] == 1.0  # the last block is the model
        assert all(k >= -1e-6 for k in out["kl"][name]) and all(0 <= t <= 1 for t in out["top1"][name])
        assert out["mean"][name]["kl"] == pytest.approx(sum(out["kl"][name][:-1]) / (S - 1))
    assert out["lens_fit"]["probes"] is None and out["lens_fit"]["n_prompts"] >= 100
    assert len(out["two_hop"]) == 8
    for row in out["two_hop"]:
        assert set(row["lenses"]) == {"logit", "tuned", "jacobian"}
        for v in row["lenses"].values():
            assert len(v["ranks"]) == S and v["best_rank"] == min(v["ranks"][:-1]) and v["ranks"][-1] == row["final_rank"]
