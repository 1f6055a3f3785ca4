"""Patching on the embedded SmolLM2-135M (lens_widget.patching), one torch thread by default.

* the activation-patching sweep of the IOI pair ("When Mary and John went to the store, John gave
  a drink to" / "… Mary gave …", 14 tokens after the BOS-free GGUF tokenizer, " Mary" − " John"):
  every (site, position) of the residual stream, batched (``--batch`` patches per forward) against
  one forward per patch — seconds, forwards, peak RSS growth — and the recovery at the names;
* one patched grid (``LogitLens.patch``: the source cell, then clean + patched target in one
  batch, with its exact comparison) against one plain grid of the target.

Each case runs ``--repeats`` times, interleaved. ``nice -n 10 python bench/patch_bench.py``.
Writes ``bench/results/patch_bench.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from lens_widget import HookedModel, LogitLens  # noqa: E402
from memory import MiB, measure_peak  # noqa: E402

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "patch_bench.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lens = LogitLens(HookedModel.default(), compile="never")
    pair = (" Mary", " John")
    lens.patch_sweep(CLEAN, CORRUPT, pair, batch_size=args.batch, progress=False)  # warm up
    times: dict[str, list[float]] = {"sweep, batched": [], "sweep, one forward per patch": [], "patched grid + comparison": [], "plain grid": []}
    peaks: dict[str, float] = {}
    sweeps = {}
    for _ in range(args.repeats):
        with measure_peak() as m:
            sweeps["batched"], t = timed(lambda: lens.patch_sweep(CLEAN, CORRUPT, pair, batch_size=args.batch, progress=False))
        times["sweep, batched"].append(t)
        peaks["sweep, batched"] = max(peaks.get("sweep, batched", 0), m.growth / MiB)
        with measure_peak() as m:
            sweeps["single"], t = timed(lambda: lens.patch_sweep(CLEAN, CORRUPT, pair, batch_size=1, progress=False))
        times["sweep, one forward per patch"].append(t)
        peaks["sweep, one forward per patch"] = max(peaks.get("sweep, one forward per patch", 0), m.growth / MiB)
        _, t = timed(lambda: lens.patch(CORRUPT, CLEAN, "resid_out_8", 9))
        times["patched grid + comparison"].append(t)
        _, t = timed(lambda: lens.run(CLEAN, progress=False))
        times["plain grid"].append(t)
    sw = sweeps["batched"]
    agree = float(np.nanmax(np.abs(sweeps["batched"].recovery - sweeps["single"].recovery)))
    name = sw.clean_tokens.index(" John", 5)
    rows = {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v)} for k, v in times.items()}
    out = {
        "host": platform.node(), "threads": args.threads, "repeats": args.repeats, "batch": args.batch,
        "tokens": len(sw.clean_tokens), "sites": len(sw.sites), "patches": sw.meta["patches"],
        "forwards": {"batched": sweeps["batched"].meta["forwards"], "single": sweeps["single"].meta["forwards"]},
        "times": rows, "peak_rss_growth_mib": peaks,
        "speedup_batched": rows["sweep, one forward per patch"]["median_s"] / rows["sweep, batched"]["median_s"],
        "max_abs_recovery_difference_batched_vs_single": agree,
        "logit_diff": {"clean": sw.clean_ld, "corrupt": sw.corrupt_ld},
        "recovery_at_second_name_first_half": float(np.mean(sw.recovery[1 : len(sw.sites) // 2, name])),
        "recovery_last_block_last_position": float(sw.recovery[-1, -1]),
    }
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"{out['patches']} patches ({out['sites']} sites x {out['tokens']} tokens), {args.threads} thread(s)")
    for k, v in rows.items():
        print(f"  {k:34s} {v['median_s']:8.3f} s  [{v['min_s']:.3f}–{v['max_s']:.3f}]" + (f"  peak +{peaks[k]:.0f} MiB" if k in peaks else ""))
    print(f"  batched sweep {out['speedup_batched']:.2f}x faster ({out['forwards']['batched']} vs {out['forwards']['single']} forwards); "
          f"max |Δ recovery| {agree:.2e}")
    print(f"  LD clean {sw.clean_ld:.3f}, corrupt {sw.corrupt_ld:.3f}; recovery at the second name (first half of the blocks) "
          f"{out['recovery_at_second_name_first_half']:.3f}, last block at the last token {out['recovery_last_block_last_position']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
