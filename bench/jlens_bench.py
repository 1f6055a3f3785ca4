"""J grid vs logit grid on the embedded SmolLM2: one run each of a 512-token prompt, every
default site (embed + 30 block outputs), k=10, alternated ``--repeats`` times; the J lens adds
one [T, d] x [d, d] matmul per site to the [T, d] x [d, V] unembedding (target: <= 1.1x).

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/jlens_bench.py [--tokens 512] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from lens_widget import HookedModel, JacobianLens, LogitLens
    from lens_widget.corpus import corpus_texts
    from lens_widget.tuned_training import token_stream

    hm = HookedModel.default()
    ids = next(token_stream(hm, corpus_texts("held_out"), args.tokens))
    engines = {"logit": LogitLens(hm), "jacobian": LogitLens(hm, decoder=JacobianLens.default(hm))}
    times: dict[str, list[float]] = {k: [] for k in engines}
    for name, eng in engines.items():  # warm-up (compile, caches)
        eng.run([ids], k=10, progress=False)
    for _ in range(args.repeats):
        for name, eng in engines.items():
            t = time.perf_counter()
            eng.run([ids], k=10, progress=False)
            times[name].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    out = {"tokens": len(ids), "threads": args.threads, "seconds": times, "best": best, "ratio": best["jacobian"] / best["logit"]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
