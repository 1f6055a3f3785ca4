"""The widget's kernel side, driven through its message handler as the front end would."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import make_result
from lens_widget.engine import LogitLens
from lens_widget.result import LensResult
from lens_widget.widget import LensWidget, WidgetClosedError
from zoo import tiny


@pytest.fixture
def widget():
    w = LensWidget(tiny("llama"), "Hello world", track=["H"], progress=False)
    w.replies = []
    # replies only (progress and column messages of background work are tested in test_widget_generate.py)
    w.send = lambda content, buffers=None: w.replies.append((content, buffers or [])) if content.get("type") == "reply" else None
    yield w
    w.close()


def ask(w, **content):
    w.handle_message({"request_id": f"r{len(w.replies)}", **content})
    w.wait()  # set_prompt runs in the background (its stop button): its reply comes when it ends
    reply, buffers = w.replies[-1]
    assert reply["type"] == "reply" and reply["request_id"] == content.get("request_id", f"r{len(w.replies) - 1}")
    return reply, buffers


def decode(array: dict, buffers: list) -> np.ndarray:
    return np.frombuffer(buffers[array["buffer_index"]], dtype=array["dtype"]).reshape(array["shape"])


def test_traits_hold_the_wire_form_of_the_result(widget):
    data, r = widget.data, widget.result
    assert data["n_sites"] == r.n_sites == widget.model.num_layers + 1
    assert data["n_positions"] == len("Hello world")
    topk = np.frombuffer(data["topk_ids"]["buffer"], dtype="<i4").reshape(data["topk_ids"]["shape"])
    np.testing.assert_array_equal(topk, r.topk_ids[0])
    assert widget.tracked == [widget.model.tokens.token_id("H")]
    # token strings travel once, only for ids that appear
    assert len(data["vocab_ids"]["buffer"]) // 4 == len(data["vocab_strings"]) <= widget.model.tokens.vocab_size


def test_cell_detail_is_exact_over_the_full_vocabulary(widget):
    for tok in (4, 60):  # the grid tracks these too: its exact ranks are the reference
        widget.track(tok)
    r = widget.result
    reply, buffers = ask(widget, type="cell_detail", site=2, col=3, k=7, token_ids=[4, 60, *r.tracked_ids.tolist()])
    assert reply["ok"], reply
    res = reply["result"]
    ids, probs = decode(res["top_ids"], buffers), decode(res["top_probs"], buffers)
    logits = decode(res["top_logits"], buffers)
    assert len(ids) == 7 and np.all(np.diff(probs) <= 0)
    np.testing.assert_array_equal(ids[: r.k], r.topk_ids[0, 2, 3, :7][: len(ids)])
    np.testing.assert_allclose(probs[: r.k], r.topk_probs[0, 2, 3, :7], rtol=1e-5)
    np.testing.assert_allclose(logits, r.topk_logits[0, 2, 3, :7], rtol=1e-5, atol=1e-5)
    # every asked token: the grid's own tracked rank, probability and logit at that cell
    assert [st["id"] for st in res["token_stats"]] == [4, 60, *r.tracked_ids.tolist()]
    for st in res["token_stats"]:
        m = r.tracked_index(st["id"])
        assert st["rank"] == r.tracked_rank[0, 2, 3, m], st
        assert st["prob"] == pytest.approx(float(r.tracked_prob[0, 2, 3, m]), rel=1e-5, abs=1e-9)
        assert st["logit"] == pytest.approx(float(r.tracked_logit[0, 2, 3, m]), rel=1e-5, abs=1e-5)
    # entropy and the next token: the grid's numbers at that cell
    assert res["entropy"] == pytest.approx(float(r.entropy[0, 2, 3]), rel=1e-4, abs=1e-5)
    assert res["next_id"] == r.next_ids[0, 3]
    assert res["next_prob"] == pytest.approx(float(r.next_prob[0, 2, 3]), rel=1e-5)
    assert res["next_rank"] == r.next_rank[0, 2, 3]
    # and by the definition, from the activations of an independent run (public API only)
    again, acts = widget.runner.run(widget.prompt, progress=False, return_activations=True)
    z = widget.runner.decoder.logits(acts[0][r.sites[2]][3], r.sites[2])
    for stat in res["token_stats"]:
        assert stat["rank"] == 1 + int((z > z[stat["id"]]).sum())
    # the last column has no next token
    last = widget.cell_detail(2, -1, k=3)
    assert last["next_id"] == -1 and last["next_prob"] is None and last["next_rank"] == 0


def test_track_search_and_trajectory(widget):
    reply, _ = ask(widget, type="track", token="e")
    eid = widget.model.tokens.token_id("e")
    assert reply["ok"] and reply["result"]["token_id"] == eid and eid in widget.tracked
    assert eid in widget.result.tracked_ids.tolist()
    reply, _ = ask(widget, type="search", query="h")
    texts = {m["text"] for m in reply["result"]["matches"] if m["exact"]}
    assert {"h", "H"} <= texts
    reply, _ = ask(widget, type="search", query="Hi")
    assert [p[1] for p in reply["result"]["pieces"]] == ["H", "i"]  # several tokens: flagged
    reply, buffers = ask(widget, type="trajectory", col=1, token_ids=[eid])
    probs = decode(reply["result"]["probs"], buffers)[:, 0]
    m = widget.result.tracked_ids.tolist().index(eid)
    np.testing.assert_allclose(probs, widget.result.tracked_prob[0, :, 1, m], rtol=1e-5)


def test_trajectory_replies_carry_the_grids_logits_and_ranks(widget):
    r = widget.result
    ids = r.tracked_ids.tolist() + [widget.model.tokens.token_id("o")]
    widget.track("o")
    r = widget.result
    for col in (0, 4, r.n_columns() - 1):
        reply, buffers = ask(widget, type="trajectory", col=col, token_ids=ids)
        assert reply["ok"], reply
        res = reply["result"]
        assert res["token_ids"] == ids
        probs, logits, ranks = (decode(res[k], buffers) for k in ("probs", "logits", "ranks"))
        assert probs.shape == logits.shape == ranks.shape == (r.n_sites, len(ids))
        for j, tid in enumerate(ids):
            m = r.tracked_index(tid)
            np.testing.assert_allclose(probs[:, j], r.tracked_prob[0, :, col, m], rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(logits[:, j], r.tracked_logit[0, :, col, m], rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(ranks[:, j], r.tracked_rank[0, :, col, m])
    # the Python call gives the same
    direct = widget.trajectory(4, ids)
    np.testing.assert_array_equal(direct["ranks"], decode(ask(widget, type="trajectory", col=4, token_ids=ids)[0]["result"]["ranks"], widget.replies[-1][1]))


def test_untrack_recomputes_without_the_token(widget):
    h, e = widget.model.tokens.token_id("H"), widget.track("e")
    assert widget.tracked == [h, e]
    before = widget.result
    reply, _ = ask(widget, type="untrack", token_id=h)
    assert reply["ok"] and reply["result"]["tracked"] == [e]
    assert widget.tracked == [e] and widget.result.tracked_ids.tolist() == [e]
    assert widget.result is not before and widget.result.tracked_prob.shape[-1] == 1
    np.testing.assert_allclose(widget.result.tracked_prob[..., 0], before.tracked_prob[..., 1], rtol=1e-6)
    np.testing.assert_array_equal(widget.result.topk_ids, before.topk_ids)  # the grid itself is unchanged
    assert np.frombuffer(widget.data["tracked_ids"]["buffer"], "<i4").tolist() == [e]
    same = widget.result
    widget.untrack(h)  # not tracked (any more): nothing recomputes
    assert widget.result is same and widget.tracked == [e]
    reply, _ = ask(widget, type="untrack", token_id=-3)
    assert not reply["ok"] and "token_id" in reply["error"]
    widget.tracked = []  # the trait from the front end does the same
    assert widget.result.tracked_ids.tolist() == []


def test_prompt_change_recomputes_and_errors_keep_the_old_grid(widget):
    reply, _ = ask(widget, type="set_prompt", prompt="New prompt!")
    assert reply["ok"] and widget.prompt == "New prompt!" and widget.data["n_positions"] == 11
    before = widget.data
    for bad in ("", "x" * 100):  # empty, longer than the tiny model's 64-token context
        reply, _ = ask(widget, type="set_prompt", prompt=bad)
        assert not reply["ok"] and reply["error"]
        assert widget.data is before and widget.prompt == "New prompt!" and widget.error
    # setting the trait from Python recomputes too
    widget.prompt = "abc"
    assert widget.data["n_positions"] == 3 and widget.error == ""
    widget.prompt = ""  # refused: the trait goes back
    assert widget.prompt == "abc" and "empty" in widget.error


@pytest.mark.parametrize(
    "content",
    [
        {"type": "cell_detail", "site": 99, "col": 0},
        {"type": "cell_detail", "site": 0, "col": -1},
        {"type": "cell_detail", "site": "0", "col": 0},
        {"type": "cell_detail", "site": 0, "col": 0, "k": 10**6},
        {"type": "track", "token": "not one token"},
        {"type": "track", "token": 10**9},
        {"type": "track", "token": None},
        {"type": "search", "query": ""},
        {"type": "search", "query": 3},
        {"type": "trajectory", "col": 0, "token_ids": "x"},
        {"type": "set_prompt", "prompt": None},
        {"type": "no_such_request"},
        {},
    ],
)
def test_bad_requests_get_an_error_reply_and_the_widget_keeps_working(widget, content):
    reply, _ = ask(widget, **content)
    assert reply["ok"] is False and isinstance(reply["error"], str) and reply["error"]
    ok, _ = ask(widget, type="cell_detail", site=0, col=0)
    assert ok["ok"]


def test_non_dict_message_is_ignored(widget):
    widget.handle_message("garbage")
    widget.handle_message(["x"])
    assert widget.replies == []
    assert ask(widget, type="cell_detail", site=0, col=0)[0]["ok"]


def test_a_click_from_the_front_end_reaches_python_and_a_shorter_prompt_drops_it(widget):
    """The front end's click arrives as a comm state update (ipywidgets' ``set_state``). The real
    browser round trip, a click in JupyterLab reaching the kernel's ``selected``, is in
    tests/e2e/test_e2e_jupyterlab.py ("click reaches the kernel's `selected`") and
    tests/ui/test_jupyterlab.py; here: what the kernel does with it."""
    seen = []
    widget.observe(lambda ch: seen.append(ch["new"]), names=["selected"])
    widget.set_state({"selected": {"site": 1, "col": 9, "position": 9}, "pinned": [[1, 9], [2, 1]]})
    assert seen == [{"site": 1, "col": 9, "position": 9}]
    assert widget.pinned == [[1, 9], [2, 1]]
    widget.set_prompt("Hi!")  # 3 columns: the selected cell and the pin at column 9 are gone
    assert widget.selected == {} and seen[-1] == {}
    assert widget.pinned == [[2, 1]]
    widget.set_state({"selected": {"site": 0, "col": 2, "position": 2}})
    widget.set_prompt("Hi?")  # still inside the grid: kept
    assert widget.selected == {"site": 0, "col": 2, "position": 2}


def test_metric_is_validated(widget):
    widget.metric = "kl"
    with pytest.raises(Exception, match="metric must be one of"):
        widget.metric = "nonsense"
    assert widget.metric == "kl"


def test_closed_widget_refuses_clearly(widget):
    widget.close()
    for call in (lambda: widget.track("a"), lambda: widget.set_prompt("x"), lambda: widget.cell_detail(0, 0)):
        with pytest.raises(WidgetClosedError):
            call()


def test_widget_from_a_result_has_no_kernel_answers(tmp_path):
    r: LensResult = make_result(hostile=True)
    w = LensWidget(result=r)
    w.replies = []
    # replies only (progress and column messages of background work are tested in test_widget_generate.py)
    w.send = lambda content, buffers=None: w.replies.append((content, buffers or [])) if content.get("type") == "reply" else None
    reply, _ = ask(w, type="cell_detail", site=0, col=0)
    assert not reply["ok"] and "no model" in reply["error"]
    page = w.save_html(tmp_path / "x.html").read_text()
    assert "<img src=x onerror" not in page and "</script><script>window.__pwned" not in page


def test_unknown_keywords_raise_naming_them_and_traits_still_pass():
    model = tiny("llama")
    with pytest.raises(TypeError, match="'positons'"):
        LensWidget(model, "Hello world", positons="last:3", progress=False)
    with pytest.raises(TypeError, match="'colour', 'zooom'"):  # (zoom= is a trait: widget/viewing.py)
        LensWidget(model, "Hello world", zooom=2, colour="red", progress=False)
    with pytest.raises(TypeError, match="'positons'"):  # the compare constructor passes its keywords on
        LensWidget.compare(model, "Hello world", "Hello there", positons="last:3", progress=False)
    w = LensWidget(model, "Hello world", height=300, metric="entropy", progress=False)  # traits are keywords
    assert w.height == 300 and w.metric == "entropy"
    w.close()


def test_positions_choose_the_columns_and_follow_a_new_prompt():
    model = tiny("llama")
    text = "Hello world, again"  # one token per character
    n = len(text)
    w = LensWidget(model, text, positions="last:8", sites=["embed", "resid_out_1"], progress=False)
    try:
        assert w.data["n_positions"] == 8 and w.result.sites == ["embed", "resid_out_1"]
        assert w.result.positions[0].tolist() == list(range(n - 8, n))
        # the columns are the same cells as the full grid's last 8
        full = LogitLens(model).run(text, sites=["embed", "resid_out_1"], progress=False)
        np.testing.assert_array_equal(w.result.topk_ids[0], full.topk_ids[0][:, -8:])
        w.set_prompt("Hello there, you all")  # the spec is re-read for the new prompt
        assert w.result.positions[0].tolist() == list(range(20 - 8, 20))
        with pytest.raises(Exception, match="positions='all'"):
            w.generate(2)
    finally:
        w.close()
    w = LensWidget(model, text, positions="last-8", progress=False)  # one token: 8 before the last
    assert w.result.positions[0].tolist() == [n - 9]
    w.close()
    w = LensWidget(model, text, positions="2:5", progress=False)
    assert w.result.positions[0].tolist() == [2, 3, 4]
    w.close()
    with pytest.raises(ValueError, match="positions"):
        LensWidget(result=make_result(), positions="last:2")


def test_a_click_on_the_row_labelled_L_reports_layer_L(widget):
    """The front end sets ``selected`` with the row index (row 0: the embeddings); the grid labels
    rows with ``site_label``. ``selected_cell`` must name the row as the grid does."""
    r = widget.result
    assert widget.selected_cell is None
    for row, label in enumerate(r.site_labels):  # what the grid draws on each row
        widget.set_state({"selected": {"site": row, "col": 4, "position": 4}})
        cell = widget.selected_cell
        assert cell["site"] == row and cell["label"] == label and cell["site_name"] == r.sites[row]
        assert cell["layer"] == (-1 if label == "emb" else int(label)), cell
        assert cell["position"] == 4 and cell["token"] == widget.prompt[4]  # the tiny model: one token per character
    # the grid's labels, written again: embed, then blocks 0..n-1
    widget.set_state({"selected": {"site": widget.model.num_layers, "col": 0, "position": 0}})
    assert widget.selected_cell["layer"] == widget.model.num_layers - 1
    assert widget.selected_cell["site_name"] == f"resid_out_{widget.model.num_layers - 1}"


def test_selected_cell_on_a_subset_of_sites_and_positions():
    w = LensWidget(tiny("llama"), "Hello world", sites=["resid_out_2", "attn_out_1"], positions="last:3", progress=False)
    try:
        w.set_state({"selected": {"site": 1, "col": 2, "position": 10}})
        cell = w.selected_cell
        assert (cell["site_name"], cell["label"], cell["layer"], cell["position"], cell["token"]) == ("attn_out_1", "a1", 1, 10, "d")
        w.set_state({"selected": {"site": 0, "col": 0, "position": 8}})
        assert (w.selected_cell["layer"], w.selected_cell["position"], w.selected_cell["token"]) == (2, 8, "r")
    finally:
        w.close()
