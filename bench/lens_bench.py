"""Engine benchmark: the logit lens on the embedded SmolLM2-135M against a naive implementation,
a plain forward pass and the unembedding-matmul compute floor, all measured in the same run.

Every (site, position) cell of one prompt of exactly N tokens (31 sites = embed + 30 block
outputs, all positions, k=10, entropy, exact next-token rank, KL to the final layer).
Variants, each in its own fresh subprocess per repeat (repeats interleaved, so a noisy
neighbour on the shared cores hits all variants alike):

* ``lens``    -- ``LogitLens(hm, compile="always").run(prompt, k=10, progress=False)`` (steady state: the
  warm-up compiles the fused reductions; the first-use cost is bench/cold_start.py), end to end (forward,
  reductions, building the LensResult). The prompt is fed as exact token ids.
* ``naive``   -- full materialisation: ``output_hidden_states=True``, per-layer final norm,
  ``[sites, T, V]`` float32 logits, rank by ``(logits > target).sum``, top-k, log-softmax,
  softmax, entropy, KL. Capped: when ``3 x sites x T x V x 4`` bytes exceeds ``--naive-cap-gb``
  the sites are processed in groups (each group still fully materialised), and a watchdog kills
  any child whose RSS passes ``--rss-kill-frac`` of RAM.
* ``forward`` -- ``model(ids, use_cache=False, logits_to_keep=1)`` (what the lens runs; the
  full-logits forward is timed too, as ``forward_full_logits_s``).
* ``floor``   -- the bare unembedding matmul of all ``sites x T`` rows (``[r, d] x [d, V]`` into a
  preallocated buffer, in chunks of the lens's row count): the compute floor.

Time: wall clock of the measured call after a warm-up call of the same variant at 16 tokens.
Memory: the peak resident set size is reset (``/proc/self/clear_refs`` = 5) after loading and
warm-up; ``growth`` = ``VmHWM`` after the call minus RSS at the reset (``tests/memory.py``; MB = MiB).

    python bench/lens_bench.py [--lengths 128,512,1024] [--repeats 3] [--quick]

Writes ``bench/out/lens_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from memory import MiB, peak_bytes, reset_peak, rss_bytes  # noqa: E402  (the one memory meter, bytes)

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "bench" / "out"
VARIANTS = ("lens", "naive", "forward", "floor")
K = 10
WARM_TOKENS = 16

# Public-domain prose (Austen, Melville, Lincoln, Dickens, Jefferson), cycled to reach N tokens.
TEXT = """It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife. However little known the feelings or views of such a man may be on his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered as the rightful property of some one or other of their daughters. "My dear Mr. Bennet," said his lady to him one day, "have you heard that Netherfield Park is let at last?" Mr. Bennet replied that he had not. "But it is," returned she; "for Mrs. Long has just been here, and she told me all about it." Mr. Bennet made no answer. "Do not you want to know who has taken it?" cried his wife impatiently. "You want to tell me, and I have no objection to hearing it." This was invitation enough.

Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, and nothing particular to interest me on shore, I thought I would sail about a little and see the watery part of the world. It is a way I have of driving off the spleen, and regulating the circulation. Whenever I find myself growing grim about the mouth; whenever it is a damp, drizzly November in my soul; whenever I find myself involuntarily pausing before coffin warehouses, and bringing up the rear of every funeral I meet; and especially whenever my hypos get such an upper hand of me, that it requires a strong moral principle to prevent me from deliberately stepping into the street, and methodically knocking people's hats off, then, I account it high time to get to sea as soon as I can. This is my substitute for pistol and ball.

Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in Liberty, and dedicated to the proposition that all men are created equal. Now we are engaged in a great civil war, testing whether that nation, or any nation so conceived and so dedicated, can long endure. We are met on a great battle-field of that war. We have come to dedicate a portion of that field, as a final resting place for those who here gave their lives that that nation might live. It is altogether fitting and proper that we should do this. But, in a larger sense, we can not dedicate, we can not consecrate, we can not hallow this ground. The brave men, living and dead, who struggled here, have consecrated it, far above our poor power to add or detract.

It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything before us, we had nothing before us, we were all going direct to Heaven, we were all going direct the other way. There were a king with a large jaw and a queen with a plain face, on the throne of England; there were a king with a large jaw and a queen with a fair face, on the throne of France. In both countries it was clearer than crystal to the lords of the State preserves of loaves and fishes, that things in general were settled for ever.

When in the Course of human events, it becomes necessary for one people to dissolve the political bands which have connected them with another, and to assume among the powers of the earth, the separate and equal station to which the Laws of Nature and of Nature's God entitle them, a decent respect to the opinions of mankind requires that they should declare the causes which impel them to the separation. We hold these truths to be self-evident, that all men are created equal, that they are endowed by their Creator with certain unalienable Rights, that among these are Life, Liberty and the pursuit of Happiness.
"""


# ------------------------------------------------------------------------------------------
# process-level measurement helpers
# ------------------------------------------------------------------------------------------
def _mem_total_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def _watchdog(limit_mb: float) -> None:
    """Kill this process before it can take the machine down."""

    def loop() -> None:
        while True:
            rss = rss_bytes() / MiB
            if rss > limit_mb:
                sys.stderr.write(f"watchdog: RSS {rss:.0f} MB > {limit_mb:.0f} MB, killing the child\n")
                sys.stderr.flush()
                os._exit(99)
            time.sleep(0.02)

    threading.Thread(target=loop, daemon=True).start()


# ------------------------------------------------------------------------------------------
# the prompt
# ------------------------------------------------------------------------------------------
def prompt_ids(hm, n: int, text: str = TEXT) -> list[int]:
    """Exactly ``n`` ids of real text (cycled if the text is shorter)."""
    base = hm.tokens.encode(text)
    ids: list[int] = []
    while len(ids) < n:
        ids.extend(base)
    return ids[:n]


# ------------------------------------------------------------------------------------------
# the variants (each returns (arrays to compare or None, extra info))
# ------------------------------------------------------------------------------------------
def run_lens(hm, ids, args):
    from lens_widget import LogitLens

    res = LogitLens(hm, compile="always").run(list(ids), k=K, progress=False)
    arrays = {
        "topk_ids": res.topk_ids[0],
        "topk_probs": res.topk_probs[0],
        "entropy": res.entropy[0],
        "next_rank": res.next_rank[0],
        "kl": res.kl[0],
    }
    return arrays, {"sites": len(res.sites), "positions": int(res.positions.shape[1])}


def _naive_group(S: int, T: int, V: int, cap_bytes: float) -> int:
    """Sites per group so that ~3 live [G, T, V] float32 tensors fit the cap."""
    return max(1, min(S, int(cap_bytes // (3 * T * V * 4))))


def run_naive(hm, ids, args):
    import torch

    from lens_widget.arch import get_path

    model = hm.model
    norm = get_path(model, hm.arch.final_norm)
    W = model.get_output_embeddings().weight
    V = W.shape[0]
    with torch.inference_mode():
        input_ids = torch.tensor([ids])
        out = model(input_ids=input_ids, use_cache=False, output_hidden_states=True, logits_to_keep=1)
        hs = out.hidden_states  # embed, block 0 .. block L-2 outputs, final-normed last block
        S, T = len(hs), len(ids)
        # hidden_states[-1] already went through the final norm (RMSNorm is not idempotent).
        rows = [norm(h[0]) for h in hs[:-1]] + [hs[-1][0]]
        logp_f = torch.log_softmax(rows[-1] @ W.T, dim=-1)  # [T, V]
        p_f = logp_f.exp()
        neg_h_f = (p_f * logp_f).sum(-1)
        nxt = input_ids[0, 1:]
        G = _naive_group(S, T, V, args.naive_cap_gb * 2**30)
        parts: dict[str, list] = {k: [] for k in ("topk_ids", "topk_probs", "entropy", "next_rank", "kl")}
        for s0 in range(0, S, G):
            x = torch.stack(rows[s0 : s0 + G])  # [G, T, d]
            logits = x @ W.T  # [G, T, V]
            target = logits[:, :-1].gather(-1, nxt.expand(logits.shape[0], -1)[..., None])
            rank = (logits[:, :-1] > target).sum(-1) + 1
            rank = torch.cat([rank, torch.zeros_like(rank[:, :1])], 1)  # last position: no next token
            top = torch.topk(logits, K, dim=-1)
            logp = torch.log_softmax(logits, dim=-1)
            del logits, target
            probs = torch.softmax(logp, dim=-1)
            entropy = -(probs * logp).sum(-1)
            topk_probs = probs.gather(-1, top.indices)
            del probs
            kl = (p_f * (logp_f - logp)).sum(-1)
            del logp
            for key, v in zip(parts, (top.indices, topk_probs, entropy, rank, kl)):
                parts[key].append(v)
        arrays = {key: torch.cat(v).numpy() for key, v in parts.items()}
    del neg_h_f
    return arrays, {"site_groups": -(-S // G), "sites_per_group": G}


def run_forward(hm, ids, args):
    import torch

    with torch.inference_mode():
        hm.model(input_ids=torch.tensor([ids]), use_cache=False, logits_to_keep=1)
    return None, {}


def _forward_full_logits(hm, ids) -> float:
    import torch

    with torch.inference_mode():
        t0 = time.perf_counter()
        hm.model(input_ids=torch.tensor([ids]), use_cache=False)
        return time.perf_counter() - t0


def run_floor(hm, ids, args):
    import torch

    from lens_widget.engine import DEFAULT_MEMORY_BUDGET
    from lens_widget.reduce import rows_for_budget

    W = hm.model.get_output_embeddings().weight
    V, d = W.shape
    S = hm.num_layers + 1
    n = S * len(ids)
    R = rows_for_budget(V, DEFAULT_MEMORY_BUDGET)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    buf = torch.empty(R, V)
    with torch.inference_mode():
        t0 = time.perf_counter()
        for i in range(0, n, R):
            r = min(R, n - i)
            torch.matmul(x[i : i + r], W.T, out=buf[:r])
        dt = time.perf_counter() - t0
    return None, {"rows": n, "chunk_rows": R, "gflops": 2 * n * d * V / dt / 1e9}


RUNNERS = {"lens": run_lens, "naive": run_naive, "forward": run_forward, "floor": run_floor}


def child(args) -> dict:
    """One variant, one length, one fresh process."""
    limit = args.rss_kill_frac * _mem_total_mb()
    _watchdog(limit)
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fp32_precision:
        torch.backends.mkldnn.matmul.fp32_precision = args.fp32_precision
    from lens_widget import HookedModel

    t0 = time.perf_counter()
    hm = HookedModel.default()
    load_s = time.perf_counter() - t0
    rss_loaded = rss_bytes() / MiB
    ids = prompt_ids(hm, args.n)
    run = RUNNERS[args.variant]
    run(hm, ids[:WARM_TOKENS], args)  # warm-up: kernels, lazily mapped weights
    import gc

    gc.collect()
    reset_peak()  # raises where it cannot: a growth figure must not include the load
    reset = True
    rss_base = rss_bytes() / MiB
    load = os.getloadavg()[0]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    arrays, info = run(hm, ids, args)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    peak = peak_bytes() / MiB
    if args.variant == "forward":
        info["forward_full_logits_s"] = _forward_full_logits(hm, ids)
    if arrays is not None and args.save:
        np.savez(args.save, **{k: np.asarray(v) for k, v in arrays.items()})
    return {
        "variant": args.variant,
        "n": args.n,
        "wall_s": wall,
        "cpu_s": cpu,
        "loadavg_1m_before": load,
        "load_s": load_s,
        "rss_loaded_mb": rss_loaded,
        "rss_base_mb": rss_base,
        "peak_rss_mb": peak,
        "growth_mb": peak - rss_base,
        "peak_reset": reset,
        "threads": torch.get_num_threads(),
        "fp32_precision": str(getattr(torch.backends.mkldnn.matmul, "fp32_precision", "n/a")),
        **info,
    }


# ------------------------------------------------------------------------------------------
# the parent: spawn, collect, compare, tabulate
# ------------------------------------------------------------------------------------------
def spawn(variant: str, n: int, args, save: str | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--n", str(n),
           "--naive-cap-gb", str(args.naive_cap_gb), "--rss-kill-frac", str(args.rss_kill_frac)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.fp32_precision:
        cmd += ["--fp32-precision", args.fp32_precision]
    if save:
        cmd += ["--save", save]
    env = dict(os.environ, TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"variant": variant, "n": n, "error": f"rc={p.returncode}: {p.stderr.strip()[-600:]}"}
    return json.loads(lines[-1])


def compare(lens_npz: str, naive_npz: str) -> dict:
    """Agreement of the lens with the naive reference (all sites x positions with a next token)."""
    import numpy as np

    a, b = np.load(lens_npz), np.load(naive_npz)
    T = a["next_rank"].shape[1]
    has_next = np.arange(T) < T - 1
    top1 = a["topk_ids"][..., 0] == b["topk_ids"][..., 0]
    topk_set = np.mean([set(x) == set(y) for x, y in zip(a["topk_ids"].reshape(-1, K), b["topk_ids"].reshape(-1, K))])
    ra, rb = a["next_rank"][:, has_next], b["next_rank"][:, has_next]
    rank_eq = ra == rb
    kl_diff = np.abs(a["kl"] - b["kl"])
    ent_diff = np.abs(a["entropy"] - b["entropy"])
    p_diff = np.abs(a["topk_probs"][..., 0] - b["topk_probs"][..., 0])
    out = {
        "cells": int(top1.size),
        "top1_equal_frac": float(top1.mean()),
        "top1_mismatches": int((~top1).sum()),
        "topk_set_equal_frac": float(topk_set),
        "rank_equal_frac": float(rank_eq.mean()),
        "rank_mismatches": int((~rank_eq).sum()),
        "rank_max_abs_diff": int(np.abs(ra - rb).max()),
        "kl_max_abs_diff": float(np.nanmax(kl_diff)),
        "kl_max_rel_diff": float(np.nanmax(kl_diff / np.maximum(np.abs(b["kl"]), 1e-3))),
        "entropy_max_abs_diff": float(np.nanmax(ent_diff)),
        "top1_prob_max_abs_diff": float(np.nanmax(p_diff)),
        "final_site_kl_max": float(np.nanmax(np.abs(a["kl"][-1]))),
    }
    # Float32 GEMMs blocked differently may flip exact near-ties; anything beyond that is a bug.
    out["ok"] = bool(
        out["top1_equal_frac"] >= 0.999
        and out["rank_equal_frac"] >= 0.995
        and out["kl_max_abs_diff"] < 5e-3
        and out["entropy_max_abs_diff"] < 5e-3
    )
    return out


def _stats(xs: list[float]) -> dict:
    xs = [x for x in xs if x == x]
    if not xs:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def main_bench(args) -> None:
    lengths = [int(x) for x in args.lengths.split(",")]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="lens_bench_")
    runs: list[dict] = []
    partial = OUT_DIR / "lens_bench.partial.json"  # every run so far, in case a long run is cut short
    t_start = time.perf_counter()
    for rep in range(args.repeats):
        for n in lengths:
            for v in args.variants.split(","):
                if v == "naive" and rep >= args.naive_repeats:
                    continue  # the naive lens is slow and only its first repeat is compared
                save = os.path.join(tmp, f"{v}_{n}.npz") if rep == 0 and v in ("lens", "naive") else None
                r = spawn(v, n, args, save)
                r["repeat"] = rep
                runs.append(r)
                msg = r.get("error") or (f"{r['wall_s']:7.2f} s  +{r['growth_mb']:7.0f} MB  "
                                         f"cpu/wall {r['cpu_s'] / r['wall_s']:.2f}  load {r['loadavg_1m_before']:.1f}")
                print(f"  rep {rep} n={n:5d} {v:8s} {msg}", flush=True)
                partial.write_text(json.dumps({"partial": True, "runs": runs}, indent=1, default=float))

    summary: dict = {}
    for n in lengths:
        row: dict = {}
        for v in args.variants.split(","):
            ok = [r for r in runs if r["variant"] == v and r["n"] == n and "error" not in r]
            row[v] = {"wall_s": _stats([r["wall_s"] for r in ok]), "growth_mb": _stats([r["growth_mb"] for r in ok]),
                      "peak_rss_mb": _stats([r["peak_rss_mb"] for r in ok]),
                      "cpu_s": _stats([r["cpu_s"] for r in ok]),
                      "cpu_over_wall": _stats([r["cpu_s"] / r["wall_s"] for r in ok]),
                      "loadavg_1m_before": _stats([r["loadavg_1m_before"] for r in ok]),
                      "errors": [r["error"] for r in runs if r["variant"] == v and r["n"] == n and "error" in r]}
            if v == "floor" and ok:
                row[v]["gflops"] = _stats([r["gflops"] for r in ok])
            if v == "forward" and ok:
                row[v]["forward_full_logits_s"] = _stats([r["forward_full_logits_s"] for r in ok])
            if v == "naive" and ok:
                row[v]["sites_per_group"] = ok[0]["sites_per_group"]
        med = {v: row[v]["wall_s"]["median"] for v in row}
        best = {v: row[v]["wall_s"]["min"] for v in row}
        grow = {v: row[v]["growth_mb"]["median"] for v in row}
        ratios = {}
        if "lens" in med and "naive" in med:
            ratios["lens_over_naive"] = med["lens"] / med["naive"]
            ratios["lens_over_naive_min"] = best["lens"] / best["naive"]
            ratios["lens_growth_over_naive_growth"] = grow["lens"] / grow["naive"]
        if all(v in med for v in ("lens", "forward", "floor")):
            ratios["lens_over_forward_plus_floor"] = med["lens"] / (med["forward"] + med["floor"])
            ratios["lens_over_forward_plus_floor_min"] = best["lens"] / (best["forward"] + best["floor"])
            # process CPU seconds: least disturbed by a busy neighbour on the shared cores (with
            # --threads 1 it is the work itself; with more threads it also counts their spinning)
            cpu = {v: row[v]["cpu_s"]["median"] for v in ("lens", "forward", "floor")}
            ratios["lens_over_forward_plus_floor_cpu"] = cpu["lens"] / (cpu["forward"] + cpu["floor"])
        row["ratios"] = ratios
        ln, nv = os.path.join(tmp, f"lens_{n}.npz"), os.path.join(tmp, f"naive_{n}.npz")
        if os.path.exists(ln) and os.path.exists(nv):
            row["agreement"] = compare(ln, nv)
        summary[str(n)] = row

    targets = {}
    for n in lengths:
        r = summary[str(n)]
        if "lens" in r and n == 1024:
            targets["lens_growth_le_1GB_at_1024"] = r["lens"]["growth_mb"]["median"] <= 1024
        if n == 512 and "lens_over_naive" in r["ratios"]:
            targets["lens_le_0.5x_naive_at_512"] = r["ratios"]["lens_over_naive"] <= 0.5
        if "lens_over_forward_plus_floor" in r["ratios"]:
            targets[f"lens_le_1.25x_forward_plus_floor_at_{n}"] = r["ratios"]["lens_over_forward_plus_floor"] <= 1.25
        if "agreement" in r:
            targets[f"lens_agrees_with_naive_at_{n}"] = r["agreement"]["ok"]

    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": runs[0].get("threads") if runs else None,
        "threads_set": args.threads or "torch default",
        "fp32_precision": args.fp32_precision or "default",
        "mem_total_mb": _mem_total_mb(),
        "naive_cap_gb": args.naive_cap_gb,
        "loadavg_end": os.getloadavg(),
        "bench_wall_s": time.perf_counter() - t_start,
    }
    result = {"env": env, "lengths": lengths, "repeats": args.repeats, "summary": summary, "targets": targets, "runs": runs}
    out = Path(args.out) if args.out else OUT_DIR / "lens_bench.json"
    out.write_text(json.dumps(result, indent=1, default=float))
    print_table(result)
    print(f"\nwrote {out}")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_table(result: dict) -> None:
    env = result["env"]
    print(f"\nSmolLM2-135M, 31 sites x N positions, k={K}; torch {env['torch']}, {env['torch_threads']} threads "
          f"({env['threads_set']}), fp32_precision={env['fp32_precision']}; {result['repeats']} repeats, "
          "median [min-max]; growth = peak RSS - RSS after load+warm-up;\ncpu/wall = process CPU time / wall "
          "(~2 when both threads run; far less means a busy neighbour); load = 1-min load average before the call")
    hdr = f"{'N':>5} {'variant':8} {'wall s':>22} {'growth MB':>24} {'cpu/wall':>8} {'load':>5}  note"
    print(hdr)
    print("-" * len(hdr))
    for n, row in result["summary"].items():
        for v in VARIANTS:
            if v not in row:
                continue
            w, g = row[v]["wall_s"], row[v]["growth_mb"]
            note = ""
            if v == "floor" and "gflops" in row[v]:
                note = f"{row[v]['gflops']['median']:.0f} GFLOP/s"
            if v == "forward" and "forward_full_logits_s" in row[v]:
                note = f"full logits {row[v]['forward_full_logits_s']['median']:.2f} s"
            if v == "naive" and "sites_per_group" in row[v]:
                note = f"{row[v]['sites_per_group']} sites/group"
            if row[v]["errors"]:
                note += f" ERRORS: {len(row[v]['errors'])}"
            print(f"{n:>5} {v:8} {w['median']:8.2f} [{w['min']:5.2f}-{w['max']:5.2f}] "
                  f"{g['median']:9.0f} [{g['min']:5.0f}-{g['max']:5.0f}] {row[v]['cpu_over_wall']['median']:8.2f} "
                  f"{row[v]['loadavg_1m_before']['median']:5.1f}  {note}")
        r = row["ratios"]
        parts = []
        if "lens_over_naive" in r:
            parts.append(f"lens/naive {r['lens_over_naive']:.2f}x time (best-of {r['lens_over_naive_min']:.2f}x), "
                         f"{r['lens_growth_over_naive_growth']:.3f}x growth")
        if "lens_over_forward_plus_floor" in r:
            parts.append(f"lens/(forward+floor) {r['lens_over_forward_plus_floor']:.2f}x "
                         f"(best-of {r['lens_over_forward_plus_floor_min']:.2f}x)")
        if parts:
            print(f"{'':>5} {'ratios':8} " + "; ".join(parts))
        if "agreement" in row:
            a = row["agreement"]
            print(f"{'':>5} {'agree':8} {'OK' if a['ok'] else 'MISMATCH'}: top-1 {a['top1_equal_frac']:.4%} "
                  f"({a['top1_mismatches']} diff), ranks {a['rank_equal_frac']:.4%} ({a['rank_mismatches']} diff, "
                  f"max {a['rank_max_abs_diff']}), |dKL| {a['kl_max_abs_diff']:.1e}, |dH| {a['entropy_max_abs_diff']:.1e}")
    print("\ntargets: " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in result["targets"].items()))


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="128,512,1024", help="comma-separated prompt lengths in tokens")
    ap.add_argument("--repeats", type=int, default=3, help="fresh-process repeats per variant and length")
    ap.add_argument("--quick", action="store_true", help="smoke run: --lengths 128 --repeats 1")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--naive-repeats", type=int, default=1, help="repeats of the (slow) naive variant; its first is compared")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads in children (0: torch default)")
    ap.add_argument("--fp32-precision", default="", help="torch.backends.mkldnn.matmul.fp32_precision in children")
    ap.add_argument("--naive-cap-gb", type=float, default=12.0, help="memory the naive baseline may materialise")
    ap.add_argument("--rss-kill-frac", type=float, default=0.85, help="kill a child whose RSS passes this share of RAM")
    ap.add_argument("--out", default="", help="JSON path (default bench/out/lens_bench.json)")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--save", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.lengths, args.repeats = "128", 1
    return args


def main(argv=None) -> None:
    args = parse(argv)
    if args.child:
        args.variant = args.child
        print(json.dumps(child(args)))
    else:
        main_bench(args)


if __name__ == "__main__":
    main()
