"""Per-layer quality of the logit, tuned and Jacobian lenses on held-out text (the Debian
corpus's held-out split): mean KL(final ‖ lens) in nats and top-1 agreement with the model's own
final prediction, over positions ≥ ``--skip-first`` (the J-lens fit leaves the first 16 out).

    PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/jlens_quality.py --lens FILE [--tokens 2048] [--json OUT]

The lenses measure different things (J reads what a layer disposes the model to say at this and
later positions, not the next token only), so agreement with the final next-token distribution
is one view, not a verdict.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lens", required=True, help="a Jacobian-lens .pt file for the embedded SmolLM2")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--skip-first", type=int, default=16)
    ap.add_argument("--no-tuned", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from lens_widget import HookedModel, JacobianLens, TunedLens
    from lens_widget.corpus import corpus_texts
    from lens_widget.decoders import Decoder
    from lens_widget.tuned_training import _record, token_stream

    hm = HookedModel.default()
    decs = {"logit": Decoder(hm)}
    if not args.no_tuned:
        decs["tuned"] = TunedLens.default(hm)
    decs["jacobian"] = JacobianLens.from_pretrained(args.lens, hm)
    sites = ["embed"] + [f"resid_out_{i}" for i in range(hm.num_layers)]
    kl = {n: torch.zeros(len(sites), dtype=torch.float64) for n in decs}
    agree = {n: torch.zeros(len(sites), dtype=torch.float64) for n in decs}
    n = 0
    rows = token_stream(hm, corpus_texts("held_out"), args.seq_len)
    with torch.inference_mode():
        while n < args.tokens:
            row = next(rows, None)
            if row is None:
                break
            acts = _record(hm, [row])
            keep = slice(args.skip_first, None)
            final = decs["logit"].logits(acts[sites[-1]][0, keep], sites[-1])
            logp = torch.log_softmax(final, -1)
            top = final.argmax(-1)
            for name, dec in decs.items():
                for j, s in enumerate(sites):
                    z = dec.logits(acts[s][0, keep], s)
                    logq = torch.log_softmax(z, -1)
                    kl[name][j] += (logp.exp() * (logp - logq)).sum(-1).sum(dtype=torch.float64)
                    agree[name][j] += (z.argmax(-1) == top).sum()
            n += top.shape[0]
            print(f"{n} tokens", file=sys.stderr, flush=True)
    out = {"model": hm.name, "tokens": n, "skip_first": args.skip_first, "sites": sites,
           "kl": {k: (v / n).tolist() for k, v in kl.items()}, "top1": {k: (v / n).tolist() for k, v in agree.items()},
           "lens_fit": decs["jacobian"].metadata.get("fit")}
    names = list(decs)
    print(f"{'site':>13} " + " ".join(f"{'KL ' + k:>12}" for k in names) + " " + " ".join(f"{'top1 ' + k:>14}" for k in names))
    for j, s in enumerate(sites):
        print(f"{s:>13} " + " ".join(f"{out['kl'][k][j]:12.3f}" for k in names) + " "
              + " ".join(f"{out['top1'][k][j]:14.3f}" for k in names))
    means = {k: sum(out["kl"][k][:-1]) / (len(sites) - 1) for k in names}
    print("mean KL over sites but the last:", {k: round(v, 3) for k, v in means.items()})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
