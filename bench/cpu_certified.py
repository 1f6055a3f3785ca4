"""Does a certified unembedding (fast approximate product + exact recount) pay on THIS CPU?

Issue 19, item 5. Everything measured in one process, 2 torch threads, on real rows of the
embedded SmolLM2-135M (float32): three prompts x 33 positions x 31 sites (embed + 30 block
outputs) = 3069 prepared rows (final norm applied, float32); the chunk study reduces the first
``--chunks`` (default 2: 2046 rows) in chunks of 1023 rows (33 positions x 31 sites,
position-major, as the engine's chunk loop groups them). Two heads:
the model's own float32 ``lm_head`` ("float32") and the same head as ``w.bfloat16()`` ("bf16",
the half-precision case; the rows stay float32 and its float32 path upcasts the head in blocks).

1. **Kernels.** What ``torch.backends.mkldnn.matmul.fp32_precision = "bf16"`` really computes
   here (operands with full 24-bit significands; ``K`` = 1, 16, 576), whether setting and
   restoring it around one call leaves the default kernel's bits unchanged, and which
   bf16-input / float32-output entry points exist on the CPU.
2. **Product candidates** on all 3069 rows: the float32 path (``Unembed.unembed``: MKL sgemm),
   the oneDNN float32 GEMM (the flag above; bf16 heads upcast in blocks), the bf16 ``mm`` with
   bf16 output (one product of ``hi``, or the split ``hi + lo``), ``torch._int_mm`` (speed only):
   time on one 1023-row chunk (interleaved repeats, medians), max error against float64, and
   whether the bound holds against ``certified.exact_logits`` (the float32 path) on every row.
   Bounds: oneDNN float32: ``certified.error_bound(..., tc_units=1, split=False)`` (exact float32
   operands, IEEE float32 accumulation, any order) and, for the bf16 head, ``split_logits(...,
   product=onednn, tc_units=1)``; bf16 output: the same plus ``2^-8 / (1 - 2^-8)`` times the row's
   largest ``|z~|`` per product (bf16 keeps 8 significant bits: its unit roundoff is 2^-8).
3. **Chunks.** The float32 chunk (``Unembed.unembed`` + ``ChunkReducer.reduce_logits``, eager and
   fused) against certified chunks (product + ``certified.error_bound`` + ``certified_stats``):
   with its defaults, and "open" (``sum_tol=None, mass_nats=0, max_union=1``: no fallback forced,
   the sums' bounds reported); the bf16-output product only open. Plus the oneDNN product with
   the ordinary reductions (not certified: a different float32 kernel), for its agreement with
   the float32 path. Time on chunk 0 (interleaved repeats, medians); identity of next-token ranks
   and top-10 ids on every studied chunk; fallback fraction, mean window, union of recounted columns,
   largest entropy bound and the measured entropy difference.

    python bench/cpu_certified.py --out bench/results/cpu_certified.json [--repeats 3]

144 s on the shared 2-core machine (about 4 minutes while another job shares the cores). The load
average before and after is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lens_widget import certified as C  # noqa: E402
from lens_widget.hooked import HookedModel  # noqa: E402
from lens_widget.reduce import FUSED, ChunkReducer  # noqa: E402
from lens_widget.unembed import UPCAST_BYTES, Unembed  # noqa: E402

K = 10
POSITIONS = 33
PROMPTS = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife. "
    "However little known the feelings or views of such a man may be on his first entering a neighbourhood, this truth is so well fixed.",
    "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, and nothing particular "
    "to interest me on shore, I thought I would sail about a little and see the watery part of the world.",
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in Liberty, and dedicated "
    "to the proposition that all men are created equal. Now we are engaged in a great civil war, testing whether that nation.",
]
MKL = torch.backends.mkldnn.matmul
BF16_U = 2.0**-8  # bf16: 8 significant bits, round to nearest


# -- the products ---------------------------------------------------------------------------------
def onednn_product(a: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ weight.T`` in float32 through oneDNN's GEMM (the process-wide flag set around the
    call and restored); a half-precision head is upcast in blocks of ``UPCAST_BYTES``."""
    old = MKL.fp32_precision
    MKL.fp32_precision = "bf16"
    try:
        a = a.float()
        if weight.dtype == torch.float32:
            return torch.mm(a, weight.T, out=out) if out is not None else torch.mm(a, weight.T)
        V, d = weight.shape
        z = out if out is not None else torch.empty(a.shape[0], V)
        block = torch.empty(min(V, UPCAST_BYTES // (4 * d)), d)
        for v0 in range(0, V, block.shape[0]):
            n = min(block.shape[0], V - v0)
            block[:n].copy_(weight[v0 : v0 + n])
            torch.mm(a, block[:n].T, out=z[:, v0 : v0 + n])
        return z
    finally:
        MKL.fp32_precision = old


def bf16_out(a: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ weight.T`` by torch's bf16 ``mm`` (bf16 output), upcast to float32."""
    z = torch.mm(a.to(weight.dtype), weight.T)
    return out.copy_(z) if out is not None else z.float()


def onednn_logits(x, weight, wmax, out=None):
    """oneDNN float32 logits and their per-row bound against the float32 path (no split: the
    operands are exact float32 numbers; one IEEE float32 product, any order, on each side)."""
    z = onednn_product(x, weight, out)
    A = x.double().norm(dim=-1) * (1 + 2.0**-40)
    zero = torch.zeros_like(A)
    eps = C.error_bound(torch.stack([A, A, zero, zero], -1), x.shape[-1], wmax, tc_units=1, split=False)
    return z, eps


def bf16_split_logits(x, weight, wmax, out=None, scratch=None):
    """``bf16(hi @ W) + bf16(lo @ W)`` and its bound: ``split_logits``' (IEEE float32
    accumulation) plus each product's final rounding to bf16, ``<= 2^-8 |p| <= 2^-8/(1-2^-8) |fl(p)|``."""
    hi, lo, norms = C.split_rows(x, weight.dtype)
    z = bf16_out(hi, weight, out)
    zl = bf16_out(lo, weight, scratch)
    rounding = (z.abs().amax(-1).double() + zl.abs().amax(-1).double()) * (BF16_U / (1 - BF16_U)) * (1 + 2.0**-20)
    z.add_(zl)
    eps = C.round_up(C.error_bound(norms, x.shape[-1], wmax, tc_units=1).double() + rounding)
    return z, eps


# -- helpers --------------------------------------------------------------------------------------
def load_rows(hm: HookedModel) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Prepared float32 rows ``[P * POSITIONS * S, d]`` (prompt-major, then position-major) and
    the next token of each row."""
    model = hm.model
    xs, nxt = [], []
    for text in PROMPTS:
        ids = hm.tokenizer(text, return_tensors="pt").input_ids[:, : POSITIONS + 1]
        assert ids.shape[1] == POSITIONS + 1, "prompt too short"
        hs: dict[int, torch.Tensor] = {}
        hooks = [model.model.embed_tokens.register_forward_hook(lambda m, i, o: hs.__setitem__(0, o))]
        for li, blk in enumerate(model.model.layers):
            hooks.append(blk.register_forward_hook(lambda m, i, o, li=li: hs.__setitem__(li + 1, o[0] if isinstance(o, tuple) else o)))
        try:
            with torch.no_grad():
                model(ids, use_cache=False, logits_to_keep=1)
        finally:
            for h in hooks:
                h.remove()
        S = len(hs)
        H = torch.stack([hs[i][0, :POSITIONS] for i in range(S)], 1)  # [n, S, d]
        with torch.no_grad():
            xs.append(model.model.norm(H).reshape(-1, H.shape[-1]).float())
        nxt.append(ids[0, 1 : POSITIONS + 1].repeat_interleave(S))
    return torch.cat(xs).contiguous(), torch.cat(nxt), S


def median_times(fns: dict[str, Callable[[], Any]], repeats: int, warm: bool = True) -> dict[str, dict[str, float]]:
    """Each function once to warm (unless ``warm=False``: the caller ran them), then ``repeats``
    interleaved rounds: median, min, max seconds."""
    for f in fns.values() if warm else ():
        f()
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    return {k: {"median_s": round(statistics.median(v), 4), "min_s": round(min(v), 4), "max_s": round(max(v), 4)} for k, v in ts.items()}


def kernel_facts() -> dict[str, Any]:
    """What the fp32_precision="bf16" flag computes on full-significand operands, whether a
    set/restore leaves the default kernel's bits alone, and which bf16->float32 entry points exist."""
    g = torch.Generator().manual_seed(0)
    out: dict[str, Any] = {"flag_default": MKL.fp32_precision, "relative_error": {}}
    for Kd in (1, 16, 576):
        a, b = torch.randn(64, Kd, generator=g), torch.randn(4096, Kd, generator=g)
        exact = a.double() @ b.double().T
        scale = a.double().abs() @ b.double().abs().T
        rounded = a.bfloat16().double() @ b.bfloat16().double().T
        z_flag = onednn_product(a, b)
        z_def = a @ b.T
        out["relative_error"][f"K={Kd}"] = {
            "flag_vs_exact": ((z_flag.double() - exact).abs() / scale).max().item(),
            "default_vs_exact": ((z_def.double() - exact).abs() / scale).max().item(),
            "flag_vs_bf16_rounded_inputs": ((z_flag.double() - rounded).abs() / scale).max().item(),
        }
    a, b = torch.randn(256, 576, generator=g), torch.randn(8192, 576, generator=g)
    before = a @ b.T
    onednn_product(a, b)
    out["flag_restored"] = MKL.fp32_precision == out["flag_default"]
    out["default_bits_unchanged_after_restore"] = bool(torch.equal(before, a @ b.T))
    hi, w = a.bfloat16(), b.bfloat16()
    tries = {
        "mm_out_dtype_float32": lambda: torch.mm(hi, w.T, out_dtype=torch.float32),
        "addmm_out_dtype_float32": lambda: torch.addmm(torch.zeros(256, 8192), hi, w.T, out_dtype=torch.float32),
        "mm_bf16_into_float32_out": lambda: torch.mm(hi, w.T, out=torch.empty(256, 8192)),
    }
    out["bf16_in_float32_out_entry_points"] = {}
    for name, f in tries.items():
        try:
            f()
            out["bf16_in_float32_out_entry_points"][name] = "works"
        except Exception as exc:  # the point is to record what fails
            out["bf16_in_float32_out_entry_points"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
    exact = hi.double() @ w.double().T
    zb = torch.mm(hi, w.T).double()
    out["bf16_mm_equals_rn_bf16_of_exact_fraction"] = (zb == exact.float().bfloat16().double()).float().mean().item()
    big = exact.abs() > 1  # relative error of the bf16 output where accumulation error is negligible
    out["bf16_mm_max_relative_error_where_abs_gt_1"] = ((zb - exact).abs() / exact.abs())[big].max().item()
    out["bf16_unit_roundoff"] = BF16_U
    return out


# -- the measurements -----------------------------------------------------------------------------
def product_candidates(x, nxt, W, wmax, repeats) -> dict[str, Any]:
    """Speed (one 1023-row chunk) and accuracy (all rows) of each product candidate; next-token
    ranks of the two float32 kernels against a float64 reference."""
    r = 1023
    un = Unembed(None, None, None, torch.float32, torch.device("cpu"), W.shape[0])
    un.hold(W, None)
    buf, scratch = torch.empty(r, W.shape[0]), torch.empty(r, W.shape[0])
    xc = x[:r].contiguous()
    hi = xc.to(torch.bfloat16)
    Wh = W.bfloat16()  # the float32 head's bf16 copy (speed only: its products are not the float32 head's)
    fns: dict[str, Callable[[], Any]] = {
        "float32_path_mkl": lambda: un.unembed(xc, out=buf),
        "onednn_float32": lambda: onednn_product(xc, W, buf),
        "bf16_out_one_product": lambda: bf16_out(hi, Wh, buf),
    }
    if W.dtype != torch.float32:
        fns["bf16_out_split_two_products"] = lambda: bf16_split_logits(xc, W, wmax, buf, scratch)
    xi = torch.randint(-127, 128, (r, 576), dtype=torch.int8)
    wi = torch.randint(-127, 128, (576, W.shape[0]), dtype=torch.int8)
    fns["int8_int_mm_speed_only"] = lambda: torch._int_mm(xi, wi)
    times = median_times(fns, repeats)
    acc = accuracy(x, nxt, W, wmax)
    return {"time_1023_rows": times, "ratio_to_float32_path": {k: round(v["median_s"] / times["float32_path_mkl"]["median_s"], 3) for k, v in times.items()},
            "accuracy_all_rows": acc}


def accuracy(x, nxt, W, wmax, block: int = 1023) -> dict[str, Any]:
    """Each candidate's error on all rows (blocks of ``block`` rows): against float64, against the
    float32 path, and whether its bound holds; next-token ranks of the two float32 kernels
    against the float64 ranks."""
    n = x.shape[0]
    names = ["onednn_float32"] + (["onednn_float32_split_logits", "bf16_out_split_two_products"] if W.dtype != torch.float32 else [])
    worst: dict[str, dict[str, float]] = {k: {"err64": 0.0, "err32": 0.0, "ratio": 0.0, "eps_sum": 0.0, "holds": 0} for k in ["float32_path_mkl", *names]}
    rank_ok = {"float32_path_mkl": 0, "onednn_float32": 0}
    for r0 in range(0, n, block):
        xb, t = x[r0 : r0 + block], nxt[r0 : r0 + block, None]
        z32 = C.exact_logits(xb, W)  # the float32 path
        z64 = xb.double() @ W.double().T
        rank64 = (z64 > z64.gather(1, t)).sum(-1)
        worst["float32_path_mkl"]["err64"] = max(worst["float32_path_mkl"]["err64"], (z32.double() - z64).abs().max().item())
        rank_ok["float32_path_mkl"] += int(((z32 > z32.gather(1, t)).sum(-1) == rank64).sum())
        for name in names:
            if name == "onednn_float32":
                z, eps = onednn_logits(xb, W, wmax)
                rank_ok[name] += int(((z > z.gather(1, t)).sum(-1) == rank64).sum())
            elif name == "onednn_float32_split_logits":
                z, eps = C.split_logits(xb, W, product=onednn_product, wmax=wmax, tc_units=1)
            else:
                z, eps = bf16_split_logits(xb, W, wmax)
            err = (z.double() - z32.double()).abs().amax(-1)
            w = worst[name]
            w["err64"] = max(w["err64"], (z.double() - z64).abs().max().item())
            w["err32"] = max(w["err32"], err.max().item())
            w["ratio"] = max(w["ratio"], (err / eps.double()).max().item())
            w["eps_sum"] += eps.double().sum().item()
            w["holds"] += int(C.bound_holds(z, eps, z32).sum())
            del z
        del z32, z64
    out: dict[str, Any] = {}
    for name, w in worst.items():
        out[name] = {"max_abs_err_vs_float64": w["err64"]}
        if name in rank_ok:
            out[name]["next_rank_equal_to_float64_rank"] = f"{rank_ok[name]}/{n}"
        if name != "float32_path_mkl":
            out[name].update({"bound_holds_rows": f"{w['holds']}/{n}", "max_err_over_eps": w["ratio"], "mean_eps": w["eps_sum"] / n,
                              "max_err_vs_float32_path": w["err32"]})
    return out


def chunk_study(x, nxt, S, W, wmax, repeats, chunks) -> dict[str, Any]:
    """Whole chunks: the float32 path against certified chunks (timing on chunk 0, identity on the first ``chunks``)."""
    V = W.shape[0]
    r = POSITIONS * S
    un = Unembed(None, None, None, torch.float32, torch.device("cpu"), V)
    un.hold(W, None)
    eager = ChunkReducer(un, r, K, fused=False)
    fused = ChunkReducer(un, r, K, fused=True, strict=True, share=eager)
    zbuf, scratch = eager.z, torch.empty(r, V)
    tracked = torch.zeros(0, dtype=torch.long)
    open_kw = dict(sum_tol=None, mass_nats=0.0, max_union=1.0)

    def variants(xc, nc, final):
        pf = final[0]

        def f32(red):
            return red.reduce_logits(un.unembed(xc, out=red.z), xc, nc, tracked, final, S)

        def onednn_plain():
            return fused.reduce_logits(onednn_product(xc, W, fused.z), xc, nc, tracked, final, S)

        def cert(logits_fn, **kw):
            def run():
                z, eps = logits_fn()
                return C.certified_stats(z, eps, xc, W, None, None, nc[:, None], K, pf, S, **kw), eps
            return run

        v = {
            "float32_eager": lambda: f32(eager),
            "float32_fused": lambda: f32(fused),
            "onednn_uncertified_fused": onednn_plain,
            "certified_onednn_default": cert(lambda: onednn_logits(xc, W, wmax, zbuf)),
            "certified_onednn_open": cert(lambda: onednn_logits(xc, W, wmax, zbuf), **open_kw),
        }
        if W.dtype != torch.float32:
            v["certified_bf16_out_open"] = cert(lambda: bf16_split_logits(xc, W, wmax, zbuf, scratch), **open_kw)
        return v

    def final_of(xc):
        xf = xc.view(POSITIONS, S, -1)[:, -1].contiguous()
        return eager.final_from_logits(un.unembed(xf))

    chunks = min(chunks, x.shape[0] // r)
    out: dict[str, Any] = {"rows_per_chunk": r, "chunks": chunks}
    agree: dict[str, dict[str, list]] = {}
    for c in range(chunks):
        xc, nc = x[c * r : (c + 1) * r].contiguous(), nxt[c * r : (c + 1) * r]
        final = final_of(xc)
        vs = variants(xc, nc, final)
        ref = vs["float32_eager"]()
        ref = {k: ref[k].clone() for k in ("next_rank", "topk_ids", "entropy", "kl")}
        for name, f in vs.items():
            if name == "float32_eager":
                continue
            res = f()
            a = agree.setdefault(name, {})
            if isinstance(res, tuple):  # certified: (stats, eps)
                st, eps = res
                ranks, top, ent = st["ranks"][:, 0], st["topk_ids"], -st["neg_entropy"]
                a.setdefault("fallback", []).append(st["fallback"].float().mean().item())
                a.setdefault("window", []).append(st["window"].float().mean().item())
                a.setdefault("union", []).append(int(st["union"]))
                a.setdefault("entropy_bound_max", []).append(st["entropy_err"].max().item())
                a.setdefault("mean_eps", []).append(eps.double().mean().item())
            else:
                ranks, top, ent = res["next_rank"], res["topk_ids"], res["entropy"]
                a.setdefault("kl_max_abs_diff", []).append((res["kl"] - ref["kl"]).abs().max().item())
            a.setdefault("rank_identical", []).append(int((ranks.to(ref["next_rank"].dtype) == ref["next_rank"]).sum()))
            a.setdefault("topk_identical_rows", []).append(int((top == ref["topk_ids"]).all(-1).sum()))
            a.setdefault("entropy_max_abs_diff", []).append((ent - ref["entropy"]).abs().max().item())
        if c == 0:  # every variant ran once above: the warm-up
            out["time_chunk0"] = median_times(vs, repeats, warm=False)
        print(f"  chunk {c} done", flush=True)
    n = chunks * r
    summary = {}
    for name, a in agree.items():
        s = {"rank_identical": f"{sum(a['rank_identical'])}/{n}", "topk_ids_identical_rows": f"{sum(a['topk_identical_rows'])}/{n}",
             "entropy_max_abs_diff": max(a["entropy_max_abs_diff"])}
        for key in ("fallback", "window", "mean_eps"):
            if key in a:
                s[f"{key}_mean"] = statistics.mean(a[key])
        if "union" in a:
            s["union_columns_per_chunk"] = a["union"]
            s["union_fraction_of_vocab"] = round(statistics.mean(a["union"]) / V, 3)
            s["entropy_bound_max"] = max(a["entropy_bound_max"])
        if "kl_max_abs_diff" in a:
            s["kl_max_abs_diff"] = max(a["kl_max_abs_diff"])
        summary[name] = s
    out["agreement_with_float32_eager_all_chunks"] = summary
    t = out["time_chunk0"]
    out["ratio_to_float32_fused"] = {k: round(v["median_s"] / t["float32_fused"]["median_s"], 2) for k, v in t.items()}
    return out


def profile_certified(x, nxt, S, W, wmax) -> list[dict[str, Any]]:
    """Where a certified chunk's time goes (torch profiler, top ops by self CPU time), open settings."""
    from torch.profiler import ProfilerActivity, profile

    r = POSITIONS * S
    xc, nc = x[:r].contiguous(), nxt[:r]
    un = Unembed(None, None, None, torch.float32, torch.device("cpu"), W.shape[0])
    un.hold(W, None)
    pf = torch.softmax(un.unembed(xc.view(POSITIONS, S, -1)[:, -1].contiguous()), -1)
    z = torch.empty(r, W.shape[0])

    def run():
        zz, eps = onednn_logits(xc, W, wmax, z)
        C.certified_stats(zz, eps, xc, W, None, None, nc[:, None], K, pf, S, sum_tol=None, mass_nats=0.0, max_union=1.0)

    with profile(activities=[ProfilerActivity.CPU]) as prof:  # warm already: the chunk study ran it
        run()
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
    return [{"op": e.key, "self_s": round(e.self_cpu_time_total / 1e6, 3), "calls": e.count} for e in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/cpu_certified.json")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunks", type=int, default=2, help="chunks of 1023 rows in the chunk study (of 3)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", flush=True)

    load_before = os.getloadavg()
    flags = open("/proc/cpuinfo").read()
    result: dict[str, Any] = {
        "torch": torch.__version__, "threads": args.threads, "platform": platform.platform(),
        "cpu_has_avx512_bf16": "avx512_bf16" in flags, "cpu_has_amx_bf16": "amx_bf16" in flags,
        "load_average_before": [round(v, 2) for v in load_before],
    }
    result["kernels"] = kernel_facts()
    say("kernels")
    hm = HookedModel.default()
    x, nxt, S = load_rows(hm)
    W32 = hm.model.get_output_embeddings().weight.detach()
    result["rows"] = {"total": x.shape[0], "sites": S, "positions_per_prompt": POSITIONS, "prompts": len(PROMPTS)}
    FUSED.warm(ChunkReducer.kernel_for(W32.shape[0], K), W32.shape[0], torch.device("cpu"), block=True)
    say("fused kernel compiled")
    result["heads"] = {}
    for name, W in (("float32", W32), ("bf16", W32.bfloat16())):
        wmax = C.weight_norm_max(W)
        say(f"head {name}: products")
        result["heads"][name] = {"wmax": wmax, "products": product_candidates(x, nxt, W, wmax, args.repeats)}
        say(f"head {name}: chunks")
        result["heads"][name]["chunks"] = chunk_study(x, nxt, S, W, wmax, args.repeats, args.chunks)
        print(name, json.dumps(result["heads"][name]["chunks"]["ratio_to_float32_fused"]), flush=True)
    say("profile")
    result["certified_profile_float32_head"] = profile_certified(x, nxt, S, W32, C.weight_norm_max(W32))
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} in {result['wall_s']} s")


if __name__ == "__main__":
    main()
