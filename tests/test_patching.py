"""Patching from the grid: a cell's residual put into another run (the intervened grid and its
diff with the clean one), and the activation-patching sweep over the residual stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lens_widget.engine import LogitLens
from zoo import counted_forwards, tiny

TARGET = "The cat sat on the mat"
SOURCE = "A dog ran in the park!"
ARCHS = ["llama", "gpt2", "gemma2", "opt", "gpt_neox", "bloom", "falcon", "qwen3"]


def by_hand(hm, prompt, layer, position, value):
    """The target's grid with block ``layer``'s output at ``position`` replaced by ``value``, by a
    forward hook written here (not the library's seam)."""

    def hook(_m, _args, output):
        first = (output[0] if isinstance(output, tuple) else output).clone()
        first[0, position] = value
        return (first, *output[1:]) if isinstance(output, tuple) else first

    handle = hm.blocks[layer].register_forward_hook(hook)
    try:
        return LogitLens(hm, compile="never").run(prompt, track=[7], progress=False)
    finally:
        handle.remove()


def source_vector(hm, prompt, site, position):
    batch = hm.encode(prompt)
    return hm.record(batch, [site], torch.tensor([[position]])).acts[site][0, 0]


@pytest.mark.parametrize("arch", ARCHS)
def test_the_patched_grid_equals_a_hand_written_hook_patch(arch):
    hm = tiny(arch)
    lens = LogitLens(hm, compile="never")
    L, pos, tpos = 1, 5, 3
    p = lens.patch(SOURCE, TARGET, f"resid_out_{L}", pos, tpos, track=[7])
    ref = by_hand(hm, TARGET, L, tpos, source_vector(hm, SOURCE, f"resid_out_{L}", pos))
    for key in ("topk_ids", "next_rank", "tracked_rank"):
        np.testing.assert_array_equal(getattr(p.patched, key), getattr(ref, key), err_msg=key)
    for key in ("topk_probs", "entropy", "kl", "tracked_prob"):
        np.testing.assert_allclose(getattr(p.patched, key), getattr(ref, key), atol=1e-6, rtol=1e-6, err_msg=key)
    # the patch changed something downstream, and nothing outside the causal cone
    cone = p.in_cone()
    assert not np.array_equal(p.patched.topk_probs[0][cone], p.clean.topk_probs[0][cone])
    for key in ("topk_ids", "topk_probs", "entropy", "next_prob", "next_rank", "tracked_prob", "tracked_rank"):
        np.testing.assert_array_equal(getattr(p.patched, key)[0][~cone], getattr(p.clean, key)[0][~cone], err_msg=key)
    # the diff grid is the comparison of the two, b = patched
    np.testing.assert_allclose(p.comparison.js[~cone], 0.0, atol=0)
    assert float(p.comparison.js[cone].max()) > 0


def test_patching_a_prompt_into_itself_changes_nothing():
    hm = tiny("llama")
    p = LogitLens(hm, compile="never").patch(TARGET, TARGET, "resid_out_2", 4, track=[7])
    for key in ("topk_ids", "topk_probs", "kl", "next_rank", "tracked_prob"):
        np.testing.assert_array_equal(getattr(p.patched, key), getattr(p.clean, key), err_msg=key)
    assert float(np.abs(p.comparison.js).max()) == 0.0
    assert float(np.abs(np.nan_to_num(p.comparison.metric("d_top1_prob"))).max()) == 0.0


def test_value_and_ablations():
    hm = tiny("gpt2")
    lens = LogitLens(hm, compile="never")
    d = hm.model.config.hidden_size
    v = torch.randn(d, generator=torch.Generator().manual_seed(1))
    got = lens.patch(None, TARGET, "resid_out_0", 2, value=v).patched
    ref = by_hand(hm, TARGET, 0, 2, v)
    np.testing.assert_array_equal(got.topk_ids, ref.topk_ids)
    with counted_forwards(hm) as calls:
        zero = lens.patch(None, TARGET, "1", 2, ablation="zero")
    assert len(calls) == zero.meta["forwards"] == 1  # the zero vector needs no forward of its own
    np.testing.assert_array_equal(zero.patched.topk_ids, by_hand(hm, TARGET, 1, 2, torch.zeros(d)).topk_ids)
    batch = hm.encode(TARGET)
    n = int(batch.lengths[0])
    mean = hm.record(batch, ["resid_out_1"], torch.arange(n)[None]).acts["resid_out_1"][0].mean(0)
    np.testing.assert_array_equal(lens.patch(None, TARGET, "resid_out_1", 2, ablation="mean").patched.topk_ids,
                                  by_hand(hm, TARGET, 1, 2, mean).topk_ids)
    with pytest.raises(ValueError, match="exactly one"):
        lens.patch(SOURCE, TARGET, "resid_out_1", 2, value=v)
    with pytest.raises(IndexError, match="outside"):
        lens.patch(SOURCE, TARGET, "resid_out_1", 99)
    with pytest.raises(KeyError, match="unknown site"):
        lens.patch(SOURCE, TARGET, "resid_mid_x", 2)


def test_the_sweep_equals_one_patch_at_a_time_and_batching_changes_nothing():
    hm = tiny("llama")
    lens = LogitLens(hm, compile="never")
    clean, corrupt, pair = "The cat sat", "The dog sat", (5, 9)
    with counted_forwards(hm) as calls:
        sweep = lens.patch_sweep(clean, corrupt, pair, batch_size=7, progress=False)
    one = lens.patch_sweep(clean, corrupt, pair, batch_size=1, progress=False)
    np.testing.assert_allclose(sweep.recovery, one.recovery, atol=1e-5)
    # the clean run records the clean residuals the patches use: the clean and corrupted runs,
    # then 7 patches a forward, and the sweep says so
    assert len(calls) == sweep.meta["forwards"] == 2 + -(-sweep.recovery.size // 7) < one.meta["forwards"]
    # its clean logit difference is the model's own
    c = hm.encode(clean)
    ref = hm.model(input_ids=c.input_ids, attention_mask=c.attention_mask).logits[0, -1].double()
    assert abs(sweep.clean_ld - float(ref[5] - ref[9])) < 1e-5
    # an independent patch of one cell by hand: block 1's output at position 5
    T = int(hm.encode(clean).lengths[0])
    vec = source_vector(hm, clean, "resid_out_1", 5)
    x = hm.encode(corrupt)

    def hook(_m, _a, out):
        first = (out[0] if isinstance(out, tuple) else out).clone()
        first[0, 5] = vec
        return (first, *out[1:]) if isinstance(out, tuple) else first

    h = hm.blocks[1].register_forward_hook(hook)
    try:
        logits = hm.model(**{"input_ids": x.input_ids, "attention_mask": x.attention_mask}).logits[0, T - 1].double()
    finally:
        h.remove()
    s = sweep.sites.index("resid_out_1")
    assert abs(sweep.patched_ld[s, 5] - float(logits[5] - logits[9])) < 1e-5
    # the last block's output at the last position carries everything; earlier positions of the
    # last block carry nothing (they cannot reach the last position any more)
    assert abs(sweep.recovery[-1, T - 1] - 1.0) < 1e-4
    np.testing.assert_allclose(sweep.recovery[-1, : T - 1], 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="same number of tokens"):
        lens.patch_sweep("ab", "abc", pair, progress=False)


@pytest.mark.slow
def test_ioi_sweep_on_the_embedded_model_finds_the_names():
    from lens_widget import HookedModel

    lens = LogitLens(HookedModel.default())
    clean = "When Mary and John went to the store, John gave a drink to"
    corrupt = "When Mary and John went to the store, Mary gave a drink to"
    sweep = lens.patch_sweep(clean, corrupt, (" Mary", " John"), progress=False)
    print("IOI sweep:", sweep.meta, "LD clean %.3f corrupt %.3f" % (sweep.clean_ld, sweep.corrupt_ld))
    assert sweep.clean_ld > 0 > sweep.corrupt_ld  # the model prefers the indirect object
    T = len(sweep.clean_tokens)
    name = sweep.clean_tokens.index(" John", 5)  # the second John (the subject), where the pair differs
    early = sweep.recovery[1 : len(sweep.sites) // 2]  # the first half of the blocks
    # early on, the recovery sits at the changed name and nowhere else ...
    assert early[:, name].mean() > 0.5
    others = np.delete(early, [name, T - 1], axis=1)
    assert np.abs(others).max() < 0.05
    # ... and by the last block it has moved to the last position
    assert sweep.recovery[-1, T - 1] > 0.99


def test_the_widget_patches_one_prompts_cell_into_another():
    from lens_widget.widget import LensWidget
    from lens_widget.wire import comparison_to_wire

    hm = tiny("llama")
    w = LensWidget(hm, [TARGET, SOURCE], progress=False, track=[7])
    replies = []
    w.send = lambda content, buffers=None: replies.append(content) if content.get("type") == "reply" else None
    r = w.result
    site = r.sites.index("resid_out_1")
    w.handle_message({"type": "patch", "request_id": "p", "source": [1, site, 5], "target": [0, 3]})
    assert w.wait(60)
    reply = replies[-1]
    assert reply["ok"], reply
    assert w.compare_view and w.comparison["patch"]["site"] == site and w.comparison["patch"]["target_position"] == 3
    ref = LogitLens(hm).patch(SOURCE, TARGET, "resid_out_1", 5, 3, track=[7])
    np.testing.assert_array_equal(w.compared.b.topk_ids, ref.patched.topk_ids)
    np.testing.assert_array_equal(w.compared.a.topk_ids, ref.clean.topk_ids)
    cone = w.comparison["patch"]["cone"]
    got = np.frombuffer(cone["buffer"], dtype=cone["dtype"]).reshape(cone["shape"]).astype(bool)
    np.testing.assert_array_equal(got, ref.in_cone())
    assert set(comparison_to_wire(ref.comparison)) <= set(w.comparison)
    # bad requests get clear replies and change nothing
    w.handle_message({"type": "patch", "request_id": "bad", "source": [5, site, 0], "target": [0, 3]})
    assert replies[-1]["ok"] is False and "source prompt_index" in replies[-1]["error"]
    for source, target, field in (([1, site, 99], [0, 3], "source col"), ([1, site, 5], [0, 99], "target col"), ([1, 99, 5], [0, 3], "site")):
        w.handle_message({"type": "patch", "request_id": "bad", "source": source, "target": target})
        assert replies[-1]["ok"] is False and field in replies[-1]["error"], (field, replies[-1])
    w.close()
