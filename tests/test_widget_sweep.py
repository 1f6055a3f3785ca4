"""The widget's activation-patching sweep (issue 18): the ``sweep`` request runs in the background
with progress messages and stop, its grid (the ``sweep`` trait) equals ``LogitLens.patch_sweep``
called directly, bad requests get replies naming the problem, and an exported page carries the
sweep and the last attribution."""

from __future__ import annotations

import base64
import json
import re
import threading

import numpy as np
import pytest

from lens_widget import LogitLens
from lens_widget.widget import LensWidget
from lens_widget.widget import tasks as tasks_module
from zoo import tiny

CLEAN, CORRUPT, OTHER = "Hello there", "Hallo there", "Hi"
PAIR = ("e", "a")


class Recorder:
    """The front end's side of the comm: every message the kernel sends, from any thread."""

    def __init__(self, w: LensWidget):
        self.messages: list[dict] = []
        self.lock = threading.Lock()
        self.hooks: list = []
        w.send = self.send

    def send(self, content, buffers=None):
        with self.lock:
            self.messages.append(content)
        for hook in self.hooks:
            hook(content)

    def of(self, type_: str) -> list[dict]:
        with self.lock:
            return [c for c in self.messages if c.get("type") == type_]

    def reply(self, request_id: str) -> dict:
        hits = [c for c in self.of("reply") if c["request_id"] == request_id]
        assert len(hits) == 1, hits
        return hits[0]


def ask(w: LensWidget, rec: Recorder, request_id: str, **content) -> dict:
    w.handle_message({"request_id": request_id, **content})
    assert w.wait(120)
    return rec.reply(request_id)


def trait_array(a: dict) -> np.ndarray:
    return np.frombuffer(a["buffer"], dtype=a["dtype"]).reshape(a["shape"])


@pytest.fixture
def widget(monkeypatch):
    monkeypatch.setattr(tasks_module, "PROGRESS_INTERVAL_S", 0.0)  # every step reports
    w = LensWidget(tiny("llama"), [CLEAN, CORRUPT, OTHER], track=list(PAIR), progress=False)
    rec = Recorder(w)
    yield w, rec
    w.close()


def direct(**options):
    return LogitLens(tiny("llama"), compile="never").patch_sweep(CLEAN, CORRUPT, PAIR, progress=False, **options)


def test_the_sweep_request_equals_patch_sweep_called_directly(widget):
    w, rec = widget
    ref = direct(batch_size=5)  # the same batches: a forward's rounding depends on its batch
    reply = ask(w, rec, "s1", type="sweep", clean=0, corrupt=1, tokens=list(PAIR), batch_size=5)
    assert reply["ok"], reply
    got = w.sweep
    # the grid: every (site, position), its recovery and patched logit difference as Python's
    assert (got["n_sites"], got["n_positions"]) == ref.recovery.shape
    np.testing.assert_array_equal(trait_array(got["recovery"]), ref.recovery.astype(np.float32))
    np.testing.assert_array_equal(trait_array(got["patched_ld"]), ref.patched_ld.astype(np.float32))
    assert got["clean_ld"] == pytest.approx(ref.clean_ld, abs=1e-9) and got["corrupt_ld"] == pytest.approx(ref.corrupt_ld, abs=1e-9)
    assert got["sites"] == ref.sites and got["site_labels"][0] == "emb" and got["site_labels"][-1] == str(len(ref.sites) - 2)
    assert got["clean_tokens"] == ref.clean_tokens and got["corrupt_tokens"] == ref.corrupt_tokens
    assert got["pair"] == list(ref.pair) and got["pair_tokens"] == list(PAIR)
    assert (got["clean_prompt_index"], got["corrupt_prompt_index"]) == (0, 1)
    # the reply sums it up; the last block at the last token carries everything (recovery 1)
    res = reply["result"]
    assert (res["n_sites"], res["n_positions"], res["patches"]) == (*ref.recovery.shape, ref.recovery.size)
    # the clean run (it records the clean residuals the patches use) and the corrupted one, then 5 patches a forward
    assert res["forwards"] == 2 + -(-ref.recovery.size // 5)
    assert res["max_recovery"] == pytest.approx(float(np.nanmax(ref.recovery)), abs=1e-9)
    assert abs(ref.recovery[-1, -1] - 1.0) < 1e-4
    # progress: patches done of all, rising, then "done"
    prog = [p for p in rec.of("progress") if p["task"] == "sweep"]
    running = [p for p in prog if p["state"] == "running"]
    assert [p["done"] for p in running] == sorted(p["done"] for p in running) and len(running) >= 3
    assert running[-1]["done"] == running[-1]["total"] == ref.recovery.size and prog[-1]["state"] == "done"
    # without tokens: the tracked pair; the Python method: the same Sweep, shown
    assert ask(w, rec, "s2", type="sweep", clean=0, corrupt=1)["ok"]  # 32 patches a forward: other rounding
    np.testing.assert_array_equal(trait_array(w.sweep["recovery"]), direct().recovery.astype(np.float32))
    sw = w.patch_sweep(0, 1, PAIR, batch_size=64)
    np.testing.assert_allclose(sw.recovery, ref.recovery, atol=1e-6)
    assert w.last_sweep is sw and sw.meta["forwards"] == 3
    # a text works from Python, and the roles swap: recovery of the opposite direction
    back = w.patch_sweep(CORRUPT, CLEAN, PAIR)
    assert w.sweep["clean_prompt_index"] == -1 and back.clean_ld == pytest.approx(ref.corrupt_ld, abs=1e-6)


def test_stop_ends_the_sweep_early_and_keeps_the_last_one(widget):
    w, rec = widget
    assert ask(w, rec, "first", type="sweep", clean=0, corrupt=1)["ok"]
    before = w.sweep

    def stop_early(content):
        if content.get("type") == "progress" and content["task"] == "sweep" and content["state"] == "running" and content["done"] == 2:
            w.handle_message({"request_id": "stop", "type": "stop"})

    rec.hooks.append(stop_early)
    reply = ask(w, rec, "s", type="sweep", clean=1, corrupt=0, batch_size=1)  # one forward per patch: many steps
    total = direct().recovery.size
    assert reply["ok"] is False and reply["stopped"] is True and reply["error"] == "stopped"
    assert reply["detail"] == f"stopped after 2 of {total} steps"  # ended early, and says where
    assert w.sweep is before and w.error == "" and w.busy is False  # the last sweep stays
    assert [p["state"] for p in rec.of("progress") if p["task"] == "sweep"][-1] == "stopped"
    rec.hooks.clear()
    assert ask(w, rec, "again", type="sweep", clean=1, corrupt=0)["ok"] and w.sweep["clean_prompt_index"] == 1


@pytest.mark.parametrize(
    "fields, says",
    [
        ({"clean": 0, "corrupt": 0}, "same tokens"),
        ({"clean": 0, "corrupt": 2}, "same number of tokens (a minimal pair): 11 vs 2"),
        ({"clean": 0, "corrupt": 3}, "corrupt prompt index must be an int in 0..2, got 3"),
        ({"clean": True, "corrupt": 1}, "clean must be the index of a prompt shown"),
        ({"clean": "Hello there", "corrupt": 1}, "clean must be the index of a prompt shown"),
        ({"corrupt": 1}, "clean must be the index of a prompt shown, got None"),
        ({"clean": 0, "corrupt": 1, "tokens": ["e"]}, "tokens must be a pair [a, b]"),
        ({"clean": 0, "corrupt": 1, "tokens": ["e", "e"]}, "the two tokens of the pair are the same"),
        ({"clean": 0, "corrupt": 1, "tokens": ["e", "two tokens"]}, "two tokens"),
        ({"clean": 0, "corrupt": 1, "tokens": ["e", {"x": 1}]}, "tokens must be a pair"),
        ({"clean": 0, "corrupt": 1, "batch_size": 0}, "batch_size must be an int in 1..1024"),
    ],
)
def test_bad_sweep_requests_get_clear_errors(widget, fields, says):
    w, rec = widget
    w.handle_message({"request_id": "bad", "type": "sweep", **fields})
    reply = rec.reply("bad")
    assert reply["ok"] is False and says in reply["error"], reply
    assert w.sweep == {} and not rec.of("progress")  # nothing ran


def test_a_sweep_needs_a_pair_and_a_model():
    w = LensWidget(tiny("llama"), [CLEAN, CORRUPT], progress=False)  # nothing tracked
    rec = Recorder(w)
    try:
        w.handle_message({"request_id": "r", "type": "sweep", "clean": 0, "corrupt": 1})
        assert "give tokens (a, b), or track two tokens" in rec.reply("r")["error"]
        saved = LensWidget(result=w.result)
        rec2 = Recorder(saved)
        saved.handle_message({"request_id": "r", "type": "sweep", "clean": 0, "corrupt": 1, "tokens": list(PAIR)})
        assert rec2.reply("r")["ok"] is False and "no model attached" in rec2.reply("r")["error"]
        saved.close()
    finally:
        w.close()


def test_an_exported_page_carries_the_sweep_and_the_attribution(widget, tmp_path):
    w, rec = widget
    sw = w.patch_sweep(0, 1, PAIR)
    attr = w.attribution(3, 5, token=list(PAIR))
    assert w.selected["site"] == 3 and w.selected["col"] == 5  # the panel shows it on its cell
    page = w.save_html(tmp_path / "sweep.html").read_text()
    state = json.loads(re.search(r'<script type="application/json" id="lw-state">(.*?)</script>', page, re.S).group(1))

    def b64(a: dict) -> np.ndarray:
        return np.frombuffer(base64.b64decode(a["b64"]), dtype=a["dtype"]).reshape(a["shape"])

    np.testing.assert_array_equal(b64(state["sweep"]["recovery"]), sw.recovery.astype(np.float32))
    carried = state["last_attribution"]
    assert carried["values"] == pytest.approx(attr["values"]) and carried["token_ids"] == [w.model.tokens.token_id(t) for t in PAIR]
    np.testing.assert_array_equal(b64(carried["heads"]["values"]), attr["heads"]["values"])
    assert (carried["site"], carried["col"], carried["prompt_index"], carried["lens"]) == (3, 5, 0, "logit lens")
    # a new grid drops the attribution of the old one (the sweep keeps its own tokens)
    w.set_prompt("Hellx there")
    assert w.last_attribution == {} and w.sweep["clean_tokens"] == sw.clean_tokens
