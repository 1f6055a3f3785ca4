"""Soak: many prompt recomputations in one widget; memory must stay flat, every reply arrive.

    python bench/soak.py [--n 200]

Drives the widget's message handler exactly as the front end does (``set_prompt`` requests with
ids) and records the process RSS before, during and after. Writes bench/out/soak.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from memory import MiB, rss_bytes  # noqa: E402  (the one memory meter of tests and bench, bytes)

from lens_widget import HookedModel
from lens_widget.widget import LensWidget

WORDS = "the capital of France Germany Italy Spain is a city river mountain where people live and work".split()


def rss_mb() -> float:
    return rss_bytes() / MiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="prompt recomputations (default 200)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "soak.json"))
    args = ap.parse_args()
    rng = random.Random(0)
    model = HookedModel.default()
    w = LensWidget(model, "The capital of France is", track=[" Paris"], progress=False)
    replies: list[dict] = []
    w.send = lambda content, buffers=None: replies.append(content)
    # warm up so allocator pools are in place before the baseline
    for i in range(5):
        w.handle_message({"type": "set_prompt", "request_id": f"warm{i}", "prompt": " ".join(rng.choices(WORDS, k=rng.randint(3, 60)))})
    gc.collect()
    start_rss, samples = rss_mb(), []
    t0 = time.perf_counter()
    for i in range(args.n):
        prompt = " ".join(rng.choices(WORDS, k=rng.randint(3, 60)))
        w.handle_message({"type": "set_prompt", "request_id": f"s{i}", "prompt": prompt})
        if i % 20 == 19:
            samples.append(round(rss_mb(), 1))
    elapsed = time.perf_counter() - t0
    gc.collect()
    end_rss = rss_mb()
    soak = [r for r in replies if str(r.get("request_id", "")).startswith("s")]
    ok = sum(1 for r in soak if r.get("ok"))
    report = {
        "recomputations": args.n,
        "replies": len(soak),
        "ok": ok,
        "rss_start_mb": round(start_rss, 1),
        "rss_end_mb": round(end_rss, 1),
        "rss_growth_mb": round(end_rss - start_rss, 1),
        "rss_every_20": samples,
        "seconds": round(elapsed, 1),
        "ms_per_recompute": round(1000 * elapsed / args.n, 1),
    }
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    if ok != args.n or len(soak) != args.n:
        raise SystemExit(f"{args.n - ok} of {args.n} recomputations failed or got no reply")


if __name__ == "__main__":
    main()
