"""Cold start: how long a new user waits for the first grid, in fresh processes with an empty
compile cache, against the same calls once warm.

Each repeat is a new Python process with its own empty ``TORCHINDUCTOR_CACHE_DIR`` (a new
machine, as far as the compiler knows). In it, timed in order:

* ``import_s``  -- ``import lens_widget``;
* ``load_s``    -- ``HookedModel.default()``;
* ``first_s``   -- the first ``LogitLens(hm).run(prompt)`` of the process;
* ``warm_s``    -- the same call again (median of 3), in the same process.

for a 6-token prompt (the demo's) and a 512-token prompt (in separate processes, so each is the
process's first grid). Target (issue 9): the first small grid at most 5x its warm time.

    python bench/cold_start.py [--repeats 3]      # writes bench/out/cold_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"

CHILD = r"""
import json, statistics, sys, time
t0 = time.perf_counter()
import lens_widget
from lens_widget import HookedModel, LogitLens
t1 = time.perf_counter()
hm = HookedModel.default()
t2 = time.perf_counter()
n = int(sys.argv[1])
prompt = "The capital of France is" if n <= 6 else hm.tokens.encode(open(sys.argv[2]).read())[:n]
lens = LogitLens(hm)
t3 = time.perf_counter()
r = lens.run(prompt, progress=False)
t4 = time.perf_counter()
warm = []
for _ in range(3):
    s = time.perf_counter()
    lens.run(prompt, progress=False)
    warm.append(time.perf_counter() - s)
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_s": t4 - t3, "warm_s": statistics.median(warm),
                  "cells": int(r.entropy.size), "top1_last": int(r.topk_ids[0, -1, -1, 0])}))
"""


def run_child(n: int, text_file: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="inductor-empty-") as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, PYTHONUNBUFFERED="1")
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), text_file], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lengths", default="6,512")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from lens_bench import TEXT  # real prose, cycled

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(TEXT * 4)
    results: dict[str, list[dict]] = {}
    for rep in range(args.repeats):
        for n in [int(x) for x in args.lengths.split(",")]:
            row = run_child(n, f.name)
            results.setdefault(str(n), []).append(row)
            print(f"repeat {rep}: {n:>4} tokens  import {row['import_s']:.2f}s  load {row['load_s']:.2f}s  "
                  f"first grid {row['first_s']:.3f}s  warm {row['warm_s']:.3f}s  ({row['first_s'] / row['warm_s']:.1f}x)", flush=True)
    summary = {}
    for n, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("import_s", "load_s", "first_s", "warm_s")}
        med["first_over_warm"] = statistics.median(r["first_s"] / r["warm_s"] for r in rows)
        med["first_over_warm_range"] = [min(r["first_s"] / r["warm_s"] for r in rows), max(r["first_s"] / r["warm_s"] for r in rows)]
        summary[n] = med
        print(f"{n:>4} tokens: first grid {med['first_s']:.3f}s vs warm {med['warm_s']:.3f}s = {med['first_over_warm']:.2f}x (median of {len(rows)})")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cold_start.json").write_text(json.dumps({"runs": results, "median": summary}, indent=1))
    os.unlink(f.name)


if __name__ == "__main__":
    main()
