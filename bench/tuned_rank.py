"""How small can the shipped tuned lens be? Held-out KL of a full-rank lens and of its SVD
truncations (``lens_widget.lowrank.truncate``: rank r, float16, exactly what ships) on the
embedded SmolLM2-135M.

Selection text: the corpus's held-out split read from its *last* document backwards, so the
tokens that pick the rank are not the ones ``bench/tuned_bench.py`` reports on (it reads the
held-out split from the front).

    nice -n 10 python bench/tuned_rank.py --lens DIR [--ranks 8,16,32,48] [--tokens 1024]

Writes ``bench/results/tuned_rank.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lens_widget import HookedModel, TunedLens  # noqa: E402
from lens_widget.corpus import corpus_texts  # noqa: E402
from lens_widget.lowrank import truncate  # noqa: E402
from lens_widget.tuned_training import held_out_kl  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lens", action="append", required=True, metavar="DIR", help="full-rank lens folder(s), tuned-lens format")
    ap.add_argument("--compare", action="append", default=[], metavar="DIR", help="other lens folder(s), full rank only")
    ap.add_argument("--ranks", default="8,16,32,48")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "tuned_rank.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hm = HookedModel.default()
    decoders = {"logit lens": None}
    for d in args.compare:
        decoders[f"{Path(d).name} full"] = TunedLens.from_pretrained(d, hm)
    for d in args.lens:
        full = TunedLens.from_pretrained(d, hm)
        name = Path(d).name
        decoders[f"{name} full"] = full
        for r in (int(x) for x in args.ranks.split(",")):
            decoders[f"{name} rank {r}"] = truncate(full, r)
    t = time.perf_counter()
    kl = held_out_kl(hm, decoders, corpus_texts("held_out")[::-1], max_tokens=args.tokens, progress=True)
    kl["seconds"] = time.perf_counter() - t
    logit = kl["kl"]["logit lens"][:-1]
    kl["summary"] = {}
    for name, curve in kl["kl"].items():
        c = curve[:-1]
        s = {"mean": sum(c) / len(c), "ratio_of_means": sum(c) / sum(logit), "worst_layer_ratio": max(a / b for a, b in zip(c, logit))}
        kl["summary"][name] = s
        print(f"{name:<24} mean {s['mean']:7.3f}  ratio {s['ratio_of_means']:.3f}  worst layer ratio {s['worst_layer_ratio']:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(kl, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
