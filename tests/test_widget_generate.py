"""The widget's generation and background recomputes, driven through its message handler as the
front end would: columns stream as appended-column messages, progress arrives, stop keeps what
is there and the widget keeps working."""

from __future__ import annotations

import base64
import json
import re
import threading

import numpy as np
import pytest

from lens_widget import LogitLens
from lens_widget.widget import tasks as tasks_module
from lens_widget.widget import LensWidget
from lens_widget.schema import WIRE_KEYS as COLUMN_KEYS
from zoo import tiny

PROMPT = "Hello wor"
DTYPES = {"int32": "<i4", "uint32": "<u4", "float32": "<f4", "uint8": "u1"}


class Recorder:
    """The front end's side of the comm: every message the kernel sends, from any thread."""

    def __init__(self, w: LensWidget):
        self.w = w
        self.messages: list[tuple[dict, list]] = []
        self.lock = threading.Lock()
        self.hooks: list = []
        w.send = self.send

    def send(self, content, buffers=None):
        with self.lock:
            self.messages.append((content, list(buffers or [])))
        for hook in self.hooks:
            hook(content)

    def of(self, type_: str) -> list[tuple[dict, list]]:
        with self.lock:
            return [(c, b) for c, b in self.messages if c.get("type") == type_]

    def reply(self, request_id: str) -> dict:
        hits = [c for c, _ in self.of("reply") if c["request_id"] == request_id]
        assert len(hits) == 1, hits
        return hits[0]


def ask(w: LensWidget, request_id: str, **content) -> None:
    w.handle_message({"request_id": request_id, **content})


def wire_array(a: dict, buffers: list | None = None) -> np.ndarray:
    raw = a["buffer"] if "buffer" in a else buffers[a["buffer_index"]]
    return np.frombuffer(raw, dtype=DTYPES[a["dtype"]]).reshape(a["shape"])


def grow(data: dict, columns: list[tuple[dict, list]]) -> dict[str, np.ndarray]:
    """The front end's work written again in Python: the grid of ``data`` with each column
    message applied in order (``col < P`` replaces that column, ``col == P`` appends)."""
    grid = {key: wire_array(data[key]).copy() for key in COLUMN_KEYS}
    vocab = dict(zip(wire_array(data["vocab_ids"]).tolist(), data["vocab_strings"]))
    ids = wire_array(data["input_ids"]).tolist()
    for msg, buffers in columns:
        col = msg["col"]
        P = grid["entropy"].shape[1]
        assert col <= P, "a column message never leaves a gap"
        for key in COLUMN_KEYS:
            cell = wire_array(msg["cells"][key], buffers)
            assert cell.shape[1] == 1
            grid[key] = np.concatenate([grid[key], cell], 1) if col == P else np.concatenate([grid[key][:, :col], cell, grid[key][:, col + 1 :]], 1)
        if col == len(ids):
            ids.append(msg["token_id"])
        vocab.update(zip(wire_array(msg["vocab_ids"], buffers).tolist(), msg["vocab_strings"]))
    grid["input_ids"] = np.array(ids)
    grid["vocab"] = vocab  # type: ignore[assignment]
    return grid


@pytest.fixture
def widget():
    w = LensWidget(tiny("llama"), PROMPT, track=["o"], progress=False)
    rec = Recorder(w)
    yield w, rec
    w.close()


def test_generate_streams_one_column_per_token_and_ends_equal_to_run(widget):
    w, rec = widget
    start = dict(w.data)
    ask(w, "g1", type="generate", max_new_tokens=6)
    assert w.wait(60)
    reply = rec.reply("g1")
    assert reply["ok"], reply
    assert reply["result"]["generated"] == 6 and not reply["result"]["stopped"]
    cols = rec.of("column")
    n0 = start["n_positions"]
    # the prompt's last column gets its next token (replaced), then one appended column per token
    assert [c["col"] for c, _ in cols] == [n0 - 1] + list(range(n0, n0 + 6))
    assert [c["done"] for c, _ in cols] == list(range(7)) and all(c["total"] == 6 for c, _ in cols)
    ids = w.result.input_ids[0].tolist()
    ref = LogitLens(tiny("llama"), compile="never").run([ids], track=["o"], progress=False)
    # the front end's grid, grown from the columns alone, is the lens of the whole text
    grown = grow(start, cols)
    assert grown["input_ids"].tolist() == ids
    assert len(set(ids[n0:])) > 2  # the text varies: the token read and the next token differ
    # every column, the last streamed one (no next token) included
    for key in ("topk_ids", "next_rank", "tracked_rank", "nonfinite"):
        np.testing.assert_array_equal(grown[key], np.asarray(getattr(ref, key)[0], grown[key].dtype), err_msg=key)
    for key in ("topk_probs", "entropy", "next_prob", "tracked_prob", "tracked_logit"):
        np.testing.assert_allclose(grown[key], getattr(ref, key)[0], atol=1e-5, err_msg=key)
    assert (grown["next_rank"][:, -1] == 0).all() and np.isnan(grown["next_prob"][:, -1]).all()
    # every token the grown grid shows has its string
    assert set(grown["topk_ids"].ravel().tolist()) | set(ids) <= set(grown["vocab"])
    # the finished state (traits) is the whole grid, with the boundary marked
    assert w.data["generated_from"] == n0 and w.data["n_positions"] == n0 + 6
    np.testing.assert_array_equal(wire_array(w.data["topk_ids"]), ref.topk_ids[0])
    np.testing.assert_array_equal(wire_array(w.data["next_rank"]), ref.next_rank[0])
    assert w.busy is False and w.error == ""
    # progress for every token, then "done"
    prog = [c for c, _ in rec.of("progress") if c["task"] == "generate"]
    assert [p["done"] for p in prog if p["state"] == "running"] == list(range(1, 7))
    assert prog[-1]["state"] == "done"
    # clicks on generated columns answer exactly
    d = w.cell_detail(3, n0 + 2, k=3)
    assert d["top_ids"].tolist() == ref.topk_ids[0, 3, n0 + 2, :3].tolist()


def test_each_column_message_is_small(widget):
    w, rec = widget
    ask(w, "g", type="generate", max_new_tokens=3)
    w.wait(60)
    full_bytes = sum(len(b) for b in (v["buffer"] for v in w.data.values() if isinstance(v, dict) and "buffer" in v))
    for msg, buffers in rec.of("column")[1:]:
        col_bytes = sum(len(b) for b in buffers)
        S, k, M = w.result.n_sites, w.result.k, len(w.tracked)
        assert col_bytes == S * (8 * k + 4 * 4 + 1 + 12 * M) + 4 * len(msg["vocab_strings"])
        assert col_bytes < full_bytes / 5


def test_stop_half_way_keeps_the_tokens_so_far_and_the_widget_works(widget):
    w, rec = widget
    n0 = w.data["n_positions"]

    def stop_after_three(content):
        if content.get("type") == "column" and content["col"] == n0 + 2:
            ask(w, "s1", type="stop")

    rec.hooks.append(stop_after_three)
    ask(w, "g2", type="generate", max_new_tokens=20)
    assert w.wait(60)
    assert rec.reply("s1")["result"] == {"stopped": True}
    reply = rec.reply("g2")
    assert reply["ok"] and reply["result"]["stopped"] and reply["result"]["generated"] == 3
    ids = w.result.input_ids[0].tolist()
    assert len(ids) == n0 + 3
    ref = LogitLens(tiny("llama"), compile="never").run([ids], track=["o"], progress=False)
    for key in ("topk_ids", "next_rank", "tracked_rank"):
        np.testing.assert_array_equal(getattr(w.result, key), getattr(ref, key), err_msg=key)
    assert [p["state"] for p, _ in rec.of("progress")][-1] == "stopped"
    assert w.busy is False and w.error == ""
    # the widget keeps working: a request, and another generation continuing the text
    assert w.cell_detail(1, -1, k=2)["next_id"] == -1
    rec.hooks.clear()
    ask(w, "g3", type="generate", max_new_tokens=2)
    assert w.wait(60) and rec.reply("g3")["ok"]
    assert w.result.input_ids[0, : n0 + 3].tolist() == ids and w.result.n_positions == n0 + 5
    assert w.data["generated_from"] == n0  # the prompt still ends where it did


def test_generate_at_construction_starts_when_a_view_is_ready():
    w = LensWidget(tiny("gpt2"), PROMPT, generate=4, progress=False)
    rec = Recorder(w)
    try:
        assert w.task is None  # nothing streams before a view listens
        ask(w, "v", type="view_ready")
        assert rec.reply("v")["result"] == {"generating": True}
        assert w.wait(60)
        assert w.result.n_positions == len(PROMPT) + 4
        assert len(rec.of("column")) == 5
        ask(w, "v2", type="view_ready")  # a second view does not generate again
        assert rec.reply("v2")["result"] == {"generating": False}
    finally:
        w.close()


def test_bad_generate_requests_are_refused(widget):
    w, rec = widget
    for i, bad in enumerate([{"max_new_tokens": 0}, {"max_new_tokens": "5"}, {"max_new_tokens": 2, "do_sample": "yes"}]):
        ask(w, f"b{i}", type="generate", **bad)
        assert rec.reply(f"b{i}")["ok"] is False
    assert w.task is None
    batch = LensWidget(tiny("llama"), ["ab", "cd"], progress=False)
    Recorder(batch)
    ask(batch, "b", type="generate", max_new_tokens=2)
    assert "one lens and one prompt" in batch.send.__self__.reply("b")["error"]
    batch.close()


LONG = "The quick brown fox jumps over the lazy dog. " * 1


def test_a_long_recompute_reports_progress_and_stop_keeps_the_old_grid(monkeypatch):
    monkeypatch.setattr(tasks_module, "PROGRESS_INTERVAL_S", 0.0)
    # a small memory budget: many chunks, so many progress steps
    w = LensWidget(tiny("llama"), PROMPT, progress=False, memory_budget=13 * 101 * 8)
    rec = Recorder(w)
    try:
        ask(w, "p1", type="set_prompt", prompt=LONG)
        assert w.wait(60)
        assert rec.reply("p1")["ok"]
        prog = [c for c, _ in rec.of("progress") if c["task"] == "compute"]
        running = [p for p in prog if p["state"] == "running"]
        assert len(running) >= 5
        assert [p["done"] for p in running] == sorted(p["done"] for p in running)
        assert running[-1]["done"] == running[-1]["total"] and prog[-1]["state"] == "done"
        assert all(p["eta_s"] is not None and p["eta_s"] >= 0 for p in running)
        assert w.prompt == LONG and w.data["n_positions"] == len(LONG)
        before = dict(w.data)

        def stop_early(content):
            if content.get("type") == "progress" and content["state"] == "running" and content["done"] == 2:
                ask(w, "s", type="stop")

        rec.hooks.append(stop_early)
        ask(w, "p2", type="set_prompt", prompt="something else entirely")
        assert w.wait(60)
        reply = rec.reply("p2")
        assert reply["ok"] is False and reply.get("stopped") is True
        assert w.data is before or w.data == before  # the old grid stays
        assert w.prompt == LONG and w.error == "" and w.busy is False
        assert [p["state"] for p, _ in rec.of("progress")][-1] == "stopped"
        # and the widget keeps working
        rec.hooks.clear()
        ask(w, "p3", type="set_prompt", prompt="Hi")
        assert w.wait(60) and rec.reply("p3")["ok"] and w.data["n_positions"] == 2
    finally:
        w.close()


def test_exported_page_of_a_finished_generation_carries_the_whole_grid(widget, tmp_path):
    w, rec = widget
    w.generate(4, wait=True)
    page = w.save_html(tmp_path / "gen.html").read_text()
    assert "cdn" not in page.lower()
    # the page's own state, decoded (JSON in a script element, arrays as base64), against a run()
    # of the generated text: the whole grid is there, the generated columns included
    state = json.loads(re.search(r'<script type="application/json" id="lw-state">(.*?)</script>', page, re.S).group(1))
    data = state["data"]
    ids = w.result.input_ids[0].tolist()
    assert len(ids) == len(PROMPT) + 4 and data["n_positions"] == len(ids) and data["generated_from"] == len(PROMPT)

    def decoded(key: str) -> np.ndarray:
        a = data[key]
        return np.frombuffer(base64.b64decode(a["b64"]), dtype=DTYPES[a["dtype"]]).reshape(a["shape"])

    ref = LogitLens(tiny("llama"), compile="never").run([ids], track=["o"], progress=False)
    assert decoded("input_ids").ravel().tolist() == ids
    for key in ("topk_ids", "next_rank", "tracked_rank"):
        np.testing.assert_array_equal(decoded(key), getattr(ref, key)[0], err_msg=key)
    for key in ("topk_probs", "entropy", "next_prob", "tracked_prob"):
        np.testing.assert_allclose(decoded(key), getattr(ref, key)[0], atol=1e-5, err_msg=key)


def test_tracking_a_token_is_background_work_with_progress_and_stop(monkeypatch):
    monkeypatch.setattr(tasks_module, "PROGRESS_INTERVAL_S", 0.0)
    w = LensWidget(tiny("llama"), LONG, progress=False, memory_budget=13 * 101 * 8)
    rec = Recorder(w)
    try:
        tracked_before, data_before = list(w.tracked), w.data

        def stop_early(content):
            if content.get("type") == "progress" and content["state"] == "running" and content["done"] == 1:
                ask(w, "s", type="stop")

        rec.hooks.append(stop_early)
        ask(w, "t1", type="track", token="q")
        assert w.wait(60)
        assert rec.reply("t1").get("stopped") is True
        assert w.tracked == tracked_before and w.data is data_before
        rec.hooks.clear()
        ask(w, "t2", type="track", token="q")
        assert w.wait(60)
        reply = rec.reply("t2")
        assert reply["ok"] and reply["result"]["token_id"] == w.model.tokens.token_id("q")
        assert w.tracked == tracked_before + [reply["result"]["token_id"]]
        assert [p["state"] for p, _ in rec.of("progress")][-1] == "done"
    finally:
        w.close()
