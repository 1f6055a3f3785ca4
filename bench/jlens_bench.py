"""J grid vs logit grid (and the tuned lens's, for scale) on the embedded SmolLM2, in one run: one
prompt of exactly ``--tokens`` (512) held-out tokens, every default site (embed + 30 block
outputs), k=10, eager reductions (``compile="never"``, so every decoder runs the same kernels);
repeats interleaved (logit, tuned, J, logit, ...) so a noisy neighbour on the shared cores hits
all alike. The J lens adds one ``[T, d] x [d, d]`` matmul per site to the ``[T, d] x [d, V]``
unembedding (576 / 49152 ≈ 1.2 % more FLOPs): target ≤ 1.1x the logit grid, as the tuned lens.

    PYTHONPATH=. python bench/jlens_bench.py [--tokens 512] [--repeats 5] [--threads 2] [--out bench/results/jlens_bench.json]

Reports the median and best wall times, the J/logit and tuned/logit ratios (of the medians, of
the bests, and per round with their median: a round runs the three back to back), and the load
average before and after (the machine is shared: run it when nothing else runs).
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "jlens_bench.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from lens_widget import HookedModel, JacobianLens, LogitLens, TunedLens
    from lens_widget.corpus import corpus_texts
    from lens_widget.tuned_training import token_stream

    load_before = os.getloadavg()
    hm = HookedModel.default()
    ids = next(token_stream(hm, corpus_texts("held_out"), args.tokens))
    jl = JacobianLens.default(hm)
    engines = {"logit": LogitLens(hm, compile="never"), "tuned": LogitLens(hm, decoder=TunedLens.default(hm), compile="never"),
               "jacobian": LogitLens(hm, decoder=jl, compile="never")}
    times: dict[str, list[float]] = {k: [] for k in engines}
    for eng in engines.values():  # warm-up (allocations, caches)
        eng.run([ids], k=10, progress=False)
    for _ in range(args.repeats):
        for name, eng in engines.items():
            t = time.perf_counter()
            eng.run([ids], k=10, progress=False)
            times[name].append(time.perf_counter() - t)
    median = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "tokens": len(ids), "sites": len(hm.default_sites()), "threads": args.threads, "repeats": args.repeats,
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "median": {k: round(v, 3) for k, v in median.items()},
        "best": {k: round(min(v), 3) for k, v in times.items()},
        "ratio_median": {k: round(median[k] / median["logit"], 3) for k in ("tuned", "jacobian")},
        "ratio_best": {k: round(min(times[k]) / min(times["logit"]), 3) for k in ("tuned", "jacobian")},
        # each round runs the three back to back: its ratio is the least exposed to a neighbour's bursts
        "ratio_per_round": {k: [round(a / b, 3) for a, b in zip(times[k], times["logit"])] for k in ("tuned", "jacobian")},
        "ratio_median_of_rounds": {k: round(statistics.median(a / b for a, b in zip(times[k], times["logit"])), 3) for k in ("tuned", "jacobian")},
        "load_average_before": [round(x, 2) for x in load_before], "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "lens": jl.describe().splitlines()[1] if len(jl.describe().splitlines()) > 1 else "",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
    }
    print(json.dumps(out, indent=1))
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
