"""Attribution of one cell on the embedded SmolLM2-135M (lens_widget.attribution), one torch thread.

Cases (each ``--repeats`` times, interleaved with a plain forward pass of the same prompt so a
noisy neighbour on the shared cores hits both alike): the final layer's last cell of
"The capital of France is" to " Paris" (logit lens and the shipped tuned lens), a middle layer (the pass stops after it),
a logit difference (" Paris" − " London"), and the last cell of a ``--tokens``-token prompt.
Reports the median, min and max seconds, the ratio to one forward pass of the same prompt
(``use_cache=False``, ``logits_to_keep=1``: what the lens's own pass costs) and the peak RSS growth of one attribution
(``tests/memory.py``'s meter: VmHWM reset before it).

    nice -n 10 python bench/attribution_bench.py [--repeats 5] [--tokens 512]

Writes ``bench/results/attribution_bench.json`` (``--out``) and prints a table.
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
sys.path.insert(0, str(ROOT / "tests"))

from lens_widget import HookedModel, LogitLens, TunedLens  # noqa: E402
from lens_widget.corpus import corpus_texts  # noqa: E402
from lens_widget.tuned_training import token_stream  # noqa: E402
from memory import MiB, measure_peak  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "attribution_bench.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    hm = HookedModel.default()
    logit = LogitLens(hm, compile="never")
    tuned = logit.with_decoder(TunedLens.default(hm))
    n = hm.num_layers
    short = "The capital of France is"
    long_ids = next(token_stream(hm, corpus_texts("held_out"), args.tokens))
    long_ids = [int(i) for i in (long_ids.tolist() if hasattr(long_ids, "tolist") else long_ids)][: args.tokens]
    cases = {
        "final layer, ' Paris' (logit lens)": (logit, short, f"resid_out_{n - 1}", -1, " Paris"),
        f"layer {n - 2}, ' Paris' (tuned lens)": (tuned, short, f"resid_out_{n - 2}", -1, " Paris"),
        "layer 14, ' Paris' (logit lens)": (logit, short, "resid_out_14", -1, " Paris"),
        "final layer, ' Paris' − ' London'": (logit, short, f"resid_out_{n - 1}", -1, (" Paris", " London")),
        f"final layer, last of {len(long_ids)} tokens": (logit, long_ids, f"resid_out_{n - 1}", -1, None),
    }

    def forward(prompt) -> None:
        batch = hm.as_batch(prompt)
        with torch.inference_mode():
            hm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, logits_to_keep=1)

    for lens, prompt, site, pos, tok in cases.values():  # warm-up (first-call allocations, tuned-lens load)
        lens.attribute(prompt, site, pos, tok)
        forward(prompt)
    rows = {}
    for name, (lens, prompt, site, pos, tok) in cases.items():
        times, fwd = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            df = lens.attribute(prompt, site, pos, tok)
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            forward(prompt)
            fwd.append(time.perf_counter() - t0)
        with measure_peak() as peak:
            lens.attribute(prompt, site, pos, tok)
        rows[name] = {
            "site": site, "tokens_in_prompt": int(hm.as_batch(prompt).lengths[0]), "rows": len(df),
            "seconds_median": statistics.median(times), "seconds_min": min(times), "seconds_max": max(times),
            "forward_seconds_median": statistics.median(fwd),
            "ratio_to_forward": statistics.median(times) / statistics.median(fwd),
            "peak_rss_growth_mib": peak.growth / MiB,
            "logit": df.attrs["logit"], "error": df.attrs["error"], "resid_error": df.attrs["resid_error"],
        }
    out = {"machine": platform.processor() or platform.machine(), "threads": args.threads, "model": hm.name,
           "torch": torch.__version__, "repeats": args.repeats, "cases": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"{'case':<44} {'median s':>9} {'min':>7} {'max':>7} {'fwd s':>7} {'ratio':>6} {'peak MiB':>9} {'error':>9}")
    for name, r in rows.items():
        print(f"{name:<44} {r['seconds_median']:9.3f} {r['seconds_min']:7.3f} {r['seconds_max']:7.3f} {r['forward_seconds_median']:7.3f} "
              f"{r['ratio_to_forward']:6.2f} {r['peak_rss_growth_mib']:9.1f} {r['error']:9.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
