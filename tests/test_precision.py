"""`LogitLens(..., precision=)`: the certified unembedding inside the engine gives the float32
path's grid (top-k ids and logits, next-token and tracked ranks and logits identical; entropy,
KL and probabilities within 1e-4) on every registry architecture and the embedded model, with
the tensor-core product replaced by emulations (the CPU has none) that inject errors up to the
proven bound; a product that breaks the bound is caught; ``"auto"`` picks the right path.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from lens_widget import HookedModel, LensWidget, LogitLens
from lens_widget import certified as C
from products import noisy_product
from zoo import CONFIGS, char_tokenizer, tiny

EXACT = ("topk_ids", "next_rank", "tracked_rank", "next_ids", "nonfinite")
#: recounted logits are the float32 path's to the last bit or two (a BLAS product's rounding
#: can depend on its shape: see lens_widget.certified's caveats)
ULPS = ("topk_logits", "next_logit", "tracked_logit")
CLOSE = ("entropy", "kl", "next_prob", "tracked_prob", "topk_probs")
PROMPTS = ["Hello world, hello there", "abc xyz"]
RUN = dict(sites="all", track=["a", "e", " "], progress=False)
#: keep every row on the certified path (tiny vocabularies make wide windows relative to V)
ON_PATH = dict(give_up=1.0, max_window=1.0, max_union=1.0, row_share=None)
#: ... and recount only what ranks and top-k need (no columns for the sums: a tiny model's
#: whole vocabulary lies within a few nats of its maximum), the sums left approximate
RANKS_ONLY = dict(ON_PATH, mass_nats=0.0, sum_tol=None)


@functools.lru_cache(maxsize=None)
def bf16_twin(arch: str) -> HookedModel:
    """The tiny ``arch`` model in bf16 (vocabulary 131: not a multiple of the top-k block)."""
    hm = tiny(arch, vocab=131)
    m = copy.deepcopy(hm.model).to(torch.bfloat16)
    return HookedModel.from_model(m.eval(), char_tokenizer(), name=f"tiny-{arch}-bf16")


def worst_case(hm: HookedModel, scale: float = 1.0, **options) -> C.Certify:
    """A certified unembedding whose product errs by +-``scale`` x its share of the bound in
    every element (random signs): the worst a tensor core may do within the bound."""
    w = hm.model.get_output_embeddings().weight.detach()
    return C.Certify(noisy_product(C.weight_norm_max(w), scale=scale, worst=True), **options)


def assert_same_grid(r, r0, sums: bool = True):
    for key in EXACT:
        np.testing.assert_array_equal(getattr(r, key), getattr(r0, key), err_msg=key)
    for key in ULPS:
        np.testing.assert_allclose(getattr(r, key), getattr(r0, key), rtol=3e-7, atol=1e-30, equal_nan=True, err_msg=key)
    for key in CLOSE if sums else ():
        np.testing.assert_allclose(getattr(r, key), getattr(r0, key), atol=1e-4, rtol=0, equal_nan=True, err_msg=key)


@pytest.fixture
def certified_chunks(monkeypatch):
    """``calls[0]``: how many chunks went through ``certified.certified_stats`` (wherever the
    chunk loop ran: here, in generation, inside a trace)."""
    calls = [0]
    real = C.certified_stats

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(C, "certified_stats", counted)
    return calls


def chunked(hm: HookedModel, precision, rows: int = 40) -> LogitLens:
    """A lens whose chunks hold ``rows`` rows (several chunks per prompt), eager reductions."""
    vocab = hm.model.get_output_embeddings().weight.shape[0]
    return LogitLens(hm, memory_budget=vocab * 13 * rows, compile="never", precision=precision)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_certified_grid_equals_the_float32_path_on_every_architecture(arch):
    hm = bf16_twin(arch)
    # the same chunks on both paths (a BLAS product's last bit can depend on its shape)
    ref = chunked(hm, "float32", rows=4).run(PROMPTS, **RUN)
    assert_same_grid(chunked(hm, worst_case(hm, **ON_PATH), rows=4).run(PROMPTS, **RUN), ref)
    lens = chunked(hm, worst_case(hm, **RANKS_ONLY), rows=4)
    assert_same_grid(lens.run(PROMPTS, **RUN), ref, sums=False)
    tally = lens.last_certified["logit lens"]
    # the certified path really decoded every row, in several chunks, and left most columns
    # approximate (a chunk's recount covers well under the vocabulary)
    assert tally["chunks"] > 2 and tally["rows"] == int(ref.lengths.sum()) * len(ref.sites)
    assert tally["fallback_share"] == 0.0 and not tally["gave_up"]
    assert tally["mean_union"] < 0.75 * 131, tally


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "opt"])
def test_default_windows_and_give_up_change_nothing(arch):
    """With the shipped window limits (rows go back to the float32 path when their window is
    wide) and with a reducer that gives up certifying after two chunks: the same grid."""
    hm = bf16_twin(arch)
    ref = chunked(hm, "float32").run(PROMPTS, **RUN)
    for cert in (worst_case(hm, give_up=1.0), worst_case(hm, give_up=0.0)):
        lens = chunked(hm, cert)
        assert_same_grid(lens.run(PROMPTS, **RUN), ref)
        tally = lens.last_certified["logit lens"]
        if cert.give_up == 0.0:
            assert tally["gave_up"] and tally["chunks"] == C.Certify.GIVE_UP_AFTER


def test_a_product_beyond_the_bound_is_caught():
    """Errors 200x the bound change ranks: the grid test above would fail for a wrong bound."""
    hm = bf16_twin("llama")
    ref = chunked(hm, "float32", rows=1).run(PROMPTS, **RUN)
    # one row per chunk: columns outside the row's window are not recounted
    bad = chunked(hm, worst_case(hm, scale=200.0, **RANKS_ONLY), rows=1).run(PROMPTS, **RUN)
    assert not np.array_equal(bad.next_rank, ref.next_rank) or not np.array_equal(bad.topk_ids, ref.topk_ids)


def test_several_lenses_generation_and_the_widget_take_the_certified_path(certified_chunks):
    hm = bf16_twin("llama")
    cert = worst_case(hm, **ON_PATH)
    ref = chunked(hm, "float32")
    lens = chunked(hm, cert)
    # several lenses from one pass: every lens certified
    from zoo import jittered_lens

    j = jittered_lens(hm)
    resid = dict(RUN, sites=None)
    both = lens.run(PROMPTS, decoders={"logit": None, "j": j}, **resid)
    both0 = ref.run(PROMPTS, decoders={"logit": None, "j": j}, **resid)
    for label in both0:
        assert_same_grid(both[label], both0[label])
    assert set(lens.last_certified) == {"logit", "j"}
    # generation: the per-token column through the certified reducer equals run()
    before = certified_chunks[0]
    gen = lens.generate("Hello wor", 5, track=["a"], progress=False)
    assert certified_chunks[0] > before
    gen0 = ref.generate("Hello wor", 5, track=["a"], progress=False)
    assert gen.input_ids.tolist() == gen0.input_ids.tolist()
    assert_same_grid(gen, gen0)
    # the widget hands precision= to its lens
    w = LensWidget(hm, "Hello world", precision=cert, memory_budget=131 * 13 * 40)
    assert w.runner.precision is cert and w.runner.last_certified["logit lens"]["chunks"] > 0
    assert_same_grid(w.result, ref.run("Hello world", sites=w.result.sites, progress=False))
    w.close()


def test_precision_resolves_by_device_and_dtype():
    cpu = torch.device("cpu")
    assert C.resolve_precision("float32", torch.bfloat16, cpu) is None
    # auto is the float32 path (the certified one does not pay: see resolve_precision)
    assert C.resolve_precision("auto", torch.bfloat16, cpu) is None
    forced = C.resolve_precision("certified", torch.float16, cpu)
    assert forced is not None and forced.product is C.emulated_product
    # a float32 unembedding is its own reference
    assert C.resolve_precision("certified", torch.float32, cpu) is None
    cert = C.Certify(C.emulated_product)
    assert C.resolve_precision(cert, torch.bfloat16, cpu) is cert
    with pytest.raises(ValueError, match="'auto', 'float32', 'certified'"):
        LogitLens(tiny("llama"), precision="fast")
    with pytest.raises(TypeError, match="max_windw"):
        C.Certify(max_windw=1.0)


def test_the_emulated_product_is_certified_on_the_cpu():
    """``precision="certified"`` on the CPU (exact products, float32 accumulation): the grid."""
    hm = bf16_twin("gemma2")  # soft-capped logits
    lens = chunked(hm, "certified")
    assert_same_grid(lens.run(PROMPTS, **RUN), chunked(hm, "float32").run(PROMPTS, **RUN))
    assert lens.last_certified["logit lens"]["chunks"] >= C.Certify.GIVE_UP_AFTER


def test_the_lens_next_to_a_remote_model_certifies_there(certified_chunks):
    """``remote="local"`` (the request serialised as for NDIF): the job carries the precision,
    resolved next to the model (its dtype and device); the cells equal the local float32 grid."""
    import nnsight

    hm = bf16_twin("llama")
    lm = nnsight.TransformersModel(hm.model, tokenizer=hm.tokenizer, task="text-generation")
    remote = HookedModel.from_nnsight(lm, remote="local")
    ref = chunked(hm, "float32").run(PROMPTS, **RUN)
    lens = chunked(remote, "certified")
    plan = lens.plan(PROMPTS, "all", "all", 10, (), 0)
    job = lens.lens_job(plan, {"l": lens.decoder}, max(map(len, plan.positions)), [0, 1], plan.batch)
    assert job["precision"] == "certified"
    assert_same_grid(lens.run(PROMPTS, **RUN), ref)
    assert certified_chunks[0] > 0  # inside the trace


@pytest.mark.slow
def test_the_embedded_model_in_bf16(smollm):
    """SmolLM2 in bf16 (its real weights), the residual stream, worst-case errors up to the bound:
    the float32 path's grid with the shipped settings (rows whose sums the bound cannot hold to
    1e-4 are recomputed), and with sums left to their stated bounds most rows' next-token ranks
    and top-k are certified without a recount of the whole row."""
    m = copy.deepcopy(smollm.model).to(torch.bfloat16).eval()
    hm = HookedModel.from_model(m, smollm.tokenizer, name="smollm2-bf16")
    prompt = "The capital of France is Paris, and the capital of Italy is"
    run = dict(track=[" Rome", " Paris"], progress=False)
    ref = LogitLens(hm, compile="never", precision="float32").run(prompt, **run)
    shipped = LogitLens(hm, compile="never", precision=worst_case(hm, give_up=1.0))
    assert_same_grid(shipped.run(prompt, **run), ref)
    # next-token ranks and top-k only (a tracked token deep in the vocabulary widens its window
    # past what a recount of the row's columns costs: those rows go back to the float32 path)
    ref = LogitLens(hm, compile="never", precision="float32").run(prompt, progress=False)
    ranks_only = LogitLens(hm, compile="never", precision=worst_case(hm, give_up=1.0, sum_tol=None))
    assert_same_grid(ranks_only.run(prompt, progress=False), ref, sums=False)
    tally = ranks_only.last_certified["logit lens"]
    assert tally["fallback_share"] < 0.5 and tally["mean_union"] < 0.25 * hm.model.config.vocab_size, tally
