"""The lens is exact: against the model's logits and against a naive float64 lens, per arch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lens_widget import LogitLens
from lens_widget.arch import get_path
from reference import naive_lens
from zoo import CONFIGS, SEQUENTIAL, VOCAB, tiny

ARCHS = sorted(CONFIGS)
PROMPT = "The capital of France is Paris."


@pytest.mark.parametrize("arch", ARCHS)
def test_last_layer_reproduces_model_logits(arch):
    assert LogitLens(tiny(arch)).check_lens(PROMPT) <= 1e-4


@pytest.mark.parametrize("compiled", [True, False], ids=["fused", "eager"])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_layer_matches_naive_lens(arch, compiled):
    hm = tiny(arch)
    enc_ids = hm.tokenizer(PROMPT)["input_ids"]
    ref, sites = naive_lens(hm, PROMPT)
    lens = LogitLens(hm, compile="always" if compiled else "never")
    r = lens.run(PROMPT, k=5, track=[5, 17], progress=False)
    assert r.sites == sites
    logp = ref - np.logaddexp.reduce(ref, axis=-1, keepdims=True)
    p = np.exp(logp)
    T = len(enc_ids)
    nxt = np.array(enc_ids[1:] + [-1])
    for s in range(len(sites)):
        for t in range(T):
            z = ref[s, t]
            order = np.argsort(-z, kind="stable")
            np.testing.assert_allclose(r.topk_probs[0, s, t], p[s, t, order[:5]], atol=2e-5, rtol=1e-4)
            assert r.topk_ids[0, s, t, 0] == order[0] or abs(z[order[0]] - z[r.topk_ids[0, s, t, 0]]) < 1e-4
            np.testing.assert_allclose(r.entropy[0, s, t], -(p[s, t] * logp[s, t]).sum(), atol=1e-4, rtol=1e-4)
            kl = (p[-1, t] * (logp[-1, t] - logp[s, t])).sum()
            np.testing.assert_allclose(r.kl[0, s, t], kl, atol=2e-4, rtol=1e-4)
            for m, tid in enumerate([5, 17]):
                lo, hi = 1 + (z > z[tid] + 1e-4).sum(), 1 + (z > z[tid] - 1e-4).sum()
                assert lo <= r.tracked_rank[0, s, t, m] <= hi
                np.testing.assert_allclose(r.tracked_logit[0, s, t, m], z[tid], atol=1e-4, rtol=1e-5)
            if nxt[t] >= 0:
                zt = z[nxt[t]]
                assert 1 + (z > zt + 1e-4).sum() <= r.next_rank[0, s, t] <= 1 + (z > zt - 1e-4).sum()
                np.testing.assert_allclose(r.next_prob[0, s, t], p[s, t, nxt[t]], atol=2e-5, rtol=1e-4)
            else:
                assert r.next_rank[0, s, t] == 0 and np.isnan(r.next_prob[0, s, t])


def test_ranks_are_exact_counts_of_strictly_larger_logits():
    hm = tiny("llama")
    lens = LogitLens(hm)
    r, acts = lens.run(PROMPT, track=list(range(0, VOCAB, 7)), progress=False, return_activations=True)
    for s, site in enumerate(r.sites):
        z = lens.decoder.logits(acts[0][site], site)  # the same float32 logits the reducer saw
        for m, tid in enumerate(r.tracked_ids):
            expect = 1 + (z > z[:, tid : tid + 1]).sum(-1)
            np.testing.assert_array_equal(r.tracked_rank[0, s, : z.shape[0], m], expect.numpy())


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_chunk_size_changes_nothing(arch):
    hm = tiny(arch)
    big = LogitLens(hm).run(PROMPT, track=[3], progress=False)
    # 3 rows per chunk: sites are split into groups and positions into many blocks.
    small = LogitLens(hm, memory_budget=3 * VOCAB * 13).run(PROMPT, track=[3], progress=False)
    for key in ("topk_ids", "next_rank", "tracked_rank"):
        np.testing.assert_array_equal(getattr(big, key), getattr(small, key))
    for key in ("topk_probs", "entropy", "next_prob", "kl", "tracked_prob"):
        np.testing.assert_allclose(getattr(big, key), getattr(small, key), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bloom", "gemma2", "opt"])
def test_padded_batch_equals_one_by_one(arch):
    hm = tiny(arch)
    lens = LogitLens(hm)
    prompts = ["Hi", "The capital of France is", "a longer prompt, with more characters"]
    batch = lens.run(prompts, track=[9], batch_size=3, progress=False)
    for b, prompt in enumerate(prompts):
        one = lens.run(prompt, track=[9], progress=False)
        n = len(prompt)
        assert batch.lengths[b] == n and (batch.positions[b, n:] == -1).all()
        np.testing.assert_array_equal(batch.topk_ids[b, :, :n], one.topk_ids[0])
        np.testing.assert_array_equal(batch.next_rank[b, :, :n], one.next_rank[0])
        np.testing.assert_allclose(batch.topk_probs[b, :, :n], one.topk_probs[0], atol=1e-5)
        np.testing.assert_allclose(batch.kl[b, :, :n], one.kl[0], atol=1e-4)
        np.testing.assert_allclose(batch.tracked_prob[b, :, :n], one.tracked_prob[0], atol=1e-5)


@pytest.mark.parametrize("arch", sorted(SEQUENTIAL))
def test_contributions_add_up_to_the_residual(arch):
    hm = tiny(arch)
    L = hm.num_layers
    sites = ["embed"] + [f"{k}_{i}" for i in range(L) for k in ("resid_mid", "attn_out", "mlp_out", "resid_out")]
    batch = hm.encode(PROMPT)
    select = torch.arange(int(batch.lengths[0]))[None]
    acts = hm.record(batch, sites, select).acts
    prev = acts["embed"]
    for i in range(L):
        torch.testing.assert_close(prev + acts[f"attn_out_{i}"], acts[f"resid_mid_{i}"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(acts[f"resid_mid_{i}"] + acts[f"mlp_out_{i}"], acts[f"resid_out_{i}"], atol=1e-4, rtol=1e-4)
        prev = acts[f"resid_out_{i}"]


def test_parallel_blocks_refuse_resid_mid():
    hm = tiny("gptj")
    with pytest.raises(KeyError, match="parallel"):
        LogitLens(hm).run(PROMPT, sites=["resid_mid_0"], progress=False)
    # their attention and MLP outputs are still available
    r = LogitLens(hm).run(PROMPT, sites="all", progress=False)
    assert "attn_out_0" in r.sites and "resid_mid_0" not in r.sites


def test_half_precision_model_gets_float32_statistics():
    import copy

    hm = tiny("llama")
    half = type(hm).from_model(copy.deepcopy(hm.model).to(torch.bfloat16), hm.tokenizer)
    r = LogitLens(half).run(PROMPT, progress=False)
    assert r.topk_probs.dtype == np.float32
    np.testing.assert_allclose(r.topk_probs.sum(-1).max(), r.topk_probs.sum(-1).max())
    assert np.isfinite(r.entropy).all() and (r.kl >= -1e-4).all()
    # the lens' float32 unembedding is a copy: the bf16 model itself is untouched
    assert half.model.get_output_embeddings().weight.dtype == torch.bfloat16


def test_blocked_topk_equals_torch_topk():
    from lens_widget.reduce import TOPK_BLOCK as _TOPK_BLOCK, blocked_topk

    torch.manual_seed(0)
    z = torch.randn(50, 64 * _TOPK_BLOCK) * torch.linspace(0.1, 30, 50)[:, None]
    z[3, 5 * _TOPK_BLOCK : 5 * _TOPK_BLOCK + 20] = 99.0 + torch.arange(20.0)  # the top-k in one block
    block_max = z.view(50, -1, _TOPK_BLOCK).amax(-1)
    for k in (1, 10, 64):
        values, ids = blocked_topk(z, block_max, k)
        want_v, want_i = torch.topk(z, k, dim=-1)
        torch.testing.assert_close(values, want_v, rtol=0, atol=0)
        torch.testing.assert_close(ids, want_i)
        torch.testing.assert_close(z.gather(1, ids), values, rtol=0, atol=0)


def test_vocab_not_a_multiple_of_the_block_uses_plain_topk():
    from lens_widget.reduce import TOPK_BLOCK as _TOPK_BLOCK

    assert VOCAB % _TOPK_BLOCK != 0  # the tiny models run the plain top-k path
    r = LogitLens(tiny("llama"), compile=True).run(PROMPT, progress=False)
    assert (np.diff(r.topk_logits, axis=-1) <= 0).all()
