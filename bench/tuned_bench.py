"""Tuned-lens benchmark on the embedded SmolLM2-135M, all in one run:

* **grid**: ``LogitLens(hm).run(ids)`` vs ``LogitLens(hm, decoder=tuned).run(ids)`` on one prompt
  of exactly ``--tokens`` (512) held-out tokens, every cell of the 31 classic sites, k=10, eager
  reductions (``compile="never"``, so both decoders run the same kernels); repeats interleaved
  (logit, tuned, logit, tuned, ...) so a noisy neighbour on the shared cores hits both alike;
  median wall time and the tuned/logit ratio (target ≤ 1.1×).
* **training throughput**: ``--train-steps`` steps of ``train_tuned_lens`` at 512 tokens a step
  (tokens/s of the step loop: forward pass, targets, 30 layers of chunked KL + gradient).
* **held-out KL by layer**: KL(final ‖ lens) of the logit lens and the shipped tuned lens (and
  any ``--lens DIR`` in tuned-lens format) on the first ``--eval-tokens`` tokens of the corpus's
  held-out split (``lens_widget.corpus``), which training never saw.

    nice -n 10 python bench/tuned_bench.py [--tokens 512] [--repeats 3] [--eval-tokens 4096] [--lens DIR]

Writes ``bench/results/tuned_bench.json`` (``--out``) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lens_widget import HookedModel, LogitLens, TunedLens  # noqa: E402
from lens_widget.corpus import corpus_texts  # noqa: E402
from lens_widget.tuned_training import TrainingLog, held_out_kl, token_stream, train_tuned_lens  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--eval-tokens", type=int, default=4096)
    ap.add_argument("--lens", action="append", default=[], metavar="DIR", help="also evaluate this tuned-lens folder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid-only", action="store_true", help="only the grid timing (merged into an existing --out file)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "tuned_bench.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    hm = HookedModel.default()
    tuned = TunedLens.default(hm)
    out: dict = {"machine": platform.processor() or platform.machine(), "threads": args.threads, "model": hm.name,
                 "shipped_lens": getattr(tuned, "shipped", {})}
    if args.grid_only and Path(args.out).exists():
        out = {**json.loads(Path(args.out).read_text()), **out}

    # -- grid ---------------------------------------------------------------------------------------
    ids = next(token_stream(hm, corpus_texts("held_out"), args.tokens))
    batch = hm.pad([ids])
    engines = {"logit lens": LogitLens(hm, compile="never"), "tuned lens": LogitLens(hm, compile="never", decoder=tuned)}
    for e in engines.values():  # warm-up
        e.run(hm.pad([ids[:16]]), k=10, progress=False)
    times: dict[str, list[float]] = {name: [] for name in engines}
    cpu: dict[str, list[float]] = {name: [] for name in engines}  # process CPU seconds: what load on the shared cores disturbs least
    for _ in range(args.repeats):
        for name, e in engines.items():
            t, c = time.perf_counter(), time.process_time()
            e.run(batch, k=10, progress=False)
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    med = {name: statistics.median(v) for name, v in times.items()}
    cpu_med = {name: statistics.median(v) for name, v in cpu.items()}
    # each tuned run over the logit run just before it: neighbours in time share the machine's load
    pairs = [t / lg for lg, t in zip(times["logit lens"], times["tuned lens"])]
    out["grid"] = {"tokens": args.tokens, "sites": 31, "k": 10, "repeats": args.repeats, "seconds": times, "median_s": med,
                   "ratio_tuned_over_logit": med["tuned lens"] / med["logit lens"], "paired_ratios": pairs,
                   "paired_ratio_median": statistics.median(pairs), "cpu_seconds": cpu,
                   "cpu_ratio_tuned_over_logit": cpu_med["tuned lens"] / cpu_med["logit lens"]}
    print(f"grid at {args.tokens} tokens: logit {med['logit lens']:.2f} s, tuned {med['tuned lens']:.2f} s, "
          f"ratio of medians {out['grid']['ratio_tuned_over_logit']:.3f}, median paired ratio {statistics.median(pairs):.3f}, "
          f"CPU time ratio {out['grid']['cpu_ratio_tuned_over_logit']:.3f}", flush=True)
    if args.grid_only:
        Path(args.out).write_text(json.dumps(out, indent=1))
        return 0

    # -- training throughput ---------------------------------------------------------------------------
    if args.train_steps:
        log = TrainingLog()
        train_tuned_lens(hm, corpus_texts("train"), steps=100, stop_after=args.train_steps, tokens_per_step=512,
                         seq_len=256, log=log, progress=False)
        secs = [r["seconds"] for r in log]
        out["training"] = {"tokens_per_step": 512, "steps": len(log), "step_seconds": secs,
                           "tokens_per_s": 512 / statistics.median(secs)}
        print(f"training: {out['training']['tokens_per_s']:.1f} tokens/s ({statistics.median(secs):.1f} s a step)", flush=True)

    # -- held-out KL ------------------------------------------------------------------------------------
    decoders = {"logit lens": None, "tuned lens": tuned}
    for d in args.lens:
        decoders[f"tuned lens ({Path(d).name})"] = TunedLens.from_pretrained(d, hm)
    t = time.perf_counter()
    kl = held_out_kl(hm, decoders, corpus_texts("held_out"), seq_len=256, max_tokens=args.eval_tokens, progress=True)
    kl["seconds"] = time.perf_counter() - t
    logit = kl["kl"]["logit lens"][:-1]
    summary = {}
    for name, curve in kl["kl"].items():
        c = curve[:-1]
        summary[name] = {"mean": sum(c) / len(c), "ratio_of_means": sum(c) / sum(logit),
                         "lower_at_every_layer": all(a < b for a, b in zip(c, logit)) if name != "logit lens" else None}
    kl["summary"] = summary
    out["held_out_kl"] = kl
    print(f"held-out KL(final ‖ lens), nats, {kl['tokens']} tokens:")
    names = list(kl["kl"])
    print("site          " + "  ".join(f"{n:>14}" for n in names))
    for j, site in enumerate(kl["sites"]):
        print(f"{site:<13} " + "  ".join(f"{kl['kl'][n][j]:14.3f}" for n in names))
    print("mean (0..L-1) " + "  ".join(f"{summary[n]['mean']:14.3f}" for n in names))
    print("ratio         " + "  ".join(f"{summary[n]['ratio_of_means']:14.3f}" for n in names))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
