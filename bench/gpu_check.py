"""The lens on a GPU at research scale: a Llama-3-8B-shaped bf16 model, float32 vs certified.

    PYTHONPATH=. python bench/gpu_check.py [OUT.json] [--lengths 1024,4096] [--budget-s 290]
    PYTHONPATH=. python bench/gpu_check.py --quick          # CPU smoke run, tiny config

Random bf16 weights from a config (32 layers, d 4096, 32 heads, 8 KV heads, intermediate 14336,
vocabulary 128,256; no download), 33 sites (embeddings + 32 block outputs), k=10. Per length:

| row | what runs |
|---|---|
| `forward` | `model(ids, use_cache=False, logits_to_keep=1)`, bf16 |
| `floor_float32` | all 33 x T rows against W, float32, W upcast in blocks (what `Decoder.unembed` does) |
| `floor_tf32` | the same with TF32 (a temporary float32 copy of W) |
| `floor_bf16` | bf16 tensor cores, float32 out (`torch.mm(..., out_dtype=torch.float32)`) |
| `floor_split` | `certified.split_logits`: hi/lo bf16 split, two tensor-core products + eps |
| `naive` | per layer: final norm, bf16 `lm_head`, softmax, top-k, rank of the next token |
| `lens_float32` | `LogitLens(model, precision="float32").run(...)` |
| `lens_certified` | `LogitLens(model, precision="certified").run(...)`, with what its chunks did (rows recomputed in float32, windows) |
| `certified_grid` | split product + `certified.certified_stats` over every row, outside the engine |

plus agreement of each with a float64 reference on the first 256 positions (top-1 and next-token
rank), identity of certified vs float32 (ranks, top-k ids), the bound checked on the device
(``|z~ - z32| <= eps`` and how much of eps the error uses), whether a gathered float32 recount
reproduces the full product's bits on this GPU, peak memory (``max_memory_allocated`` growth),
and generation ms/token (lens vs transformers' ``generate``, 64 tokens after 128).

Imports only torch, transformers, numpy and lens_widget's engine. One JSON (default
``bench/results/gpu_check.json``) and a table. ``--quick`` runs everything that does not need
CUDA on a tiny config on the CPU (the CUDA-only products are skipped; the certified grid uses a
float32 stand-in product there, so its timings mean nothing).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import transformers as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lens_widget import HookedModel, LogitLens  # noqa: E402
from lens_widget import certified as C  # noqa: E402
from lens_widget.decoders import Decoder  # noqa: E402

LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False)
TINY = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)
K = 10
REF_POSITIONS = 256


class Clock:
    def __init__(self, budget_s: float):
        self.t0, self.budget = time.perf_counter(), budget_s

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev, reps: int = 1):
    """(best seconds, last result)."""
    best, out = math.inf, None
    for _ in range(reps):
        sync(dev)
        t0 = time.perf_counter()
        out = fn()
        sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best, out


def peak_of(fn, dev):
    """(seconds, peak memory growth MiB, result) of one call."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    s, out = timed(fn, dev)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if dev.type == "cuda" else float("nan")
    return s, peak, out


def build(quick: bool, dev: torch.device):
    cfg = T.LlamaConfig(**(TINY if quick else LLAMA3_8B))
    torch.manual_seed(0)
    with torch.device(dev):
        try:
            model = T.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
        except TypeError:
            model = T.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from zoo import char_tokenizer  # a tokenizer object only; ids are fed directly

    return model, HookedModel.from_model(model, char_tokenizer(), name="llama3-8b-shaped-random")


def make_lens(hm, precision: str):
    """LogitLens with ``precision=`` when the engine has it; (lens, note)."""
    try:
        return LogitLens(hm, memory_budget=LENS_BUDGET, precision=precision), None
    except TypeError as exc:
        if precision == "float32":
            return LogitLens(hm, memory_budget=LENS_BUDGET), f"no precision= in this engine ({exc}); the default path is float32"
        return None, f"no precision= in this engine ({exc})"


# -- unembedding floors ---------------------------------------------------------------------------
def float32_blocks(x, w, out):
    """Decoder.unembed's arithmetic: W upcast in blocks of 32 MiB, float32 mm."""
    rows = max(1, C.UPCAST_BYTES // (4 * w.shape[1]))  # 32 MiB, Decoder's block
    block = torch.empty(min(rows, w.shape[0]), w.shape[1], device=w.device)
    for v0 in range(0, w.shape[0], block.shape[0]):
        n = min(block.shape[0], w.shape[0] - v0)
        block[:n].copy_(w[v0 : v0 + n])
        torch.mm(x, block[:n].T, out=out[:, v0 : v0 + n])
    return out


def over_chunks(x, chunk, fn):
    for i in range(0, x.shape[0], chunk):
        fn(x[i : i + chunk])


def floors(x, w, dev, chunk, wmax, product, clock):
    out = {}
    buf = torch.empty(chunk, w.shape[0], device=dev)
    out["floor_float32_s"] = timed(lambda: over_chunks(x, chunk, lambda c: float32_blocks(c, w, buf[: c.shape[0]])), dev, reps=2)[0]
    if dev.type == "cuda":
        w32 = w.float()
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            out["floor_tf32_s"] = timed(lambda: over_chunks(x, chunk, lambda c: torch.mm(c, w32.T, out=buf[: c.shape[0]])), dev, reps=2)[0]
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev
        del w32
        out["floor_bf16_s"] = timed(lambda: over_chunks(x, chunk, lambda c: torch.mm(c.to(w.dtype), w.T, out_dtype=torch.float32)), dev, reps=2)[0]
    if product is not None and clock.left() > 30:
        out["floor_split_s"] = timed(lambda: over_chunks(x, chunk, lambda c: C.split_logits(c, w, out=buf[: c.shape[0]], product=product, wmax=wmax)), dev, reps=2)[0]
        hi = x[: min(chunk, x.shape[0])]
        out["rows_exactly_bf16"] = bool(torch.equal(hi.to(w.dtype).float(), hi))
    del buf
    return out


# -- the naive loop ---------------------------------------------------------------------------------
def naive(model, ids, dev):
    """What a researcher writes: every hidden state through norm + lm_head (bf16), softmax, top-k,
    rank of the next token."""
    inner = model.model
    captured = []
    hooks = [inner.embed_tokens.register_forward_hook(lambda m, i, o: captured.append(o))]
    hooks += [layer.register_forward_hook(lambda m, i, o: captured.append(o[0] if isinstance(o, tuple) else o)) for layer in inner.layers]
    try:
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
            nxt = ids[0, 1:]
            ranks, tops, ents = [], [], []
            for h in captured:
                logits = model.lm_head(inner.norm(h[0])).float()
                p = torch.softmax(logits, -1)
                ents.append(-(p * torch.log_softmax(logits, -1)).sum(-1))
                tops.append(torch.topk(logits, K, -1).indices)
                t = logits[:-1].gather(1, nxt[:, None])
                ranks.append((logits[:-1] > t).sum(-1) + 1)
            sync(dev)
            return torch.stack(ranks), torch.stack(tops)
    finally:
        for hk in hooks:
            hk.remove()


# -- the certified grid outside the engine ------------------------------------------------------------
def certified_grid(dec, acts, sites, ids, product, wmax, chunk_pos, sum_tol, stats):
    """Every (site, position) row: split product + certified_stats, chunked by positions
    (position-major rows, as the reducer orders them); the final layer's distribution in float32."""
    w, bias, cap = dec.raw_weight, dec.head_bias, dec.softcap
    P = acts[sites[0]].shape[0]
    g = len(sites)
    nxt = torch.cat([ids[0, 1:], ids[0, :1]]).to(w.device)
    ranks = torch.empty(g, P, dtype=torch.int32, device=w.device)
    top = torch.empty(g, P, K, dtype=torch.long, device=w.device)
    out_z = torch.empty(chunk_pos * g, w.shape[0], device=w.device)
    fb = win = unions = 0
    errs = []
    for p0 in range(0, P, chunk_pos):
        n = min(chunk_pos, P - p0)
        with torch.inference_mode():
            x = torch.stack([dec.prepare(acts[s][p0 : p0 + n], s) for s in sites], 1).reshape(n * g, -1)
            zf = C.exact_logits(x.view(n, g, -1)[:, -1], w, None, bias, cap)
            pf = torch.softmax(zf, -1)
            del zf
            z, eps = C.split_logits(x, w, bias, cap, out=out_z[: n * g], product=product, wmax=wmax)
            targets = nxt[p0 : p0 + n].repeat_interleave(g)[:, None]
            o = C.certified_stats(z, eps, x, w, bias, cap, targets, K, pf, g, sum_tol=sum_tol)
        ranks[:, p0 : p0 + n] = o["ranks"][:, 0].view(n, g).T
        top[:, p0 : p0 + n] = o["topk_ids"].view(n, g, K).transpose(0, 1)
        fb += int(o["fallback"].sum())
        win += int(o["window"].sum())
        unions += int(o["union"])
        errs.append(torch.stack([o["lse_err"], o["entropy_err"], o["cross_err"]]).amax(-1))
    rows = g * P
    stats.update(fallback_rows=fb / rows, mean_window=win / rows, mean_union_per_chunk=unions / max(1, -(-P // chunk_pos)),
                 max_stated_sum_error=float(torch.stack(errs).amax()) if errs else 0.0)
    return ranks, top


# -- agreement with float64 -----------------------------------------------------------------------------
def reference_rows(dec, acts, sites, n):
    with torch.inference_mode():
        return torch.stack([dec.prepare(acts[s][:n], s) for s in sites], 0)  # [g, n, d]


def agreement(name, top1, rank, ref_top1, ref_rank):
    return {f"{name}_top1_vs_f64": float((top1 == ref_top1).float().mean()), f"{name}_rank_vs_f64": float((rank == ref_rank).float().mean())}


def device_checks(dec, xs, nxt, product, wmax, dev):
    """Products on the reference rows against float64; the bound on the device; recount bits."""
    w, bias, cap = dec.raw_weight, dec.head_bias, dec.softcap
    g, n, d = xs.shape
    x = xs.reshape(g * n, d)
    tgt = nxt[:n].repeat(g)[:, None]
    out = {}
    res = {}
    ref_top1, ref_rank = [], []
    methods = {"float32": lambda c: C.finish(float32_blocks(c, w, torch.empty(c.shape[0], w.shape[0], device=dev)), bias, cap)}
    if dev.type == "cuda":
        def tf32(c):
            prev = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = True
            try:
                return C.finish(torch.cat([c @ w[v0 : v0 + 16384].float().T for v0 in range(0, w.shape[0], 16384)], 1), bias, cap)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = prev

        methods["tf32"] = tf32
        methods["bf16"] = lambda c: C.finish(torch.mm(c.to(w.dtype), w.T, out_dtype=torch.float32), bias, cap)
    if product is not None:
        methods["split"] = lambda c: C.split_logits(c, w, bias, cap, product=product, wmax=wmax)[0]
    stats = {m: {"top1": [], "rank": [], "maxerr": 0.0} for m in methods}
    bound = {"rows": 0, "violations": 0, "max_err_over_eps": 0.0, "max_err_f64_over_eps": 0.0}
    with torch.inference_mode():
        for i in range(0, x.shape[0], 1024):
            c, t = x[i : i + 1024], tgt[i : i + 1024]
            z64 = torch.cat([c.double() @ w[v0 : v0 + 16384].double().T for v0 in range(0, w.shape[0], 16384)], 1)
            if bias is not None:
                z64 += bias.double()
            if cap is not None:
                z64 = cap * torch.tanh(z64 / cap)
            ref_top1.append(z64.argmax(-1))
            ref_rank.append((z64 > z64.gather(1, t)).sum(-1) + 1)
            zs = {}
            for m, fn in methods.items():
                z = fn(c)
                zs[m] = z
                stats[m]["top1"].append(z.argmax(-1))
                stats[m]["rank"].append((z > z.gather(1, t)).sum(-1) + 1)
                stats[m]["maxerr"] = max(stats[m]["maxerr"], float((z.double() - z64).abs().max()))
            if "split" in zs:
                zt, eps = C.split_logits(c, w, bias, cap, product=product, wmax=wmax)
                holds = C.bound_holds(zt, eps, zs["float32"])
                bound["rows"] += c.shape[0]
                bound["violations"] += int((~holds).sum())
                e = eps.double()
                bound["max_err_over_eps"] = max(bound["max_err_over_eps"], float(((zt.double() - zs["float32"].double()).abs().amax(-1) / e).max()))
                bound["max_err_f64_over_eps"] = max(bound["max_err_f64_over_eps"], float(((zt.double() - z64).abs().amax(-1) / e).max()))
                bound["eps_median"] = float(eps.median())
                # how wide the next-token window is, under the tensor-core model used and under an
                # IEEE round-to-nearest accumulator (tc_units=1)
                for tc in (C.TC_UNITS, 1):
                    _, e_tc = C.split_logits(c, w, bias, cap, product=product, wmax=wmax, tc_units=tc)
                    zt_t = zt.gather(1, t)
                    win = ((zt - zt_t).abs() <= 2 * e_tc[:, None]).sum(-1).float()
                    bound.setdefault(f"window_tc{tc}", []).append(win)
            del z64, zs
        for key in [k for k in bound if k.startswith("window_tc")]:
            win = torch.cat(bound[key])
            bound[key] = {"mean": float(win.mean()), "median": float(win.median()), "p90": float(win.quantile(0.9)), "max": float(win.max())}
        ref_top1, ref_rank = torch.cat(ref_top1), torch.cat(ref_rank)
        for m, s in stats.items():
            out.update(agreement(f"floor_{m}", torch.cat(s["top1"]), torch.cat(s["rank"]), ref_top1, ref_rank))
            out[f"floor_{m}_max_abs_err_vs_f64"] = s["maxerr"]
        # bits: a gathered float32 recount vs the full product, as certified_stats computes it
        c = x[: min(1024, x.shape[0])]
        full = C.finish(float32_blocks(c, w, torch.empty(c.shape[0], w.shape[0], device=dev)), bias, cap)
        bits = {}
        gen = torch.Generator(device="cpu").manual_seed(0)
        for ncols in (64, 1024, 16384):
            idx = C.pad_ids(torch.randperm(w.shape[0], generator=gen)[: min(ncols, w.shape[0])].sort().values.to(dev), w.shape[0])
            for rows in (c.shape[0], 64, 4):
                zu = C.exact_logits(c[:rows], w, idx, bias, cap)
                bits[f"cols{idx.numel()}_rows{rows}"] = float((zu == full[:rows, idx]).float().mean())
        res["recount_bitwise_equal_fraction"] = bits
    res.update(bound=bound)
    return out, res, ref_top1.view(g, n), ref_rank.view(g, n)


def hf_generate_ms(model, dev, n_prompt, n_new):
    """transformers' greedy generate, ms per new token (after a short warm-up)."""
    ids = torch.randint(3, 100, (1, n_prompt), device=dev)
    with torch.inference_mode():
        model.generate(ids[:, :8], max_new_tokens=4, do_sample=False, min_new_tokens=4)
        s, _ = timed(lambda: model.generate(ids, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False), dev)
    return 1000 * s / n_new


def generation(model, hm, dev, n_prompt, n_new, first_ms=None):
    ids = torch.randint(3, 100, (1, n_prompt), device=dev)
    res = {"transformers_ms_per_token_before_any_lens": first_ms}
    res["transformers_ms_per_token"] = hf_generate_ms(model, dev, n_prompt, n_new)
    for prec in ("float32", "certified"):
        lens, note = make_lens(hm, prec)
        if lens is None:
            res[f"lens_{prec}_note"] = note
            continue
        lens.generate(ids[0, :8].tolist(), max_new_tokens=2, progress=False, eos_token_id=None)
        s, _ = timed(lambda: lens.generate(ids[0].tolist(), max_new_tokens=n_new, progress=False, eos_token_id=None), dev)
        res[f"lens_{prec}_ms_per_token"] = 1000 * s / n_new
        res[f"lens_{prec}_over_transformers"] = res[f"lens_{prec}_ms_per_token"] / res["transformers_ms_per_token"]
    return res


def guarded(row, name, fn):
    """Run one section; an exception is recorded in the row and the rest carries on."""
    try:
        return fn()
    except Exception as exc:
        row.setdefault("section_errors", {})[name] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        return None


def one_length(model, hm, dev, n, quick, product, wmax, clock, report):
    row: dict = {"tokens": n}
    ids = torch.randint(3, hm.model.config.vocab_size, (1, n), device=dev)
    idl = ids[0].tolist()
    dec = Decoder(hm)
    with torch.inference_mode():
        model(input_ids=ids[:, :16], use_cache=False, logits_to_keep=1)
        row["forward_s"] = timed(lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1), dev, reps=2)[0]
    lens32, note = make_lens(hm, "float32")
    if note:
        row["note_float32"] = note
    lens32.run(idl[:64], k=K, progress=False)  # warm-up (and the background compile starts)
    s, peak, res32 = peak_of(lambda: lens32.run(idl, k=K, progress=False), dev)
    row.update(lens_float32_s=s, lens_float32_peak_mb=peak)
    res32b, acts = lens32.run(idl, k=K, progress=False, return_activations=True)
    acts = acts[0]
    sites = res32.sites
    row["lens_float32_deterministic"] = bool(np.array_equal(res32.next_rank, res32b.next_rank) and np.array_equal(res32.topk_ids, res32b.topk_ids))
    del res32b
    with dec.loaded():
        w = dec.raw_weight
        if wmax is None:
            wmax = C.weight_norm_max(w)
        row["weight_norm_max"] = wmax

        def do_floors():
            with torch.inference_mode():
                x_all = torch.cat([dec.prepare(acts[s], s) for s in sites])  # [g * n, d]
            try:
                row.update(floors(x_all, w, dev, 8192 if dev.type == "cuda" else 256, wmax, product, clock))
            finally:
                del x_all
                gc.collect()

        if clock.left() > 60:
            guarded(row, "floors", do_floors)

        def do_naive():
            s, peak, _ = peak_of(lambda: naive(model, ids, dev), dev)
            row.update(naive_s=s, naive_peak_mb=peak)

        if clock.left() > 40:
            guarded(row, "naive", do_naive)
        lens_certified, note = make_lens(hm, "certified")
        res_certified = None
        if lens_certified is not None and clock.left() > 40:
            def do_certified():
                lens_certified.run(idl[:64], k=K, progress=False)
                s, peak, res = peak_of(lambda: lens_certified.run(idl, k=K, progress=False), dev)
                row.update(lens_certified_s=s, lens_certified_peak_mb=peak)
                row["lens_certified_identical_ranks"] = float((res.next_rank == res32.next_rank).mean())
                row["lens_certified_identical_topk_ids"] = float((res.topk_ids == res32.topk_ids).mean())
                row["lens_certified_tally"] = lens_certified.last_certified
                return res

            res_certified = guarded(row, "lens_certified", do_certified)
        elif note:
            row["note_certified"] = note
        grid: dict = {}
        row["certified_grid"] = grid

        def do_grid(tol):
            st: dict = {}
            cp = 128 if dev.type == "cuda" else 8
            s, peak, (cr, ct) = peak_of(lambda: certified_grid(dec, acts, sites, ids, product, wmax, cp, tol, st), dev)
            key = "sums_bounded_only" if tol is None else "sums_recomputed_to_1e-4"
            # the last position has no next token (the engine reports rank 0 there)
            grid[key] = dict(st, seconds=s, plus_forward_s=s + row["forward_s"], peak_mb=peak,
                             identical_ranks_vs_float32=float((cr[:, :-1].cpu().numpy() == res32.next_rank[0][:, :-1]).mean()),
                             identical_topk_ids_vs_float32=float((ct.cpu().numpy() == res32.topk_ids[0]).mean()))

        for tol in (None, 1e-4):
            if product is not None and clock.left() > 60:
                guarded(row, f"certified_grid_{tol}", lambda: do_grid(tol))

        def do_checks():
            m = min(REF_POSITIONS, n - 1)
            xs = reference_rows(dec, acts, sites, m)
            agree, checks, ref_top1, ref_rank = device_checks(dec, xs, ids[0, 1:], product, wmax, dev)
            row.update(agree)
            row.update(checks)
            r1, rr = res32.topk_ids[0, :, :m, 0], res32.next_rank[0, :, :m]
            row.update(agreement("lens_float32", torch.as_tensor(r1).to(dev), torch.as_tensor(rr).to(dev), ref_top1, ref_rank))
            if res_certified is not None:
                row.update(agreement("lens_certified", torch.as_tensor(res_certified.topk_ids[0, :, :m, 0]).to(dev), torch.as_tensor(res_certified.next_rank[0, :, :m]).to(dev), ref_top1, ref_rank))

        if clock.left() > 30:
            guarded(row, "agreement", do_checks)
    del acts
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row, wmax


def table(report):
    keys = ["forward_s", "floor_float32_s", "floor_tf32_s", "floor_bf16_s", "floor_split_s", "naive_s", "lens_float32_s", "lens_certified_s",
            "naive_peak_mb", "lens_float32_peak_mb", "lens_certified_peak_mb"]
    lines = ["| | " + " | ".join(str(r["tokens"]) for r in report["lengths"]) + " |", "|---|" + "---:|" * len(report["lengths"])]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{r[k]:.3f}" if isinstance(r.get(k), float) else "-" for r in report["lengths"]) + " |")
    for r in report["lengths"]:
        for name, gr in r.get("certified_grid", {}).items():
            lines.append(f"| certified grid ({name}) @{r['tokens']} | {gr['seconds']:.3f} s (+forward {gr['plus_forward_s']:.3f}), peak {gr['peak_mb']:.0f} MB, "
                         f"fallback {gr['fallback_rows']:.1%}, window {gr['mean_window']:.0f}, ranks identical {gr['identical_ranks_vs_float32']:.4f}, "
                         f"top-k ids identical {gr['identical_topk_ids_vs_float32']:.4f} |")
        agree = {k: v for k, v in r.items() if k.endswith("_vs_f64")}
        if agree:
            lines.append(f"| agreement @{r['tokens']} | " + ", ".join(f"{k}={v:.4g}" for k, v in agree.items()) + " |")
        if "bound" in r:
            lines.append(f"| bound @{r['tokens']} | {r['bound']} |")
    return "\n".join(lines)


LENS_BUDGET = 512 * 2**20


def main() -> None:
    global LENS_BUDGET
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="bench/results/gpu_check.json")
    ap.add_argument("--quick", action="store_true", help="tiny config on the CPU (smoke run)")
    ap.add_argument("--lengths", default=None)
    ap.add_argument("--budget-s", type=float, default=290.0, help="skip later sections past this wall time")
    ap.add_argument("--lens-budget-mb", type=int, default=None, help="LogitLens memory_budget (default 16 GB on GPU)")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if dev.type == "cpu" and not args.quick:
        print("no CUDA device: running the --quick CPU smoke configuration")
        args.quick = True
    lengths = [int(v) for v in (args.lengths or ("32,64" if args.quick else "1024,4096")).split(",")]
    LENS_BUDGET = (args.lens_budget_mb or (16384 if dev.type == "cuda" else 64)) * 2**20
    clock = Clock(args.budget_s)
    report: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__,
                    "transformers": T.__version__, "quick": args.quick, "k": K, "lens_memory_budget_mb": LENS_BUDGET // 2**20,
                    "tc_units": C.TC_UNITS, "lengths": [], "errors": []}
    t0 = time.perf_counter()
    model, hm = build(args.quick, dev)
    sync(dev)
    report["build_s"] = time.perf_counter() - t0
    report["config"] = TINY if args.quick else LLAMA3_8B
    if dev.type == "cuda":
        product = C.cuda_product
    else:  # a stand-in so the CPU smoke run exercises the certified code: exact bf16 products, float32 sums
        def product(a, w, out=None):
            return torch.mm(a.float(), w.float().T, out=out) if out is not None else a.float() @ w.float().T
    wmax = None
    first_ms = None
    try:  # before any lens run: no background compile thread competes for the CPU
        first_ms = hf_generate_ms(model, dev, 16 if args.quick else 128, 8 if args.quick else 64)
    except Exception as exc:
        report["errors"].append(f"generation (first): {type(exc).__name__}: {exc}")
    for n in lengths:
        if clock.left() < 45:
            report["errors"].append(f"skipped {n} tokens: out of time")
            continue
        try:
            row, wmax = one_length(model, hm, dev, n, args.quick, product, wmax, clock, report)
        except Exception as exc:  # report what ran; keep the rest
            report["errors"].append(f"{n} tokens: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            row = {"tokens": n}
        report["lengths"].append(row)
        print(json.dumps(row, indent=1, default=str), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))  # partial results survive a kill
    if clock.left() > 25:
        try:
            report["generation"] = generation(model, hm, dev, 16 if args.quick else 128, 8 if args.quick else 64, first_ms)
        except Exception as exc:
            report["errors"].append(f"generation: {type(exc).__name__}: {exc}")
    report["wall_s"] = time.perf_counter() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(table(report))
    print("generation", report.get("generation"))
    if report["errors"]:
        print("errors:", *report["errors"], sep="\n")
    print(f"wrote {args.out} ({report['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
