"""The widget with several lenses (a lens switch) and with a batch of prompts (a prompt selector)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from fakes import make_result
from lens_widget.engine import LogitLens
from lens_widget.widget import LensWidget
from zoo import AffineLens, tiny

PROMPT = "Hello world"
BATCH = ["Hello world", "abc", "The cat sat."]


def capture(w: LensWidget) -> LensWidget:
    w.replies = []
    w.send = lambda content, buffers=None: w.replies.append((content, buffers or [])) if content.get("type") == "reply" else None
    return w


def ask(w, **content):
    w.handle_message({"request_id": f"r{len(w.replies)}", **content})
    w.wait()  # set_prompt runs in the background (its stop button): its reply comes when it ends
    return w.replies[-1]


def decode(array: dict, buffers: list) -> np.ndarray:
    return np.frombuffer(buffers[array["buffer_index"]], dtype=array["dtype"]).reshape(array["shape"])


def wire_array(data: dict, key: str) -> np.ndarray:
    a = data[key]
    return np.frombuffer(a["buffer"], dtype=a["dtype"]).reshape(a["shape"])


@pytest.fixture(scope="module")
def model():
    return tiny("llama")


@pytest.fixture
def two(model):
    w = capture(LensWidget(model, PROMPT, decoders={"logit": None, "tuned": AffineLens(model)}, track=["H"], progress=False))
    yield w
    w.close()


@pytest.fixture
def batch(model):
    w = capture(LensWidget(model, BATCH, track=["e"], progress=False))
    yield w
    w.close()


# -- the lens switch -----------------------------------------------------------------------------
def test_every_lens_is_computed_and_the_lens_trait_picks_the_grid(two, model):
    assert two.lenses == ["logit", "tuned"] and two.lens == "logit"
    assert set(two.grids) == {"logit", "tuned"} and all(len(g) == 1 for g in two.grids.values())
    assert two.data is two.grids["logit"][0]
    assert two.data["lens_name"] == "logit lens" and two.grids["tuned"][0]["lens_name"] == "tuned lens"
    logit_top = wire_array(two.data, "topk_ids")
    two.lens = "tuned"
    assert two.data is two.grids["tuned"][0] and two.result.lens_name == "tuned lens"
    tuned_top = wire_array(two.data, "topk_ids")
    assert not np.array_equal(logit_top, tuned_top)  # the lenses really differ
    # the tuned grid is what the engine gives with that decoder alone
    alone = LogitLens(model, decoder=two.runner.decoder).run(PROMPT, track=two.tracked, progress=False)
    np.testing.assert_array_equal(two.result.topk_ids, alone.topk_ids)
    np.testing.assert_allclose(two.result.topk_probs, alone.topk_probs, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(two.result.kl, alone.kl, rtol=1e-4, atol=1e-5)


def test_an_unknown_lens_is_refused_and_the_grid_stays(two):
    before = two.data
    with pytest.raises(Exception, match="lens must be one of 'logit', 'tuned'"):
        two.lens = "nope"
    assert two.lens == "logit" and two.data is before


@pytest.mark.parametrize("lens", ["logit", "tuned"])
def test_cell_detail_and_trajectory_answer_for_the_lens_shown(two, lens):
    two.lens = lens
    r = two.result
    reply, buffers = ask(two, type="cell_detail", site=2, col=3, k=6, token_ids=[4])
    assert reply["ok"], reply
    res = reply["result"]
    assert res["lens"] == lens and res["lens_name"] == r.lens_name
    ids = decode(res["top_ids"], buffers)
    np.testing.assert_array_equal(ids[: r.k], r.topk_ids[0, 2, 3, : len(ids)][: r.k])
    z = two.runner.decoder.logits(two.activations[r.sites[2]][3], r.sites[2])
    assert ids.tolist() == torch.topk(z, 6).indices.tolist()
    assert res["token_stats"][0]["rank"] == 1 + int((z > z[4]).sum())
    assert res["next_rank"] == r.next_rank[0, 2, 3]
    tid = two.tracked[0]
    reply, buffers = ask(two, type="trajectory", col=1, token_ids=[tid])
    assert reply["ok"] and reply["result"]["lens"] == lens
    np.testing.assert_allclose(decode(reply["result"]["probs"], buffers)[:, 0], r.tracked_prob[0, :, 1, 0], rtol=1e-5)
    np.testing.assert_array_equal(decode(reply["result"]["ranks"], buffers)[:, 0], r.tracked_rank[0, :, 1, 0])


def test_track_and_set_prompt_recompute_every_lens(two, model):
    reply, _ = ask(two, type="track", token="e")
    eid = model.tokens.token_id("e")
    assert reply["ok"] and eid in two.tracked
    for label, r in two.results.items():
        assert eid in r.tracked_ids.tolist(), label
        assert eid in wire_array(two.grids[label][0], "tracked_ids").tolist()
    two.lens = "tuned"
    reply, _ = ask(two, type="set_prompt", prompt="abcd")
    assert reply["ok"] and two.lens == "tuned" and two.prompt == "abcd"
    for label, r in two.results.items():
        assert r.prompts == ["abcd"] and two.grids[label][0]["n_positions"] == 4, label
    assert two.data is two.grids["tuned"][0]
    # a failing prompt keeps every lens's grid
    grids = two.grids
    reply, _ = ask(two, type="set_prompt", prompt="")
    assert not reply["ok"] and two.grids is grids and two.prompt == "abcd"


def test_bad_decoders_are_refused_clearly(model):
    with pytest.raises(ValueError, match="non-empty dict"):
        LensWidget(model, PROMPT, decoders={}, progress=False)
    with pytest.raises(TypeError, match="must be a lens_widget Decoder or None"):
        LensWidget(model, PROMPT, decoders={"x": "tuned"}, progress=False)
    with pytest.raises(ValueError, match="non-empty strings"):
        LensWidget(model, PROMPT, decoders={"": None}, progress=False)


def test_one_lens_and_one_prompt_is_the_plain_widget(model):
    w = LensWidget(model, PROMPT, progress=False)
    assert w.lenses == ["logit lens"] and w.lens == "logit lens"
    assert w.prompts == [PROMPT] and w.prompt_index == 0 and w.grids == {} and not w.aggregate
    assert w.data["prompt"] == PROMPT


def test_widget_from_several_saved_results():
    a, b = make_result(seed=0), make_result(seed=1)
    b.lens_name = "tuned lens"
    w = LensWidget(result={"logit": a, "tuned": b})
    assert w.lenses == ["logit", "tuned"] and set(w.grids) == {"logit", "tuned"}
    w.lens = "tuned"
    np.testing.assert_array_equal(wire_array(w.data, "topk_ids"), b.topk_ids[0])
    with pytest.raises(ValueError, match="does not cover the same"):
        LensWidget(result={"a": a, "b": make_result(n_sites=4)})


# -- a batch -------------------------------------------------------------------------------------
def test_each_prompt_of_a_batch_equals_that_prompt_run_alone(batch, model):
    assert batch.prompts == BATCH and batch.lenses == ["logit lens"]
    assert len(batch.grids["logit lens"]) == len(BATCH)
    for i, p in enumerate(BATCH):
        batch.prompt_index = i
        assert batch.prompt == p and batch.data is batch.grids["logit lens"][i]
        alone = LensWidget(model, p, track=["e"], progress=False)
        assert batch.data["n_positions"] == alone.data["n_positions"] == len(p)
        for key in ("positions", "input_ids", "next_ids", "topk_ids", "next_rank", "tracked_rank", "vocab_ids"):
            np.testing.assert_array_equal(wire_array(batch.data, key), wire_array(alone.data, key), err_msg=f"{p!r} {key}")
        for key in ("topk_probs", "entropy", "next_prob", "kl", "tracked_prob", "tracked_logit"):
            np.testing.assert_allclose(wire_array(batch.data, key), wire_array(alone.data, key), rtol=1e-4, atol=1e-5, err_msg=f"{p!r} {key}")
        assert batch.data["vocab_strings"] == alone.data["vocab_strings"]
        alone.close()


def test_requests_answer_for_the_prompt_shown(batch, model):
    batch.prompt_index = 2
    reply, buffers = ask(batch, type="cell_detail", site=1, col=len(BATCH[2]) - 1, k=5)
    assert reply["ok"] and reply["result"]["prompt_index"] == 2
    alone = capture(LensWidget(model, BATCH[2], progress=False))
    ref, ref_buf = ask(alone, type="cell_detail", site=1, col=len(BATCH[2]) - 1, k=5)
    np.testing.assert_array_equal(decode(reply["result"]["top_ids"], buffers), decode(ref["result"]["top_ids"], ref_buf))
    np.testing.assert_allclose(decode(reply["result"]["top_probs"], buffers), decode(ref["result"]["top_probs"], ref_buf), rtol=1e-4)
    alone.close()
    # a column past the end of the prompt shown is refused (prompt 1 is 3 tokens long)
    batch.prompt_index = 1
    reply, _ = ask(batch, type="cell_detail", site=0, col=5)
    assert not reply["ok"] and "col must be an int in 0..2" in reply["error"]


def test_set_prompt_in_a_batch_replaces_the_prompt_shown(batch):
    batch.prompt_index = 1
    reply, _ = ask(batch, type="set_prompt", prompt="xyzw")
    assert reply["ok"]
    assert batch.prompts == [BATCH[0], "xyzw", BATCH[2]] and batch.prompt == "xyzw" and batch.prompt_index == 1
    assert batch.data["n_positions"] == 4 and batch.grids["logit lens"][2]["prompt"] == BATCH[2]
    with pytest.raises(Exception, match="prompt_index must be in 0..2"):
        batch.prompt_index = 3


def test_a_batch_with_two_lenses(model):
    w = LensWidget(model, BATCH[:2], decoders={"logit": None, "tuned": AffineLens(model)}, progress=False)
    assert {k: len(v) for k, v in w.grids.items()} == {"logit": 2, "tuned": 2}
    w.lens, w.prompt_index = "tuned", 1
    assert w.data is w.grids["tuned"][1] and w.data["prompt"] == BATCH[1]
    w.close()


def test_export_carries_every_lens_and_every_prompt(model, tmp_path):
    w = LensWidget(model, BATCH, decoders={"logit": None, "tuned": AffineLens(model)}, progress=False)
    w.lens = "tuned"
    html = w.save_html(tmp_path / "x.html").read_text()
    state = json.loads(re.search(r'<script type="application/json" id="lw-state">(.*?)</script>', html, re.S).group(1))
    assert state["lenses"] == ["logit", "tuned"] and state["lens"] == "tuned"
    assert state["prompts"] == BATCH and state["prompt_index"] == 0 and state["aggregate"] is False
    assert state["data"] == {}  # the grid shown travels once, in grids
    for label in ("logit", "tuned"):
        assert [g["prompt"] for g in state["grids"][label]] == BATCH
        for g, wire in zip(state["grids"][label], w.grids[label]):
            assert set(g["topk_ids"]) == {"dtype", "shape", "b64"} and g["lens_name"] == wire["lens_name"]
    w.close()


def test_the_front_ends_choice_reaches_python_as_a_comm_update_would(model):
    """What the lens switch and the prompt selector send (``set_state``, as the comm applies it)."""
    w = LensWidget(model, BATCH[:2], decoders={"logit": None, "tuned": AffineLens(model)}, progress=False)
    w.set_state({"lens": "tuned"})
    assert w.data is w.grids["tuned"][0] and w.runner.decoder.name == "tuned lens"
    w.set_state({"aggregate": False, "prompt_index": 1})
    assert w.data is w.grids["tuned"][1] and w.prompt == BATCH[1]
    w.set_state({"aggregate": True})  # the mean is drawn by the front end; data keeps the prompt shown
    assert w.aggregate and w.data is w.grids["tuned"][1]
    w.close()
