"""Generation benchmark on the embedded SmolLM2-135M: what the lens adds to each new token.

All in one process, repeats interleaved (plain, lens, lens + wire, floor, plain, ...) so a noisy
neighbour on the shared cores hits every variant alike; per-token medians over every repeat:

* **plain step**: one cached decoding step of the model itself, as ``transformers`` runs it
  (``model(input_ids=[[t]], cache=past, use_cache=True, logits_to_keep=1)`` + argmax).
* **lens step**: one step of ``LogitLens.generate`` (the same cached forward with the 31 sites
  recorded at the new position, then one column of reductions: top-k, entropy, exact next-token
  rank, KL to the final layer), timed between its per-token progress reports.
* **lens step + wire**: the same with the widget's per-token work: the ``GeneratedColumn``
  callback, ``lens_widget.wire.column_message`` and ``lift_arrays`` (what ``LensWidget`` sends).
* **floor**: the bare unembedding of one column, ``[31, d] x [d, V]`` into a preallocated buffer.

Ratios: lens / plain, and lens / (plain + floor) (target ≤ 1.5×). **Bytes per column**: the
column message's JSON plus its binary buffers, as :func:`lens_widget.wire.message_bytes` counts
them (the token table carries only ids the front end has not seen yet, so the first columns
are the largest; median and max are reported).

    nice -n 10 python bench/generate_bench.py [--tokens 32] [--repeats 5] [--threads 1]

Writes ``bench/results/generate_bench.json`` (``--out``) and prints a table.
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

from lens_widget import HookedModel, LogitLens  # noqa: E402
from lens_widget.generation import GeneratedColumn, GenerationProgress  # noqa: E402
from lens_widget.wire import column_message, lift_arrays, message_bytes  # noqa: E402

PROMPT = "The history of the printing press begins in the fifteenth century, when"


@torch.inference_mode()
def plain_steps(hm: HookedModel, prompt_ids: list[int], n: int) -> list[float]:
    """Seconds per cached decoding step of the bare model (greedy), ``n`` steps."""
    model = hm.model
    x = torch.tensor([prompt_ids])
    out = model(input_ids=x, use_cache=True, logits_to_keep=1)
    past, tok = out.cache, int(out.logits[0, -1].argmax())
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = model(input_ids=torch.tensor([[tok]]), cache=past, use_cache=True, logits_to_keep=1)
        past, tok = out.cache, int(out.logits[0, -1].argmax())
        times.append(time.perf_counter() - t0)
    return times


def lens_steps(lens: LogitLens, n: int, wire: bool) -> tuple[list[float], list[int]]:
    """Seconds per ``generate`` step (between progress reports; the first, after the prefill, is
    left out), and with ``wire`` the bytes of each column message."""
    stamps: list[float] = []
    sizes: list[int] = []
    known: set[int] = set()

    def tick(_p: GenerationProgress) -> None:
        stamps.append(time.perf_counter())

    def send(c: GeneratedColumn) -> None:
        msg = column_message({k: v[:, None] for k, v in c.cells.items()}, c.col, c.token_id, c.next_id, c.token_strings, known)
        content, buffers = lift_arrays(msg)
        sizes.append(message_bytes(content, buffers))

    lens.generate(PROMPT, n + 1, eos_token_id=None, progress=tick, callback=send if wire else None)
    return [b - a for a, b in zip(stamps, stamps[1:])], sizes


@torch.inference_mode()
def floor_steps(lens: LogitLens, n_sites: int, n: int) -> list[float]:
    """Seconds of the bare ``[S, d] x [d, V]`` unembedding matmul, ``n`` times."""
    with lens.decoder.loaded():
        w = lens.decoder.raw_weight
        x = torch.randn(n_sites, w.shape[1])
        out = torch.empty(n_sites, w.shape[0])
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            torch.matmul(x, w.T, out=out)
            times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "generate_bench.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    hm = HookedModel.default()
    lens = LogitLens(hm, compile="never")
    prompt_ids = hm.encode(PROMPT).rows()[0]
    n_sites = len(hm.default_sites())
    # warm-up: every variant once
    plain_steps(hm, prompt_ids, 4)
    lens_steps(lens, 4, wire=True)
    floor_steps(lens, n_sites, 4)

    runs: dict[str, list[float]] = {"plain": [], "lens": [], "lens+wire": [], "floor": []}
    sizes: list[int] = []
    for _ in range(args.repeats):
        runs["plain"] += plain_steps(hm, prompt_ids, args.tokens)
        runs["lens"] += lens_steps(lens, args.tokens, wire=False)[0]
        t, s = lens_steps(lens, args.tokens, wire=True)
        runs["lens+wire"] += t
        sizes += s
        runs["floor"] += floor_steps(lens, n_sites, args.tokens)

    med = {k: statistics.median(v) for k, v in runs.items()}
    q = {k: [sorted(v)[len(v) // 10], sorted(v)[(9 * len(v)) // 10]] for k, v in runs.items()}
    out = {
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "model": hm.name,
        "prompt_tokens": len(prompt_ids),
        "new_tokens_per_repeat": args.tokens,
        "repeats": args.repeats,
        "sites": n_sites,
        "vocab": lens.decoder.vocab,
        "k": 10,
        "ms_per_token_median": {k: round(v * 1e3, 3) for k, v in med.items()},
        "ms_per_token_p10_p90": {k: [round(a * 1e3, 3), round(b * 1e3, 3)] for k, (a, b) in q.items()},
        "ratio_lens_to_plain": round(med["lens"] / med["plain"], 3),
        "ratio_lens_to_plain_plus_floor": round(med["lens"] / (med["plain"] + med["floor"]), 3),
        "ratio_lens_wire_to_plain_plus_floor": round(med["lens+wire"] / (med["plain"] + med["floor"]), 3),
        "target_ratio_to_plain_plus_floor": 1.5,
        "bytes_per_column_median": int(statistics.median(sizes)),
        "bytes_per_column_max": int(max(sizes)),
        "bytes_per_column_min": int(min(sizes)),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'variant':<12}{'ms/token':>10}   p10-p90")
    for k in runs:
        print(f"{k:<12}{med[k] * 1e3:>10.2f}   {q[k][0] * 1e3:.2f}-{q[k][1] * 1e3:.2f}")
    print(f"lens/plain {out['ratio_lens_to_plain']}x   lens/(plain+floor) {out['ratio_lens_to_plain_plus_floor']}x (target <= 1.5x)   "
          f"with wire {out['ratio_lens_wire_to_plain_plus_floor']}x")
    print(f"bytes per column: median {out['bytes_per_column_median']}, max {out['bytes_per_column_max']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
