"""The certified unembedding (lens_widget.certified): the bound holds, and the reductions under it
are identical to the float32 path (ranks, top-k ids and logits) or within 1e-4 (sums).

CPU has no float32-out half-precision ``mm``, so the approximate product is emulated: exactly in
float64 (checks the derivation of eps), with truncating float32 accumulation (a tensor core's
worst habit), and adversarially (errors injected up to the bound, random and worst-case signs).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lens_widget import certified as C
from lens_widget.reduce import ChunkReducer
from products import f64_product, noisy_product, truncating_product

UPCAST_ROWS = 32 * 2**20  # bytes, as Decoder.UPCAST_BYTES


# -- the float32 path, written out as decoders.Decoder.unembed does it -----------------------------
def float32_path(x, w, bias=None, softcap=None):
    """float32 copy of W in blocks, torch.mm, bias, soft-cap (Decoder.unembed + finish)."""
    V, d = w.shape
    z = torch.empty(x.shape[0], V)
    block = torch.empty(min(V, max(1, UPCAST_ROWS // (4 * d))), d)
    for v0 in range(0, V, block.shape[0]):
        n = min(block.shape[0], V - v0)
        block[:n].copy_(w[v0 : v0 + n])
        torch.mm(x, block[:n].T, out=z[:, v0 : v0 + n])
    if bias is not None:
        z.add_(bias)
    if softcap is not None:
        z.div_(softcap).tanh_().mul_(softcap)
    return z


def reference_stats(z32, targets, k, p_final=None, group=1):
    ranks = torch.stack([(z32 > z32.gather(1, targets[:, j : j + 1])).sum(-1) + 1 for j in range(targets.shape[1])], -1)
    top = torch.topk(z32, k, dim=-1)
    lse = torch.logsumexp(z32.double(), -1)
    logp = z32.double() - lse[:, None]
    neg_h = (logp.exp() * logp).sum(-1)
    cross = None
    if p_final is not None:
        pf = p_final.double().repeat_interleave(group, 0)
        cross = (pf * logp).sum(-1)
    return {"ranks": ranks.int(), "topk_logits": top.values, "topk_ids": top.indices, "lse": lse, "neg_entropy": neg_h, "cross": cross}


def squeeze(z32, eps, targets, factor=1.0, sign=None):
    """The adversary: z~ within ``factor * eps`` of z32, every column pushed towards the first
    target's logit (columns above down, columns below up, the target away from them), rounded
    towards z32 so that |z~ - z32| <= factor * eps holds in float32."""
    e = (eps.double() * factor)[:, None]
    t = z32.gather(1, targets[:, :1]).double()
    zd = z32.double()
    if sign is None:
        sign = torch.where(zd > t, -1.0, 1.0).double()
    want = zd + sign * e
    want.scatter_(1, targets[:, :1], (t + e))  # the target up, towards the columns above it
    out = want.float()
    too_far = (out.double() - zd).abs() > e
    out = torch.where(too_far, torch.nextafter(out, z32), out)
    return out


def random_problem(V, d, r, seed, bias=False, softcap=None, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(V, d, generator=g) * (spread / math.sqrt(d))).bfloat16()
    x = torch.randn(r, d, generator=g) * (1 + torch.rand(r, 1, generator=g) * 3)
    b = torch.randn(V, generator=g) * 0.5 if bias else None
    return x, w, b, softcap


#: Tests of the certified path itself keep every row on it (no fallback for wide windows: the
#: tiny vocabularies here would otherwise send whole chunks to the float32 path).
ON_PATH = dict(max_window=1.0, max_union=1.0, row_share=None)


def certified(x, w, b, cap, targets, k, product=f64_product, p_final=None, group=1, **kw):
    kw = {**ON_PATH, **kw}
    wmax = C.weight_norm_max(w)
    z, eps = C.split_logits(x, w, b, cap, product=product, wmax=wmax)
    return C.certified_stats(z, eps, x, w, b, cap, targets, k, p_final, group, **kw), eps


def assert_identical(out, ref, targets, z32, on_path=True):
    if on_path:  # the rows went through windows and recounts, not the full float32 fallback
        assert not bool(out["fallback"].all())
    assert torch.equal(out["ranks"], ref["ranks"])
    assert torch.equal(out["target_logits"], z32.gather(1, targets))
    assert torch.equal(out["topk_logits"], ref["topk_logits"])
    # ids: identical wherever the float32 logits do not tie (a tie makes top-k arbitrary)
    same = out["topk_ids"] == ref["topk_ids"]
    tied = torch.zeros_like(same)
    for i in range(z32.shape[0]):
        vals = ref["topk_logits"][i]
        tied[i] = (z32[i][None, :] == vals[:, None]).sum(-1) > 1
    assert bool((same | tied).all())


def sums_close(out, ref, tol=1e-4):
    assert (out["lse"].double() - ref["lse"]).abs().max() <= tol
    assert (out["neg_entropy"].double() - ref["neg_entropy"]).abs().max() <= tol
    if ref["cross"] is not None:
        assert (out["cross"].double() - ref["cross"]).abs().max() <= tol


SHAPES = [(101, 32, 9), (1000, 64, 16), (4099, 96, 24), (2048, 256, 12)]


# -- the bound ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("V,d,r", SHAPES)
@pytest.mark.parametrize("bias,cap", [(False, None), (True, None), (True, 0.7), (False, 3.0)])
def test_eps_bounds_the_emulated_split_product(V, d, r, bias, cap):
    """The derivation: the real split (hi/lo bf16, exact products) accumulated in float64 and in
    truncating float32 stays within eps of the float32 path, bias and soft-cap included."""
    x, w, b, cap = random_problem(V, d, r, seed=V + d, bias=bias, softcap=cap, spread=4.0)
    z32 = float32_path(x, w, b, cap)
    wmax = C.weight_norm_max(w)
    for product in (f64_product, truncating_product) if d <= 96 else (f64_product,):
        z, eps = C.split_logits(x, w, b, cap, product=product, wmax=wmax)
        assert bool(C.bound_holds(z, eps, z32).all())
        err = (z.double() - z32.double()).abs().amax(-1)
        assert bool((err < eps.double()).all()) and float((err / eps.double()).max()) < 0.5


def test_eps_formula_pieces():
    """eps grows with d, ||x||, max ||W_v||; the float32 path's own share is gamma(d) ||x|| M."""
    x, w, _, _ = random_problem(512, 64, 4, seed=1)
    hi, lo, norms = C.split_rows(x, torch.bfloat16)
    assert torch.equal(hi.double() + lo.double() + (x.double() - hi.double() - lo.double()), x.double())
    assert bool((norms[:, 3] <= 2.0**-16 * norms[:, 0] * (1 + 1e-9)).all())  # bf16 split residual
    M = C.weight_norm_max(w)
    assert M == pytest.approx(float(w.float().norm(dim=-1).max()), rel=1e-6)
    eps = C.error_bound(norms, 64, M).double()
    lower = C.gamma(64) * norms[:, 0] * M
    assert bool((eps >= lower).all()) and bool((eps <= 10 * lower).all())
    assert bool((C.error_bound(norms, 64, M, softcap=1.0).double() > eps).all())


def test_rows_already_in_bf16_take_one_product():
    """A bf16 model's prepared rows are bf16 values: lo = 0, one product, the bound still holds."""
    x, w, b, _ = random_problem(700, 64, 6, seed=4, bias=True)
    x = x.bfloat16().float()
    calls = []

    def product(a, weight):
        calls.append(a.shape)
        return f64_product(a, weight)

    z, eps = C.split_logits(x, w, b, product=product)
    assert len(calls) == 1
    assert bool(C.bound_holds(z, eps, float32_path(x, w, b)).all())
    x[0, 0] += 2.0**-12 * x[0, 0]  # one row off the bf16 grid: both products again
    C.split_logits(x, w, b, product=product)
    assert len(calls) == 3


def test_bound_holds_flags_a_violation():
    x, w, b, cap = random_problem(1000, 64, 8, seed=3)
    z32 = float32_path(x, w, b, cap)
    z, eps = C.split_logits(x, w, b, cap, product=f64_product)
    assert bool(C.bound_holds(z, eps, z32).all())
    z[3, 17] = z32[3, 17] + 3 * eps[3]
    holds = C.bound_holds(z, eps, z32)
    assert not bool(holds[3]) and bool(holds[torch.arange(8) != 3].all())


def test_fp16_weights_and_overflow():
    """fp16 unembeddings split the same way; a row that overflows fp16 gets eps = inf (exact path)."""
    x, w, b, _ = random_problem(700, 48, 6, seed=5, bias=True)
    w16 = w.half()
    x[2, 5] = 1e6
    z32 = float32_path(x, w16, b)
    z, eps = C.split_logits(x, w16, b, product=f64_product)
    assert math.isinf(float(eps[2])) and bool(torch.isfinite(eps[torch.arange(6) != 2]).all())
    targets = torch.randint(0, 700, (6, 2))
    out = C.certified_stats(z, eps, x, w16, b, None, targets, 5, **ON_PATH)
    assert bool(out["fallback"][2])
    assert_identical(out, reference_stats(z32, targets, 5), targets, z32)


# -- exactness under errors up to the bound ---------------------------------------------------------
@pytest.mark.parametrize("V,d,r", SHAPES)
@pytest.mark.parametrize("worst", [False, True])
@pytest.mark.parametrize("bias,cap", [(False, None), (True, 0.7)])
def test_identical_to_float32_path_under_injected_errors(V, d, r, worst, bias, cap):
    x, w, b, cap = random_problem(V, d, r, seed=7 * V + d, bias=bias, softcap=cap, spread=6.0)
    g = torch.Generator().manual_seed(1)
    targets = torch.randint(0, V, (r, 3), generator=g)
    k = 10
    group = 3 if r % 3 == 0 else 2
    pf = torch.softmax(float32_path(x[::group], w, b, cap), -1)  # some final distribution per position
    z32 = float32_path(x, w, b, cap)
    wmax = C.weight_norm_max(w)
    out, eps = certified(x, w, b, cap, targets, k, product=noisy_product(wmax, worst=worst), p_final=pf, group=group, sum_tol=None, **ON_PATH)
    ref = reference_stats(z32, targets, k, pf, group=group)
    assert_identical(out, ref, targets, z32)
    # the sums: within their stated bounds (plus float64-sum rounding) of the float32 path's
    for key, err in (("lse", "lse_err"), ("neg_entropy", "entropy_err"), ("cross", "cross_err")):
        assert bool(((out[key].double() - ref[key]).abs() <= out[err].double() + 1e-5).all()), key


@pytest.mark.parametrize("V,d,r", SHAPES[:3])
@pytest.mark.parametrize("cap", [None, 0.7])
def test_worst_case_squeeze_towards_the_target(V, d, r, cap):
    """Every column moved by the full eps towards the target: ranks and top-k still exact."""
    x, w, b, cap = random_problem(V, d, r, seed=11 + V, bias=True, softcap=cap, spread=6.0)
    g = torch.Generator().manual_seed(2)
    targets = torch.randint(0, V, (r, 2), generator=g)
    z32 = float32_path(x, w, b, cap)
    _, eps = C.split_logits(x, w, b, cap, product=f64_product)
    z = squeeze(z32, eps, targets)
    assert bool(C.bound_holds(z, eps, z32).all())
    out = C.certified_stats(z, eps, x, w, b, cap, targets, 10, sum_tol=None, **ON_PATH)
    assert_identical(out, reference_stats(z32, targets, 10), targets, z32)


def test_near_ties_at_the_window_edge():
    """Columns whose float32 logit ties the target's or sits one ulp above/below it, with z~
    placed exactly at z~_t +- 2 eps and one float32 step inside/outside: ranks stay exact."""
    V, d, r = 640, 64, 8
    x, w, b, _ = random_problem(V, d, r, seed=21, bias=False, spread=6.0)
    t = 5
    w = w.clone()
    for v in range(100, 110):
        w[v] = w[t]  # exact ties with the target in every row
    bump = w[t].clone()
    bump[0] = torch.nextafter(bump[0].float(), torch.tensor(math.inf)).bfloat16()  # not a bf16 step
    for v in range(110, 115):
        row = w[t].float().clone()
        row[v - 110] = row[v - 110] * (1 + 2.0**-7)  # one bf16 ulp up in one coordinate
        w[v] = row.bfloat16()
    targets = torch.full((r, 1), t)
    z32 = float32_path(x, w, b)
    _, eps = C.split_logits(x, w, b, product=f64_product)
    zt = z32[:, t].double()
    e = eps.double()
    z = z32.clone()
    # target at its lowest, tied columns at their highest: gap exactly 2 eps (up to rounding inward)
    lo_t = (zt - e).float()
    lo_t = torch.where((lo_t.double() - z32[:, t].double()).abs() > e, torch.nextafter(lo_t, z32[:, t]), lo_t)
    z[:, t] = lo_t
    for v in range(100, 115):
        hi_v = (z32[:, v].double() + e).float()
        hi_v = torch.where((hi_v.double() - z32[:, v].double()).abs() > e, torch.nextafter(hi_v, z32[:, v]), hi_v)
        z[:, v] = hi_v
    # the threshold itself, and the float32 numbers either side of it, for columns that truly
    # lie above the target by more than the window (placed exactly where allowed)
    thr = C.round_up(z[:, t].double() + 2 * e)
    above = (z32 > z32[:, t : t + 1]) & (z32.double() - e[:, None] > thr.double()[:, None])
    assert bool(C.bound_holds(z, eps, z32).all())
    out = C.certified_stats(z.clone(), eps, x, w, b, None, targets, 10, sum_tol=None, **ON_PATH)
    ref = reference_stats(z32, targets, 10)
    assert_identical(out, ref, targets, z32)
    # columns sitting exactly on the edge thr (allowed when z32 - eps <= thr <= z32 + eps)
    z2 = z.clone()
    for i in range(r):
        cols = ((z32[i].double() - e[i] <= thr[i].double()) & (thr[i].double() <= z32[i].double() + e[i])).nonzero()[:, 0]
        z2[i, cols] = thr[i]
        nxt = torch.nextafter(thr[i], torch.tensor(math.inf))
        cols = ((z32[i].double() - e[i] <= nxt.double()) & (nxt.double() <= z32[i].double() + e[i]) & above[i]).nonzero()[:, 0]
        z2[i, cols[:3]] = nxt
    assert bool(C.bound_holds(z2, eps, z32).all())
    out = C.certified_stats(z2, eps, x, w, b, None, targets, 10, sum_tol=None, **ON_PATH)
    assert_identical(out, ref, targets, z32)
    assert int(out["window"].min()) >= 15  # the ties were recounted, not guessed


def test_a_violated_bound_changes_ranks():
    """3 eps instead of eps: the squeezed columns leave the window on the wrong side, ranks
    differ from the float32 path, and bound_holds says why."""
    V, d, r = 4099, 96, 24
    x, w, b, cap = random_problem(V, d, r, seed=33, spread=6.0)
    targets = torch.randint(0, V, (r, 1), generator=torch.Generator().manual_seed(4))
    z32 = float32_path(x, w, b, cap)
    _, eps = C.split_logits(x, w, b, cap, product=f64_product)
    z = squeeze(z32, eps, targets, factor=3.0)
    assert not bool(C.bound_holds(z, eps, z32).any())
    out = C.certified_stats(z, eps, x, w, b, cap, targets, 10, sum_tol=None, **ON_PATH)
    ref = reference_stats(z32, targets, 10)
    assert not torch.equal(out["ranks"], ref["ranks"])
    assert bool((out["ranks"] <= ref["ranks"]).all())  # columns above were taken for below


def test_sum_tolerance_recomputes_rows(one_thread):
    """With sum_tol, rows whose stated sum error exceeds it are recomputed: sums within 1e-4.
    (One BLAS thread: the recomputed rows are a subset of the chunk's, and with two threads this
    BLAS splits a subset's product differently from the whole chunk's, one ulp apart — the
    bit-identity caveat in the module's docstring.)"""
    x, w, b, cap = random_problem(2048, 64, 16, seed=8, spread=1.0)  # flat rows: big bounds
    x[:10] *= 40  # and peaked rows (a majority: when most rows fall back, the whole chunk does)
    targets = torch.randint(0, 2048, (16, 2), generator=torch.Generator().manual_seed(0))
    pf = torch.softmax(float32_path(x, w, b, cap), -1)
    z32 = float32_path(x, w, b, cap)
    wmax = C.weight_norm_max(w)
    out, eps = certified(x, w, b, cap, targets, 10, product=noisy_product(wmax), p_final=pf, sum_tol=1e-4, mass_nats=0.0)
    ref = reference_stats(z32, targets, 10, pf)
    assert_identical(out, ref, targets, z32)
    sums_close(out, ref)
    assert bool((torch.stack([out["lse_err"], out["entropy_err"], out["cross_err"]]) <= 1e-4).all())
    assert bool(out["fallback"][10:].all()) and not bool(out["fallback"][:10].any())


def test_recount_matches_the_full_product_bitwise():
    """The padded gathered float32 product reproduces the full product's bits on this BLAS (the
    one assumption behind 'identical'); measured for several row counts and column sets."""
    V, d = 5000, 576
    x, w, _, _ = random_problem(V, d, 64, seed=9)
    g = torch.Generator().manual_seed(3)
    for rows in (64, 17, 4):
        for n in (1, 5, 63, 300):
            ids = C.pad_ids(torch.randperm(V, generator=g)[:n].sort().values, V)
            zu = C.exact_logits(x[:rows], w, ids)
            assert torch.equal(zu, float32_path(x[:rows], w)[:, ids])


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- through the engine's own reducer, every registry architecture ------------------------------------
def _bf16_twin(arch):
    from zoo import char_tokenizer, tiny

    from lens_widget import HookedModel

    hm = tiny(arch, vocab=131)  # 131: not a multiple of 64
    m = copy.deepcopy(hm.model).to(torch.bfloat16)
    return HookedModel.from_model(m.eval(), char_tokenizer(), name=f"tiny-{arch}-bf16")


def _arches():
    from zoo import CONFIGS

    return sorted(CONFIGS)


@pytest.mark.parametrize("arch", _arches())
def test_registry_architectures_match_the_chunk_reducer(arch):
    """The bf16 twin of every tiny architecture: certified stats equal ChunkReducer's (eager)."""
    from lens_widget.decoders import Decoder

    hm = _bf16_twin(arch)
    dec = Decoder(hm)
    ids = torch.tensor([[3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26]])
    with torch.inference_mode():
        hs = hm.model(input_ids=ids, output_hidden_states=True).hidden_states
        with dec.loaded():
            x = torch.stack([dec.prepare(h[0]) for h in hs[:-1]], 1)  # [n, g, d] position-major
            n, g, _ = x.shape
            x = x.reshape(n * g, -1)
            final = ChunkReducer(dec, n, 5, fused=False).final(hs[-2][0], None)
            red = ChunkReducer(dec, n * g, 5, fused=False)
            next_ids = torch.cat([ids[0, 1:], torch.tensor([0])]).repeat_interleave(g)
            tracked = torch.tensor([7, 100])
            ref = red.reduce(x, next_ids, tracked, final, group=g)
            w, bias, cap = dec.raw_weight, dec.head_bias, dec.softcap
            wmax = C.weight_norm_max(w)
            z, eps = C.split_logits(x, w, bias, cap, product=noisy_product(wmax, worst=True), wmax=wmax)
            z32 = dec.unembed(x)
            assert bool(C.bound_holds(z, eps, z32).all())
            targets = torch.cat([next_ids[:, None], tracked.expand(n * g, 2)], 1)
            z_keep = z.clone()
            # windows and candidates only (no mass columns): most columns stay approximate
            out = C.certified_stats(z, eps, x, w, bias, cap, targets, 5, final[0], g, sum_tol=None, mass_nats=0.0, **ON_PATH)
            # the default: sums recomputed where their bound passes 1e-4
            out_tol = C.certified_stats(z_keep, eps, x, w, bias, cap, targets, 5, final[0], g)
    assert int(out["union"]) < w.shape[0] and not bool(out["fallback"].any())
    neg_h_final = final[1].repeat_interleave(g)
    for o in (out, out_tol):
        assert torch.equal(o["ranks"][:, 0], ref["next_rank"])
        assert torch.equal(o["ranks"][:, 1:], ref["tracked_rank"])
        assert torch.equal(o["topk_logits"], ref["topk_logits"])
        assert torch.equal(o["target_logits"][:, 0], ref["next_logit"])
        assert torch.equal(o["topk_ids"], ref["topk_ids"])
    # sums: within their stated bounds (plus summation-order rounding) / within 1e-4
    assert bool(((neg_h_final - out["cross"] - ref["kl"]).abs() <= out["cross_err"] + 1e-5).all())
    assert bool(((-out["neg_entropy"] - ref["entropy"]).abs() <= out["entropy_err"] + 1e-5).all())
    assert (neg_h_final - out_tol["cross"] - ref["kl"]).abs().max() <= 1e-4
    assert (-out_tol["neg_entropy"] - ref["entropy"]).abs().max() <= 1e-4



# -- real residuals -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_rows_smollm(smollm):
    """Rows of the embedded SmolLM2 (its head cast to bf16): identical ranks/top-k under
    worst-case injected errors, and how many columns the window needs."""
    from lens_widget.decoders import Decoder

    dec = Decoder(smollm)
    ids = smollm.tokenizer("The capital of France is Paris, and the capital of Italy is", return_tensors="pt").input_ids
    with torch.inference_mode():
        hs = smollm.model(input_ids=ids, output_hidden_states=True).hidden_states
        with dec.loaded():
            x = torch.cat([dec.prepare(h[0]) for h in hs[:-1:3]])
        w = smollm.model.get_output_embeddings().weight.detach().bfloat16()
        V = w.shape[0]
        targets = torch.randint(0, V, (x.shape[0], 2), generator=torch.Generator().manual_seed(0))
        z32 = float32_path(x, w)
        wmax = C.weight_norm_max(w)
        out, eps = certified(x, w, None, None, targets, 10, product=noisy_product(wmax, worst=True), sum_tol=None, **ON_PATH)
    assert_identical(out, reference_stats(z32, targets, 10), targets, z32)
    assert float(out["window"].float().median()) < V / 16
