"""The lens is exact: against the model's logits and against a naive float64 lens, per arch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lens_widget.engine as engine
import lens_widget.reduce as reduce
from lens_widget import HookedModel, LogitLens
from lens_widget.arch import get_path
from lens_widget.reduce import TOPK_BLOCK, uses_blocked_topk
from reference import naive_lens, rank_band
from zoo import CONFIGS, SEQUENTIAL, VOCAB, tiny

ARCHS = sorted(CONFIGS)
PARALLEL = sorted(set(CONFIGS) - SEQUENTIAL)
PROMPT = "The capital of France is Paris."


@pytest.fixture
def reducers(monkeypatch):
    """Every ChunkReducer the engine builds during the test (to read ``fused_chunks``, ``blocked``)."""
    made = []

    class Spy(engine.ChunkReducer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(engine, "ChunkReducer", Spy)
    return made


@pytest.fixture
def blocked_calls(monkeypatch):
    """The k of every call of the blocked top-k path."""
    calls = []
    real = reduce.blocked_topk

    def spy(z, block_max, k):
        calls.append(k)
        return real(z, block_max, k)

    monkeypatch.setattr(reduce, "blocked_topk", spy)
    return calls


def module_outputs(model, paths, batch) -> dict[str, torch.Tensor]:
    """Outputs ``[1, T, d]`` of the modules at ``paths`` (dotted, from the top model) during one
    ordinary forward pass: hooks of the test's own, independent of the lens's recorder."""
    out, handles = {}, []
    T = int(batch.lengths[0])
    for path in paths:
        def hook(_m, _a, o, path=path):
            t = o[0] if isinstance(o, tuple) else o
            out[path] = t.detach().clone().reshape(1, T, -1)  # clone: Falcon adds to its MLP output in place
        handles.append(get_path(model, path).register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return out


def assert_topk_is_torch_topk(lens, r, acts, k):
    """Every cell's top-k equals ``torch.topk`` of the float32 logits of its activation."""
    for s, site in enumerate(r.sites):
        z = lens.decoder.logits(acts[0][site], site)
        want = torch.topk(z, k, dim=-1)
        n = z.shape[0]
        np.testing.assert_allclose(r.topk_logits[0, s, :n], want.values.numpy(), atol=1e-5, rtol=1e-6)
        got = torch.as_tensor(r.topk_ids[0, s, :n])
        np.testing.assert_allclose(z.gather(1, got).numpy(), r.topk_logits[0, s, :n], atol=1e-5, rtol=1e-6)
        assert (got == want.indices).float().mean() > 0.99  # ids too (ties aside)


@pytest.mark.parametrize("arch", ARCHS)
def test_last_layer_reproduces_model_logits(arch):
    assert LogitLens(tiny(arch)).check_lens(PROMPT) <= 1e-4


@pytest.mark.parametrize("compiled", [True, False], ids=["fused", "eager"])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_layer_matches_naive_lens(arch, compiled, reducers):
    hm = tiny(arch)
    enc_ids = hm.tokenizer(PROMPT)["input_ids"]
    ref, sites = naive_lens(hm, PROMPT)
    lens = LogitLens(hm, compile="always" if compiled else "never")
    r = lens.run(PROMPT, k=5, track=[5, 17], progress=False)
    assert r.sites == sites
    # "fused" must test the compiled kernel, not eager twice (compile="always" raises if compiling fails)
    assert len(reducers) == 1 and (reducers[0].fused_chunks > 0) == compiled, reducers[0].fused_chunks
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
                lo, hi = rank_band(z, tid)
                assert lo <= r.tracked_rank[0, s, t, m] <= hi
                np.testing.assert_allclose(r.tracked_logit[0, s, t, m], z[tid], atol=1e-4, rtol=1e-5)
            if nxt[t] >= 0:
                lo, hi = rank_band(z, nxt[t])
                assert lo <= r.next_rank[0, s, t] <= hi
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


# bloom and opt are left out: their lens derives attn_out / mlp_out as differences of residuals,
# so the sums are identities there (test_derived_contributions_equal_the_modules_own_outputs checks them)
@pytest.mark.parametrize("arch", sorted(SEQUENTIAL - {"bloom", "opt"}))
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


# Modules whose output is exactly one contribution, named by hand (not from the registry), for the
# architectures where the lens derives a contribution as a difference of residuals (BLOOM's
# attention and MLP add the residual themselves; OPT's attention output is the sum with it).
# For these the sums of test_contributions_add_up_to_the_residual would be identities; these checks are not.
CONTRIBUTION_MODULES = {
    "bloom": ("transformer.h.{i}.self_attention.dense", "transformer.h.{i}.mlp.dense_4h_to_h"),
    "opt": ("model.decoder.layers.{i}.self_attn.out_proj", "model.decoder.layers.{i}.fc2"),
}
# Parallel blocks: x_out = x_in + attn(x_in) + mlp(x_in); the modules named by hand.
PARALLEL_MODULES = {
    "gptj": ("transformer.h.{i}.attn", "transformer.h.{i}.mlp"),
    "gpt_neox": ("gpt_neox.layers.{i}.attention", "gpt_neox.layers.{i}.mlp"),
    "falcon": ("transformer.h.{i}.self_attention", "transformer.h.{i}.mlp"),
    "phi": ("model.layers.{i}.self_attn", "model.layers.{i}.mlp"),
}


@pytest.mark.parametrize("arch", sorted(CONTRIBUTION_MODULES))
def test_derived_contributions_equal_the_modules_own_outputs(arch):
    hm = tiny(arch)
    L = hm.num_layers
    batch = hm.encode(PROMPT)
    select = torch.arange(int(batch.lengths[0]))[None]
    acts = hm.record(batch, [f"{k}_{i}" for i in range(L) for k in ("attn_out", "mlp_out")], select).acts
    attn, mlp = CONTRIBUTION_MODULES[arch]
    ref = module_outputs(hm.model, [m.format(i=i) for i in range(L) for m in (attn, mlp)], batch)
    for i in range(L):
        torch.testing.assert_close(acts[f"attn_out_{i}"], ref[attn.format(i=i)], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(acts[f"mlp_out_{i}"], ref[mlp.format(i=i)], atol=1e-4, rtol=1e-4)
        assert acts[f"attn_out_{i}"].abs().max() > 1e-2  # not 0 == 0


def test_every_parallel_architecture_is_covered():
    assert sorted(PARALLEL_MODULES) == PARALLEL and all(tiny(a).parallel_blocks for a in PARALLEL)


@pytest.mark.parametrize("arch", PARALLEL)
def test_parallel_blocks_residual_plus_attention_plus_mlp_is_the_block_output(arch):
    hm = tiny(arch)
    L = hm.num_layers
    batch = hm.encode(PROMPT)
    T = int(batch.lengths[0])
    acts = hm.record(batch, ["embed"] + [f"{k}_{i}" for i in range(L) for k in ("attn_out", "mlp_out", "resid_out")], torch.arange(T)[None]).acts
    attn, mlp = PARALLEL_MODULES[arch]
    ref = module_outputs(hm.model, [m.format(i=i) for i in range(L) for m in (attn, mlp)], batch)
    with torch.no_grad():  # block inputs / outputs from Hugging Face's own hidden_states
        hs = hm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts["embed"], hs[0], atol=1e-5, rtol=1e-5)
    prev = acts["embed"]
    for i in range(L):
        a, m = ref[attn.format(i=i)], ref[mlp.format(i=i)]
        torch.testing.assert_close(acts[f"attn_out_{i}"], a, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(acts[f"mlp_out_{i}"], m, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(prev + a + m, acts[f"resid_out_{i}"], atol=1e-4, rtol=1e-4)
        if i < L - 1:  # the last entry of hidden_states is after the final norm
            torch.testing.assert_close(acts[f"resid_out_{i}"], hs[i + 1], atol=1e-5, rtol=1e-5)
        assert a.abs().max() > 1e-2 and m.abs().max() > 1e-2
        prev = acts[f"resid_out_{i}"]


def test_parallel_blocks_refuse_resid_mid():
    hm = tiny("gptj")
    with pytest.raises(KeyError, match="parallel"):
        LogitLens(hm).run(PROMPT, sites=["resid_mid_0"], progress=False)
    # their attention and MLP outputs are still available
    r = LogitLens(hm).run(PROMPT, sites="all", progress=False)
    assert "attn_out_0" in r.sites and "resid_mid_0" not in r.sites


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_half_precision_model_gets_float32_statistics(arch):
    import copy

    hm = tiny(arch)
    half = HookedModel.from_model(copy.deepcopy(hm.model).to(torch.bfloat16), hm.tokenizer)
    r = LogitLens(half).run(PROMPT, track=[5, 17], progress=False)
    twin = LogitLens(hm).run(PROMPT, track=[5, 17], progress=False)  # the same weights in float32
    for key in ("topk_probs", "entropy", "kl", "next_prob", "tracked_prob"):
        assert getattr(r, key).dtype == np.float32, key
    assert np.isfinite(r.entropy).all() and np.isfinite(r.kl).all()  # KL and entropy: compared with the twin below
    # top-1 agrees wherever float32's top-1 is clear of its runner-up
    clear = twin.topk_logits[..., 0] - twin.topk_logits[..., 1] > 0.1
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(r.topk_ids[..., 0][clear], twin.topk_ids[..., 0][clear])
    np.testing.assert_allclose(r.topk_probs[..., 0], twin.topk_probs[..., 0], atol=1e-2)
    np.testing.assert_allclose(r.tracked_prob, twin.tracked_prob, atol=1e-2)
    np.testing.assert_allclose(r.next_prob, twin.next_prob, atol=1e-2)
    np.testing.assert_allclose(r.kl, twin.kl, atol=1e-2, rtol=5e-2)
    np.testing.assert_allclose(r.entropy, twin.entropy, atol=1e-2, rtol=1e-2)
    assert twin.kl[0, :-1].max() > 0.05  # the layers differ: KL agreeing is not 0 == 0
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


def test_vocab_not_a_multiple_of_the_block_uses_plain_topk(monkeypatch, reducers):
    assert VOCAB % TOPK_BLOCK != 0 and not uses_blocked_topk(VOCAB, 5)  # the tiny models run the plain top-k path

    def forbidden(*_args):
        raise AssertionError("the blocked top-k ran on a vocabulary that is not a multiple of the block")

    monkeypatch.setattr(reduce, "blocked_topk", forbidden)
    lens = LogitLens(tiny("llama"), compile="always")
    r, acts = lens.run(PROMPT, k=5, progress=False, return_activations=True)
    (red,) = reducers
    assert not red.blocked and red.kernel == "cell_stats" and red.fused_chunks > 0
    assert (np.diff(r.topk_logits, axis=-1) <= 0).all()
    assert_topk_is_torch_topk(lens, r, acts, 5)


@pytest.mark.parametrize(
    "vocab, k, blocked",
    [(6400, 10, True), (6400, 100, True), (6400, 101, False), (128, 2, True), (128, 3, False)],
    ids=["6400-k10", "6400-k100=V/64", "6400-k101", "128-k2=V/64", "128-k3"],
)
def test_blocked_topk_end_to_end(vocab, k, blocked, reducers, blocked_calls):
    """A vocabulary that is a multiple of 64 (as SmolLM2's and Gemma's are), compiled, k > 1:
    the blocked path runs up to k = V // 64 and the plain one above; both equal torch.topk."""
    assert uses_blocked_topk(vocab, k) == blocked
    hm = tiny("llama", vocab=vocab)
    lens = LogitLens(hm, compile="always")
    r, acts = lens.run(PROMPT, k=k, track=[5, 60], progress=False, return_activations=True)
    (red,) = reducers
    assert red.fused_chunks > 0 and red.blocked == blocked
    assert red.kernel == ("cell_stats_blocked" if blocked else "cell_stats")
    assert (set(blocked_calls) == {k}) if blocked else blocked_calls == []
    assert r.topk_ids.shape[-1] == k
    assert_topk_is_torch_topk(lens, r, acts, k)
    eager = LogitLens(hm, compile="never").run(PROMPT, k=k, track=[5, 60], progress=False)
    np.testing.assert_array_equal(r.tracked_rank, eager.tracked_rank)
    np.testing.assert_array_equal(r.next_rank, eager.next_rank)
    for key in ("topk_probs", "entropy", "kl", "next_prob", "tracked_prob"):
        np.testing.assert_allclose(getattr(r, key), getattr(eager, key), atol=2e-5, rtol=1e-4, err_msg=key)


def test_a_failing_compiled_kernel_falls_back_to_eager(monkeypatch, reducers):
    hm = tiny("llama", vocab=6400)
    eager = LogitLens(hm, compile="never").run(PROMPT, k=10, track=[5], progress=False)

    def broken(*_args, **_kwargs):
        raise RuntimeError("inductor exploded")

    monkeypatch.setattr(reduce.FUSED, "get", lambda name: broken)
    monkeypatch.setattr(LogitLens, "use_fused", lambda self, plan: True)  # as for a large run
    with pytest.warns(UserWarning, match="compiled reductions failed"):
        r = LogitLens(hm).run(PROMPT, k=10, track=[5], progress=False)
    red = reducers[-1]
    assert red.fused is False and red.fused_chunks == 0  # it tried, failed, and went eager
    for key in ("topk_ids", "next_rank", "tracked_rank", "topk_probs", "entropy", "kl", "next_prob", "tracked_prob"):
        np.testing.assert_array_equal(getattr(r, key), getattr(eager, key), err_msg=key)
    # compile="always" (tests, benchmarks) raises instead of falling back
    with pytest.raises(RuntimeError, match="inductor exploded"):
        LogitLens(hm, compile="always").run(PROMPT, k=10, progress=False)


@pytest.mark.filterwarnings("ignore:lens_widget. torch.compile")
def test_a_failing_compile_raises_under_always_and_stays_eager_under_auto(monkeypatch, reducers):
    fresh = reduce.FusedKernels()  # nothing compiled yet in this one
    monkeypatch.setattr(engine, "FUSED", fresh)
    monkeypatch.setattr(reduce, "FUSED", fresh)

    def no_compiler(*_args, **_kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", no_compiler)
    hm = tiny("llama")
    with pytest.raises(RuntimeError, match="compile='always'.*no C\\+\\+ compiler"):
        LogitLens(hm, compile="always").run(PROMPT, progress=False)
    assert "no C++ compiler" in fresh.failure("cell_stats")
    monkeypatch.setattr(engine, "FUSE_MIN_WORK", 0)  # large enough to want the compiled kernel
    r = LogitLens(hm).run(PROMPT, track=[5], progress=False)
    assert reducers[-1].fused and reducers[-1].fused_chunks == 0
    eager = LogitLens(hm, compile="never").run(PROMPT, track=[5], progress=False)
    for key in ("topk_ids", "tracked_rank", "topk_probs", "kl"):
        np.testing.assert_array_equal(getattr(r, key), getattr(eager, key), err_msg=key)
