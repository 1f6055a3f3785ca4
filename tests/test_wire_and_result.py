"""`lens_widget.wire.result_to_wire` for any prompt of a padded batch and for chosen positions, and
the values of `LensResult.top_tokens()` / `to_dataframe()`, against the result's own arrays."""

from __future__ import annotations

import numpy as np
import pytest

from lens_widget import LogitLens
from lens_widget.wire import WIRE_VERSION, result_to_wire
from zoo import tiny

PROMPTS = ["Hi", "The capital of France is", "abc def"]


@pytest.fixture(scope="module")
def batch():
    return LogitLens(tiny("llama")).run(PROMPTS, k=4, track=["a", "e"], batch_size=3, progress=False)


def unwire(wire: dict, key: str) -> np.ndarray:
    a = wire[key]
    return np.frombuffer(a["buffer"], dtype=np.dtype(a["dtype"]).newbyteorder("<")).reshape(a["shape"])


CELL_KEYS = ("topk_ids", "topk_probs", "entropy", "next_prob", "next_rank", "kl", "nonfinite", "tracked_prob", "tracked_logit", "tracked_rank")


@pytest.mark.parametrize("prompt", [0, 1, 2])
def test_wire_of_each_prompt_of_a_padded_batch(batch, prompt):
    r = batch
    n = int(r.lengths[prompt])
    assert n == len(PROMPTS[prompt]) and (r.positions[prompt, n:] == -1).all()  # padded columns exist
    w = result_to_wire(r, prompt)
    assert w["version"] == WIRE_VERSION and w["prompt"] == PROMPTS[prompt]
    assert w["n_positions"] == n and w["n_sites"] == r.n_sites and w["k"] == 4
    np.testing.assert_array_equal(unwire(w, "positions"), np.arange(n))
    np.testing.assert_array_equal(unwire(w, "input_ids"), r.input_ids[prompt, :n])
    np.testing.assert_array_equal(unwire(w, "next_ids"), r.next_ids[prompt, :n])
    assert unwire(w, "next_ids")[-1] == -1
    for key in CELL_KEYS:
        got, want = unwire(w, key), getattr(r, key)[prompt][:, :n]
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(got, want.astype(got.dtype), err_msg=key)
    assert unwire(w, "topk_ids").dtype == np.int32 and unwire(w, "nonfinite").dtype == np.uint8
    # every id the page shows has its string, and only this prompt's ids travel
    vocab = unwire(w, "vocab_ids").tolist()
    shown = set(r.input_ids[prompt, :n].tolist()) | set(r.topk_ids[prompt][:, :n].ravel().tolist()) | set(r.tracked_ids.tolist())
    assert vocab == sorted(shown) and -1 not in vocab  # exactly these: no other prompt's tokens
    assert w["vocab_strings"] == [r.token_strings[i] for i in vocab]


@pytest.mark.parametrize("positions, want", [("last", lambda n: [n - 1]), ([0, "last"], lambda n: [0, n - 1]), (slice(1, 4), lambda n: [1, 2, 3])])
def test_wire_of_chosen_positions(positions, want):
    lens = LogitLens(tiny("gpt2"))
    r = lens.run(PROMPTS[1:], positions=positions, k=3, progress=False)
    full = lens.run(PROMPTS[1:], k=3, progress=False)
    for prompt in range(2):
        n = int(r.lengths[prompt])
        cols = want(n)
        w = result_to_wire(r, prompt)
        assert w["n_positions"] == len(cols)
        np.testing.assert_array_equal(unwire(w, "positions"), cols)
        np.testing.assert_array_equal(unwire(w, "input_ids"), r.input_ids[prompt, :n])  # the whole prompt travels
        np.testing.assert_array_equal(unwire(w, "next_ids"), [r.input_ids[prompt, c + 1] if c + 1 < n else -1 for c in cols])
        np.testing.assert_array_equal(unwire(w, "topk_ids"), full.topk_ids[prompt][:, cols])
        np.testing.assert_allclose(unwire(w, "kl"), full.kl[prompt][:, cols], atol=1e-5)
        np.testing.assert_array_equal(unwire(w, "next_rank"), full.next_rank[prompt][:, cols])


def test_top_tokens_values(batch):
    r = batch
    for prompt, position in ((1, -1), (1, 3), (0, 0), (2, -2)):
        col = r.position_index(position, prompt)
        df = r.top_tokens(position, prompt)
        assert list(df.columns) == ["Embeddings"] + [f"Layer {i}" for i in range(r.n_sites - 1)]
        assert list(df.index) == [1, 2, 3, 4] and df.index.name == "rank"
        for s, name in enumerate(df.columns):
            for j in range(r.k):
                tid, p = r.topk_ids[prompt, s, col, j], r.topk_probs[prompt, s, col, j]
                assert df[name].iloc[j] == f"{r.display(tid)} ({p:.3f})"
        t = r.top_tokens(position, prompt, k=2, by="rank")
        assert t.shape == (r.n_sites, 2) and t.loc["Layer 1", 2] == df["Layer 1"].iloc[1]
    with pytest.raises(IndexError, match="not computed"):
        r.top_tokens(5, prompt=0)  # "Hi" has 2 tokens


def test_to_dataframe_values(batch):
    r = batch
    df = r.to_dataframe()
    assert len(df) == r.n_sites * int(r.lengths.sum())  # padded cells are not rows
    assert (df.position >= 0).all()
    a, e = r.tracked_ids.tolist()
    assert {f"prob[{a}]", f"rank[{a}]", f"prob[{e}]", f"rank[{e}]"} <= set(df.columns)
    for row in df.sample(40, random_state=0).itertuples(index=False):
        b, s, p = row.prompt, row.layer, r.position_index(row.position, row.prompt)
        assert row.site == r.sites[s] and row.token_id == r.input_ids[b, row.position]
        assert row.token == r.display(row.token_id)
        assert row.top1_id == r.topk_ids[b, s, p, 0] and row.top1 == r.display(row.top1_id)
        assert row.top1_prob == r.topk_probs[b, s, p, 0]
        assert row.next_id == r.next_ids[b, p] and row.next_token == (r.display(row.next_id) if row.next_id >= 0 else "")
        np.testing.assert_equal(row.next_prob, r.next_prob[b, s, p])  # NaN at a prompt's last token
        assert row.next_rank == r.next_rank[b, s, p] and row.entropy == r.entropy[b, s, p]
        assert row.kl_to_final == r.kl[b, s, p] and row.nonfinite == r.nonfinite[b, s, p]
    last = df[(df.prompt == 1) & (df.position == len(PROMPTS[1]) - 1)]
    assert (last.next_id == -1).all() and last.next_prob.isna().all() and (last.next_rank == 0).all()
    for m, tid in enumerate(r.tracked_ids):
        sel = df[(df.prompt == 2) & (df.layer == 1)].sort_values("position")
        np.testing.assert_array_equal(sel[f"prob[{tid}]"].to_numpy(), r.tracked_prob[2, 1, : len(PROMPTS[2]), m])
        np.testing.assert_array_equal(sel[f"rank[{tid}]"].to_numpy(), r.tracked_rank[2, 1, : len(PROMPTS[2]), m])


@pytest.mark.parametrize(
    "name, label",
    [
        ("/root/.cache/lens_widget/gemma-3-270m/gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m"),
        ("/home/me/models/SmolLM2-135M-Instruct/", "SmolLM2-135M-Instruct"),
        ("~/models/llama", "llama"),
        ("./checkpoints/step-1000", "step-1000"),
        ("C:\\models\\phi-3.GGUF", "phi-3"),
        ("google/gemma-3-270m", "google/gemma-3-270m"),
        ("gpt2", "gpt2"),
        ("SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"),
    ],
)
def test_model_label_keeps_hub_names_and_drops_local_folders(name, label):
    from lens_widget.result import model_label

    assert model_label(name) == label


def test_wire_and_exported_page_name_a_local_model_without_its_path(tmp_path):
    """The widget's title comes from the wire's model_name: a cache path there would fill the title
    and leak this machine's folders into a shared page."""
    from lens_widget import LensWidget

    hm = tiny("llama")
    secret = "/home/someone/private-folder/cache/gemma-3-270m/gemma-3-270m-q4_k_m.gguf"
    hm.name = secret
    r = LogitLens(hm).run("abc")
    assert r.model_name == secret  # the identity stays whole (lens files match on it)
    assert result_to_wire(r, 0)["model_name"] == "gemma-3-270m-q4_k_m"
    page = LensWidget(result=r).save_html(tmp_path / "p.html").read_text()
    assert "private-folder" not in page and "gemma-3-270m-q4_k_m" in page
