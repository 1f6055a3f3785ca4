"""Comparisons of two lens results (lens_widget.compare) and of two sides of one engine run
(LogitLens.compare): Δ metrics against the results' own arrays, exact Jensen–Shannon divergences
against an independent float64 full-vocabulary computation, alignment, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import make_result
from reference import naive_lens
from zoo import AffineLens, tiny

from lens_widget import Comparison, ComparisonError, LogitLens, compare
from lens_widget.arch import get_path
from lens_widget.metrics import COMPARE_METRICS, DELTA_METRICS

PROMPT = "Hello there, world"
SHORT = "Bye now"


def js64(za: np.ndarray, zb: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence (nats) of float64 logits ``[..., V]``, the textbook way."""
    def logp(z):
        return z - np.logaddexp.reduce(z, axis=-1, keepdims=True)

    la, lb = logp(za), logp(zb)
    pa, pb = np.exp(la), np.exp(lb)
    m = 0.5 * (pa + pb)
    return 0.5 * (pa * (la - np.log(m))).sum(-1) + 0.5 * (pb * (lb - np.log(m))).sum(-1)


def affine_naive(hm, decoder: AffineLens, prompt: str) -> np.ndarray:
    """float64 logits ``[S, T, V]`` of the affine test lens, from the test's own hooks: Hugging
    Face's hidden states (embeddings, block outputs) and a hook on the last block (whose HF hidden
    state is already normed)."""
    enc = hm.tokenizer(prompt, return_tensors="pt")
    model = hm.model
    last = model.model.layers[-1]
    got = {}
    handle = last.register_forward_hook(lambda m, i, o: got.__setitem__("h", (o[0] if isinstance(o, tuple) else o).detach()))
    try:
        with torch.no_grad():
            out = model(**enc, output_hidden_states=True)
    finally:
        handle.remove()
    hs = list(out.hidden_states[:-1]) + [got["h"]]
    norm = get_path(model, hm.arch.final_norm)
    w = model.get_output_embeddings().weight.detach().double()
    rows = []
    for h in hs:
        h = h[0].double()
        x = h + h @ decoder.w.double() + decoder.b.double()
        with torch.no_grad():
            xn = norm(x.float()).double()
        rows.append((xn @ w.T).numpy())
    return np.stack(rows)


@pytest.fixture(scope="module")
def llama():
    # a model of this file's own: transformers' output_hidden_states (the float64 reference) leaves
    # its recording hooks on a model, and other files count hooks on the shared tiny("llama")
    return tiny("llama", seed=5)


@pytest.fixture(scope="module")
def lens(llama):
    return LogitLens(llama, compile="never")


def test_a_result_compared_with_itself_is_zero_everywhere(lens):
    r = lens.run(PROMPT, track=[5, 9], progress=False)
    c = compare(r, r)
    assert c.n_positions == r.n_columns() and c.align == "position by position"
    for name, d in c.deltas.items():
        defined = np.isfinite(d)
        assert defined.sum() >= d.size - r.n_sites, name  # only the last column lacks a next token
        assert np.all(d[defined] == 0), name
    assert np.all(c.js == 0) and c.top1_agree.all()
    assert np.all(c.d_tracked_prob == 0) and np.all(c.logit_diff(5, 9) == 0)
    # and in one engine run: the same prompt twice in one batch, exact JS over the full vocabulary
    one = lens.compare(PROMPT, PROMPT, progress=False)
    assert one.js_exact and one.js.shape == (r.n_sites, r.n_columns())
    assert np.nanmax(one.js) < 1e-6


def test_two_lenses_in_one_run_give_exact_js_against_float64(llama, lens):
    tuned = AffineLens(llama)
    c = lens.compare(PROMPT, decoder_b=tuned, progress=False)
    assert c.js_exact and "exact" in c.js_label
    assert (c.label_a, c.label_b) == ("logit lens", "tuned lens")
    za, sites = naive_lens(llama, PROMPT)
    zb = affine_naive(llama, tuned, PROMPT)
    assert c.sites == sites
    want = js64(za, zb)  # [S, T]
    assert want.max() > 1e-2  # the two lenses really disagree: the test can see a wrong JS
    np.testing.assert_allclose(c.js, want, rtol=2e-4, atol=2e-6)
    assert np.all(c.js >= 0) and np.all(c.js <= np.log(2) + 1e-6)


def test_two_prompts_in_one_batch_give_exact_js_aligned_on_the_last_token(llama, lens):
    c = lens.compare(PROMPT, SHORT, progress=False)
    ta, tb = len(PROMPT), len(SHORT)  # one token per character
    assert c.align == "on the last token"
    np.testing.assert_array_equal(c.positions_a, np.arange(ta - tb, ta))
    np.testing.assert_array_equal(c.positions_b, np.arange(tb))
    za, _ = naive_lens(llama, PROMPT)
    zb, _ = naive_lens(llama, SHORT)
    want = js64(za[:, ta - tb :], zb)
    assert want.max() > 1e-2
    np.testing.assert_allclose(c.js, want, rtol=2e-4, atol=2e-6)


def test_each_side_of_a_one_run_compare_is_what_it_gets_run_alone(llama, lens):
    tuned = AffineLens(llama)
    c = lens.compare(PROMPT, SHORT, decoder_b=tuned, track=[5, 9], progress=False)
    alone_a = lens.run(PROMPT, track=[5, 9], progress=False)
    alone_b = lens.with_decoder(tuned).run(SHORT, track=[5, 9], progress=False)
    for got, want in ((c.a, alone_a), (c.b, alone_b)):
        np.testing.assert_array_equal(got.topk_ids, want.topk_ids)
        np.testing.assert_array_equal(got.next_rank, want.next_rank)
        np.testing.assert_array_equal(got.tracked_rank, want.tracked_rank)
        for key in ("topk_probs", "entropy", "kl", "next_prob", "tracked_logit"):
            np.testing.assert_allclose(getattr(got, key), getattr(want, key), rtol=1e-5, atol=1e-6, err_msg=key)
    assert c.b.lens_name == "tuned lens" and c.a.lens_name == "logit lens"


def test_swapping_a_and_b_flips_the_deltas_and_keeps_js(lens):
    ra = lens.run(PROMPT, track=[5, 9], progress=False)
    rb = lens.run(SHORT, track=[5, 9], progress=False)
    ab, ba = compare(ra, rb), compare(rb, ra)
    for name in ab.deltas:
        np.testing.assert_array_equal(ab.deltas[name], -ba.deltas[name], err_msg=name)
    np.testing.assert_array_equal(ab.d_tracked_logit, -ba.d_tracked_logit)
    np.testing.assert_allclose(ab.js, ba.js, rtol=1e-6, atol=1e-9)
    assert np.nanmax(ab.js) > 1e-3
    np.testing.assert_array_equal(ab.top1_agree, ba.top1_agree)
    # the one-run exact JS too
    x, y = lens.compare(PROMPT, SHORT, progress=False), lens.compare(SHORT, PROMPT, progress=False)
    np.testing.assert_allclose(x.js, y.js, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(x.deltas["d_entropy"], -y.deltas["d_entropy"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ab.swapped().deltas["d_kl"], ba.deltas["d_kl"])


def deltas_straight_off(ra, rb, pos_a, pos_b, prompt_a: int = 0, prompt_b: int = 0) -> dict[str, np.ndarray]:
    """Every per-cell Δ, b − a, read straight off two results at the token positions ``pos_a`` /
    ``pos_b`` (float64, then rounded once to float32 as the results are): no code of compare.py."""
    ca = [ra.position_index(int(p), prompt_a) for p in pos_a]
    cb = [rb.position_index(int(p), prompt_b) for p in pos_b]

    def a(arr):
        return np.asarray(arr, dtype=np.float64)[prompt_a][:, ca]

    def b(arr):
        return np.asarray(arr, dtype=np.float64)[prompt_b][:, cb]

    rank_a, rank_b = a(ra.next_rank), b(rb.next_rank)
    has_next = (rank_a > 0) & (rank_b > 0)  # rank 0: no next token (a prompt's last column)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.where(has_next, np.log(rank_b) - np.log(rank_a), np.nan)
    want = {
        "d_top1_prob": b(rb.topk_probs)[..., 0] - a(ra.topk_probs)[..., 0],
        "d_next_prob": b(rb.next_prob) - a(ra.next_prob),
        "next_rank_log_ratio": log_ratio,
        "d_entropy": b(rb.entropy) - a(ra.entropy),
        "d_kl": b(rb.kl) - a(ra.kl),
    }
    return {name: v.astype(np.float32) for name, v in want.items()}


def assert_deltas(c, want: dict[str, np.ndarray], exact: bool = True) -> None:
    """``c``'s Δ (attribute, ``metric()`` and table) against ``want``, which must hold cells far
    from zero for every Δ, so a flipped sign cannot pass."""
    assert set(c.deltas) == set(want)
    df = c.to_dataframe()
    for name, w in want.items():
        ok = np.isfinite(w)
        assert (np.abs(w[ok]) > 1e-3).sum() >= w.size // 4, f"{name}: the pair cannot tell b − a from a − b"
        for got in (c.deltas[name], c.metric(name), df[name].to_numpy().reshape(c.n_sites, c.n_positions)):
            if exact:
                np.testing.assert_array_equal(got, w, err_msg=name)
            else:
                np.testing.assert_array_equal(np.isfinite(got), ok, err_msg=name)
                np.testing.assert_allclose(got[ok], w[ok], rtol=1e-4, atol=2e-6, err_msg=name)


def test_every_delta_is_b_minus_a_read_straight_off_the_two_results(llama, lens):
    """d_top1_prob, d_next_prob, next_rank_log_ratio (log rank_b − log rank_a), d_entropy and
    d_kl of two different prompts, both ways round, and of one-run compares (two prompts in a
    batch; two lenses) against results run alone."""
    ra = lens.run(PROMPT, track=[5, 9], progress=False)
    rb = lens.run(SHORT, track=[5, 9], progress=False)
    ta, tb = len(PROMPT), len(SHORT)  # one token per character; aligned on the last token
    pos_a, pos_b = np.arange(ta - tb, ta), np.arange(tb)
    assert_deltas(compare(ra, rb), deltas_straight_off(ra, rb, pos_a, pos_b))
    assert_deltas(compare(rb, ra), deltas_straight_off(rb, ra, pos_b, pos_a))
    # at the start: both prompts' first tb tokens
    assert_deltas(compare(ra, rb, align="start"), deltas_straight_off(ra, rb, np.arange(tb), pos_b))
    # one engine run of both prompts: the same Δ as the results run alone (up to batching)
    assert_deltas(lens.compare(PROMPT, SHORT, progress=False), deltas_straight_off(ra, rb, pos_a, pos_b), exact=False)
    # one run of two lenses on one prompt: b is the affine lens
    tuned = AffineLens(llama)
    rt = lens.with_decoder(tuned).run(PROMPT, progress=False)
    every = np.arange(ta)
    assert_deltas(lens.compare(PROMPT, decoder_b=tuned, progress=False), deltas_straight_off(ra, rt, every, every), exact=False)


def test_prompts_of_different_lengths_align_as_documented(lens):
    ra = lens.run(PROMPT, progress=False)
    rb = lens.run(SHORT, progress=False)
    ta, tb = len(PROMPT), len(SHORT)
    cases = {
        "last": (np.arange(ta - tb, ta), np.arange(tb), "on the last token"),
        "start": (np.arange(tb), np.arange(tb), "on the first token"),
        3: (np.arange(tb), np.arange(tb), "on position 3"),
        (10, 2): (np.arange(8, 8 + tb), np.arange(tb), "on position 10 of a = 2 of b"),
        # position 2 of a with 5 of b: back two columns, forward to b's end (two more)
        (2, 5): (np.arange(0, 4), np.arange(3, 7), "on position 2 of a = 5 of b"),
    }
    for align, (pa, pb, how) in cases.items():
        c = compare(ra, rb, align=align)
        np.testing.assert_array_equal(c.positions_a, pa, err_msg=str(align))
        np.testing.assert_array_equal(c.positions_b, pb, err_msg=str(align))
        assert c.align == how
        # each Δ is b's cell minus a's cell at those positions, read straight off the results
        for s in (0, ra.n_sites - 1):
            for j, (p, q) in enumerate(zip(pa, pb)):
                want = rb.entropy[0, s, rb.position_index(q)] - ra.entropy[0, s, ra.position_index(p)]
                assert c.deltas["d_entropy"][s, j] == np.float32(want)
    same = compare(ra, lens.run("Hello there, wrld!", progress=False))
    assert same.align == "position by position" and same.n_positions == ta
    with pytest.raises(ComparisonError, match="no lens column"):
        compare(ra, rb, align=40)
    with pytest.raises(ValueError, match="align must be"):
        compare(ra, rb, align="middle")


def test_results_of_different_vocabularies_tokenizers_or_sites_are_refused(lens):
    r = lens.run(PROMPT, progress=False)
    wide = LogitLens(tiny("llama", vocab=128), compile="never").run(PROMPT, progress=False)
    with pytest.raises(ComparisonError, match="different vocabularies .101 vs 128"):
        compare(r, wide)
    a, b = make_result(), make_result(hostile=True)
    with pytest.raises(ComparisonError, match="different tokenizers"):
        compare(a, b)
    few = lens.run(PROMPT, sites=["resid_out_0", "resid_out_2"], progress=False)
    with pytest.raises(ComparisonError, match="different sites"):
        compare(r, few)
    with pytest.raises(ValueError, match="second prompt"):
        lens.compare(PROMPT)


def test_two_models_sharing_a_tokenizer_compare(llama):
    other = tiny("llama", seed=6)
    V = 101
    # k = the whole vocabulary: the top-k "approximation" then holds every token, so it must
    # equal the exact float64 JS of the two models
    ra = LogitLens(llama, compile="never").run(PROMPT, k=V, track=[5, 9], progress=False)
    rb = LogitLens(other, compile="never").run(PROMPT, k=V, track=[5, 9], progress=False)
    c = compare(ra, rb)
    assert not c.js_exact and "approximation" in c.js_label
    za, _ = naive_lens(llama, PROMPT)
    zb, _ = naive_lens(other, PROMPT)
    want = js64(za, zb)
    assert want.max() > 1e-2
    np.testing.assert_allclose(c.js, want, rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(c.deltas["d_kl"], rb.kl[0] - ra.kl[0])
    np.testing.assert_array_equal(c.top1_agree, ra.topk_ids[0, ..., 0] == rb.topk_ids[0, ..., 0])
    # a small k: an approximation, bounded like the real thing, and labelled as one
    small = compare(LogitLens(llama, compile="never").run(PROMPT, k=3, progress=False), LogitLens(other, compile="never").run(PROMPT, k=3, progress=False))
    assert "top-3 approximation" in small.js_label
    assert np.all((small.js >= 0) & (small.js <= np.log(2)))


def test_every_compare_metric_reads_and_the_table_has_every_cell(lens):
    ra = lens.run(PROMPT, track=[5, 9], progress=False)
    rb = lens.run(SHORT, track=[9, 5, 7], progress=False)
    c = compare(ra, rb)
    np.testing.assert_array_equal(c.tracked_ids, [5, 9])  # shared, in a's order
    for name in COMPARE_METRICS:
        v = c.metric(name)
        assert v.shape == (c.n_sites, c.n_positions), name
    assert set(c.deltas) < set(DELTA_METRICS)
    j9a, j9b = ra.tracked_index(9), rb.tracked_index(9)
    want = rb.tracked_prob[0][:, c.cols_b, j9b] - ra.tracked_prob[0][:, c.cols_a, j9a]
    np.testing.assert_array_equal(c.metric("d_tracked_prob", token=9), want)
    ld = (rb.tracked_logit[0][:, c.cols_b, rb.tracked_index(5)] - rb.tracked_logit[0][:, c.cols_b, j9b]) - (
        ra.tracked_logit[0][:, c.cols_a, ra.tracked_index(5)] - ra.tracked_logit[0][:, c.cols_a, j9a]
    )
    np.testing.assert_allclose(c.metric("d_logit_diff", tokens=(5, 9)), ld, rtol=1e-5, atol=1e-5)
    df = c.to_dataframe()
    assert len(df) == c.n_sites * c.n_positions
    row = df[(df.layer == 2) & (df.column == 1)].iloc[0]
    assert row.position_a == c.positions_a[1] and row.token_b == rb.display(int(rb.input_ids[0, c.positions_b[1]]))
    assert row.d_kl == c.deltas["d_kl"][2, 1] and row.js == c.js[2, 1]
    assert df.attrs["js_exact"] is False
    with pytest.raises(ValueError, match="unknown compare metric"):
        c.metric("kl")
    assert isinstance(c, Comparison)


def test_a_one_run_compare_does_not_depend_on_the_chunk_size(llama, lens):
    """Tiny chunks (three rows a side: positions and sites split across chunks) give the same
    comparison as one chunk for everything."""
    small = LogitLens(llama, compile="never", memory_budget=101 * 13 * 6)
    for kw in (dict(prompt_b=SHORT), dict(decoder_b=AffineLens(llama))):
        big_c, small_c = lens.compare(PROMPT, progress=False, **kw), small.compare(PROMPT, progress=False, **kw)
        np.testing.assert_allclose(small_c.js, big_c.js, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(small_c.deltas["d_kl"], big_c.deltas["d_kl"], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(small_c.a.topk_ids, big_c.a.topk_ids)
        np.testing.assert_array_equal(small_c.b.next_rank, big_c.b.next_rank)


# -- the widget's kernel side ------------------------------------------------------------------
def _wire(arr: dict) -> np.ndarray:
    return np.frombuffer(arr["buffer"], dtype=arr["dtype"]).reshape(arr["shape"])


def _listening(w):
    w.replies = []
    w.send = lambda content, buffers=None: w.replies.append((content, buffers or []))
    return w


def test_widget_compare_of_two_prompts_shows_the_exact_diff_grid(llama, lens):
    from lens_widget.widget import LensWidget

    w = _listening(LensWidget.compare(llama, PROMPT, SHORT, track=[5, 9], progress=False))
    try:
        assert w.compare_view and w.metric == "js" and w.compare_pair == [["logit lens", 0], ["logit lens", 1]]
        c = w.compared
        assert c.js_exact and c.align == "on the last token"
        # the widget's JS (decoded again from the kept activations) against the engine's one-run JS
        engine = lens.compare(PROMPT, SHORT, track=[5, 9], progress=False)
        np.testing.assert_allclose(c.js, engine.js, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(c.deltas["d_next_prob"], engine.deltas["d_next_prob"], rtol=1e-5, atol=1e-6)
        payload = w.comparison
        assert payload["label_a"].startswith("prompt 1") and payload["js_exact"] is True
        np.testing.assert_array_equal(_wire(payload["js"]), c.js)
        np.testing.assert_array_equal(_wire(payload["d_entropy"]), c.deltas["d_entropy"])
        np.testing.assert_array_equal(_wire(payload["cols_a"]), c.cols_a)
        assert _wire(payload["top1_agree"]).dtype == np.uint8
        assert payload["a"]["prompt"] == PROMPT and payload["b"]["prompt"] == SHORT
        # cell detail for both sides, each side's own cell, exact ranks from the activations
        w.handle_message({"type": "compare_detail", "request_id": "x", "site": 2, "col": 1, "k": 5, "token_ids": [9]})
        reply, buffers = w.replies[-1]
        assert reply["ok"], reply
        res = reply["result"]
        assert res["js"] == pytest.approx(float(c.js[2, 1]))
        for name, r, b, cols in (("a", c.a, c.prompt_a, c.cols_a), ("b", c.b, c.prompt_b, c.cols_b)):
            side = res[name]
            ids = np.frombuffer(buffers[side["top_ids"]["buffer_index"]], dtype="<i4")
            np.testing.assert_array_equal(ids, r.topk_ids[b, 2, cols[1], :5])
            assert side["col"] == cols[1] and side["token_stats"][0]["rank"] == r.tracked_rank[b, 2, cols[1], r.tracked_index(9)]
        w.handle_message({"type": "compare_detail", "request_id": "y", "site": 2, "col": 99})
        assert w.replies[-1][0]["ok"] is False
        # tracking a token recomputes the grids, and the comparison follows
        w.track(7)
        assert 7 in w.compared.tracked_ids.tolist()
    finally:
        w.close()


def test_widget_compare_of_two_lenses_and_any_two_prompts_of_a_batch(llama, lens):
    from lens_widget.widget import LensWidget

    tuned = AffineLens(llama)
    w = LensWidget.compare(llama, PROMPT, decoder_b=tuned, progress=False)
    try:
        assert w.lenses == ["logit lens", "tuned lens"] and (w.compared.label_a, w.compared.label_b) == ("logit lens", "tuned lens")
        np.testing.assert_allclose(w.compared.js, lens.compare(PROMPT, decoder_b=tuned, progress=False).js, rtol=1e-5, atol=1e-7)
    finally:
        w.close()
    prompts = [PROMPT, SHORT, "Good morning"]
    batch = LensWidget(llama, prompts, progress=False)
    try:
        assert batch.comparison == {} and not batch.compare_view
        batch.compare_pair = [["logit lens", 2], ["logit lens", 0]]  # as the front end's selectors set it
        c = batch.compared
        assert batch.compare_view and batch.error == ""
        assert c.a.prompts[c.prompt_a] == "Good morning" and c.b.prompts[c.prompt_b] == PROMPT
        direct = lens.compare("Good morning", PROMPT, progress=False)
        np.testing.assert_allclose(c.js, direct.js, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(c.positions_b, direct.positions_b)
        batch.compare_pair = [["logit lens", 0], ["no such lens", 1]]
        assert "no such lens" in batch.error and batch.compare_pair == [["logit lens", 2], ["logit lens", 0]]
    finally:
        batch.close()


def test_widget_from_a_saved_comparison_and_its_exported_page(tmp_path, lens):
    import json
    import re

    from lens_widget.widget import LensWidget
    from lens_widget.wire import comparison_to_wire

    c = compare(lens.run(PROMPT, track=[5, 9], progress=False), lens.run(SHORT, track=[5, 9], progress=False))
    w = LensWidget(comparison=c)
    try:
        assert w.compare_view and w.comparison["js_exact"] is False and "approximation" in w.comparison["js_label"]
        page = w.save_html(tmp_path / "cmp.html").read_text(encoding="utf-8")
    finally:
        w.close()
    state = json.loads(re.search(r'<script type="application/json" id="lw-state">(.*?)</script>', page, re.S).group(1))
    import base64

    got = np.frombuffer(base64.b64decode(state["comparison"]["js"]["b64"]), dtype="<f4").reshape(state["comparison"]["js"]["shape"])
    np.testing.assert_array_equal(got, c.js)
    assert state["compare_view"] is True and set(comparison_to_wire(c)) == set(state["comparison"])
    with pytest.raises(ValueError, match="comparison= shows"):
        LensWidget(lens.model, PROMPT, comparison=c)


# -- plots -------------------------------------------------------------------------------------
def _glyph_data(fig, kind: str) -> dict:
    from bokeh.models import GlyphRenderer

    r = [g for g in fig.renderers if isinstance(g, GlyphRenderer) and type(g.glyph).__name__ == kind]
    assert r, kind
    return r[0].data_source.data


def test_the_delta_heatmap_and_js_by_layer_plot_the_comparisons_numbers(lens, llama):
    from bokeh.models import ColorBar, HoverTool

    from lens_widget import plots

    ra = lens.run(PROMPT, track=[5, 9], progress=False)
    rb = lens.run(SHORT, track=[5, 9], progress=False)
    c = compare(ra, rb)
    for metric in COMPARE_METRICS:
        fig = plots.compare_grid(c, metric)
        d = _glyph_data(fig, "Rect")
        assert len(d["value"]) == c.n_sites * c.n_positions
        want = c.metric(metric)
        for i, (x, y) in enumerate(zip(d["x"], d["y"])):
            v = d["value"][i]
            assert (np.isnan(v) and np.isnan(want[y, x])) or v == pytest.approx(float(want[y, x]), rel=1e-6, abs=1e-9), (metric, x, y)
            assert d["top1_b"][i] == rb.display(int(rb.topk_ids[0, y, c.cols_b[x], 0]))
        mapper = [m for m in fig.right if isinstance(m, ColorBar)][0].color_mapper
        if metric in DELTA_METRICS:  # diverging, centred on zero, symmetric about the largest |Δ|
            assert mapper.low == -mapper.high == -float(np.nanmax(np.abs(want)))
            # b < a is blue, b > a red, as the widget's scale: the low end blue, the high end red
            lo, hi = mapper.palette[0], mapper.palette[-1]
            assert int(lo[5:7], 16) > int(lo[1:3], 16) and int(hi[1:3], 16) > int(hi[5:7], 16), (lo, hi)
        else:
            assert mapper.low == 0
        assert "{safe}" not in str(fig.select_one(HoverTool).tooltips)
    exact = lens.compare(PROMPT, decoder_b=AffineLens(llama), progress=False)
    fig = plots.js_by_layer({"prompts": c, "lenses": exact})
    lines = [g for g in fig.renderers if type(g.glyph).__name__ == "Line"]
    assert len(lines) == 2
    for line, cc in zip(lines, (c, exact)):
        np.testing.assert_allclose(line.data_source.data["value"], np.nanmean(cc.js, axis=1), rtol=1e-6)
    labels = [item.label.value for item in fig.legend[0].items]
    assert labels == ["prompts (top-k approx.)", "lenses (exact)"]
    with pytest.raises(ValueError, match="metric must be one of"):
        plots.compare_grid(c, "kl")


def test_a_comparison_that_no_longer_aligns_after_a_new_prompt_is_dropped_with_a_message(llama):
    from lens_widget.widget import LensWidget

    w = LensWidget.compare(llama, PROMPT, SHORT, align=6, progress=False)
    try:
        assert w.compared.align == "on position 6" and w.compare_view
        w.set_prompt("Hi")  # the prompt shown (side a) is now two tokens: its position 6 is gone
        assert w.compared is None and w.comparison == {} and not w.compare_view
        assert "dropped" in w.error and "position 6" in w.error and w.metric == "top1_prob"
        assert w.prompts == ["Hi", SHORT]
    finally:
        w.close()


def test_the_compiled_js_kernel_is_exact_too(llama):
    """compile="always": the reducer's JS runs through torch.compile'd js_fused; same float64 check."""
    fast = LogitLens(llama, compile="always")
    tuned = AffineLens(llama)
    c = fast.compare(PROMPT, decoder_b=tuned, progress=False)
    assert c.meta["fused_js_chunks"] > 0 and c.meta["fused_chunks"] > 0
    want = js64(naive_lens(llama, PROMPT)[0], affine_naive(llama, tuned, PROMPT))
    np.testing.assert_allclose(c.js, want, rtol=2e-4, atol=2e-6)
