"""Compare benchmark on the embedded SmolLM2-135M: one engine run vs two runs + compare.

Two questions, each asked two ways:

* **two prompts**: two prompts of exactly ``--tokens`` (512) held-out tokens each
  (``lens_widget.corpus``), every cell of the 31 classic sites, k=10:
  ``one_run`` = ``LogitLens(hm).compare(ids_a, ids_b)`` (one forward of both in one batch, exact
  full-vocabulary JS in the reducer) vs ``two_runs`` = ``run(ids_a)``, ``run(ids_b)``, then
  ``lens_widget.compare(ra, rb)`` from the saved results (top-k-approximate JS);
* **two lenses on one prompt**: the logit lens vs the shipped tuned lens (``TunedLens.default``):
  ``one_run`` = ``compare(ids, decoder_b=tuned)`` vs ``two_runs`` = two ``run`` s + ``compare``.

Each variant runs in a **fresh subprocess per repeat** (after a 16-token warm-up of the same
variant in that process), repeats interleaved so a noisy neighbour hits every variant alike.
Eager reductions (``compile="never"``) everywhere by default (``--compile always``: the fused
compiled reductions and JS kernel, compiled during the warm-up), one torch thread (``--threads``).
Time: wall clock of the measured call (median, min, max). Memory: peak RSS growth during the
call (``tests/memory.py``: high-water mark reset before the call). Ratios are one_run / two_runs.
The time of ``compare(ra, rb)`` alone (from saved results) is reported too.

    nice -n 10 python bench/compare_bench.py [--tokens 512] [--repeats 3] [--threads 1]

Writes ``bench/results/compare_bench.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("prompts/one_run", "prompts/two_runs", "lenses/one_run", "lenses/two_runs")


def child(variant: str, tokens: int, threads: int, compile_mode: str = "never") -> dict:
    """One measured call of ``variant`` in this (fresh) process."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import torch

    torch.set_num_threads(threads)
    from memory import measure_peak

    from lens_widget import HookedModel, LogitLens, TunedLens, compare
    from lens_widget.corpus import corpus_texts
    from lens_widget.tuned_training import token_stream

    hm = HookedModel.default()
    stream = token_stream(hm, corpus_texts("held_out"), tokens)
    ids_a, ids_b = next(stream), next(stream)
    lens = LogitLens(hm, compile=compile_mode)
    kind, how = variant.split("/")
    tuned = TunedLens.default(hm) if kind == "lenses" else None
    other = lens.with_decoder(tuned) if tuned is not None else lens

    def work(a, b):
        if how == "one_run":
            return lens.compare(a, b, progress=False) if kind == "prompts" else lens.compare(a, decoder_b=tuned, progress=False), 0.0
        ra = lens.run([a], k=10, progress=False)
        rb = other.run([b if kind == "prompts" else a], k=10, progress=False)
        t = time.perf_counter()
        c = compare(ra, rb)
        return c, time.perf_counter() - t

    work(ids_a[:16], ids_b[:16])  # warm-up
    with measure_peak() as m:
        t = time.perf_counter()
        c, t_compare = work(ids_a, ids_b)
        seconds = time.perf_counter() - t
    return {"seconds": seconds, "growth_bytes": m.growth, "compare_only_s": t_compare, "js_exact": c.js_exact,
            "cells": int(c.js.size), "js_mean": float(c.js[~c.nonfinite].mean())}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", default="never", choices=["never", "always"])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "compare_bench.json"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.tokens, args.threads, args.compile)))
        return 0
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for rep in range(args.repeats):
        for v in VARIANTS:
            cmd = [sys.executable, __file__, "--child", v, "--tokens", str(args.tokens), "--threads", str(args.threads), "--compile", args.compile]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            runs[v].append(json.loads(out))
            r = runs[v][-1]
            print(f"[{rep + 1}/{args.repeats}] {v:<16} {r['seconds']:7.2f} s  +{r['growth_bytes'] / 2**20:7.0f} MiB", flush=True)
    med = {v: {"seconds": statistics.median(r["seconds"] for r in rs), "min_s": min(r["seconds"] for r in rs),
               "max_s": max(r["seconds"] for r in rs), "growth_MiB": statistics.median(r["growth_bytes"] for r in rs) / 2**20,
               "js_exact": rs[0]["js_exact"], "js_mean": rs[0]["js_mean"], "cells": rs[0]["cells"]} for v, rs in runs.items()}
    summary = {}
    for kind in ("prompts", "lenses"):
        one, two = med[f"{kind}/one_run"], med[f"{kind}/two_runs"]
        summary[kind] = {"time_ratio_one_over_two": one["seconds"] / two["seconds"],
                         "time_ratio_of_fastest": one["min_s"] / two["min_s"],  # less exposed to a busy neighbour
                         "memory_ratio_one_over_two": one["growth_MiB"] / two["growth_MiB"],
                         "compare_from_saved_results_s": statistics.median(r["compare_only_s"] for r in runs[f"{kind}/two_runs"])}
        print(f"{kind}: one run {one['seconds']:.2f} s +{one['growth_MiB']:.0f} MiB (exact JS, mean {one['js_mean']:.4f}) | "
              f"two runs + compare {two['seconds']:.2f} s +{two['growth_MiB']:.0f} MiB (top-k JS, mean {two['js_mean']:.4f}) | "
              f"time x{summary[kind]['time_ratio_one_over_two']:.2f}, memory x{summary[kind]['memory_ratio_one_over_two']:.2f}; "
              f"compare() from saved results {summary[kind]['compare_from_saved_results_s'] * 1e3:.0f} ms")
    result = {"machine": platform.processor() or platform.machine(), "threads": args.threads, "compile": args.compile, "tokens": args.tokens,
              "sites": 31, "k": 10, "repeats": args.repeats, "runs": runs, "median": med, "summary": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
