"""The widget's kernel side, driven through its message handler as the front end would."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import make_result
from lens_widget.result import LensResult
from lens_widget.widget import LensWidget, WidgetClosedError
from zoo import tiny


@pytest.fixture
def widget():
    w = LensWidget(tiny("llama"), "Hello world", track=["H"], progress=False)
    w.replies = []
    w.send = lambda content, buffers=None: w.replies.append((content, buffers or []))
    yield w
    w.close()


def ask(w, **content):
    w._on_msg(w, {"request_id": f"r{len(w.replies)}", **content}, [])
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
    reply, buffers = ask(widget, type="cell_detail", site=2, col=3, k=7, token_ids=[4, 60])
    assert reply["ok"], reply
    res = reply["result"]
    ids, probs = decode(res["top_ids"], buffers), decode(res["top_probs"], buffers)
    assert len(ids) == 7 and np.all(np.diff(probs) <= 0)
    r = widget.result
    np.testing.assert_array_equal(ids[: r.k], r.topk_ids[0, 2, 3, :7][: len(ids)])
    np.testing.assert_allclose(probs[: r.k], r.topk_probs[0, 2, 3, :7], rtol=1e-5)
    z = widget._lens.decoder.logits(widget._acts[r.sites[2]][3])
    for stat in res["token_stats"]:
        assert stat["rank"] == 1 + int((z > z[stat["id"]]).sum())
    assert res["next_rank"] == r.next_rank[0, 2, 3]


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
    widget._on_msg(widget, "garbage", [])
    widget._on_msg(widget, ["x"], [])
    assert widget.replies == []
    assert ask(widget, type="cell_detail", site=0, col=0)[0]["ok"]


def test_python_reacts_to_a_click(widget):
    seen = []
    widget.observe(lambda ch: seen.append(ch["new"]), names=["selected"])
    widget.selected = {"site": 1, "col": 2, "position": 2}  # what the front end sets on click
    assert seen == [{"site": 1, "col": 2, "position": 2}]


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
    w.send = lambda content, buffers=None: w.replies.append((content, buffers or []))
    reply, _ = ask(w, type="cell_detail", site=0, col=0)
    assert not reply["ok"] and "no model" in reply["error"]
    page = w.save_html(tmp_path / "x.html").read_text()
    assert "<img src=x onerror" not in page and "</script><script>window.__pwned" not in page
