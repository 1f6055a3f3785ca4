"""How good are the lenses on the embedded SmolLM2? Two measures, written to one JSON file.

1. **Per layer, on held-out text** (the corpus's held-out split, which no fit reads): mean
   KL(final ‖ lens) in nats and top-1 agreement with the model's own final prediction, over
   positions ≥ ``--skip-first`` (the J-lens fit leaves the first 16 out), for the logit lens,
   the shipped tuned lens and the Jacobian lens — and, with ``--ranks``, the Jacobian lens
   stored at each rank (float16 SVD factors, exactly what ``scripts/ship_jlens.py`` writes).
2. **Two-hop prompts** (the J-lens paper's kind of evidence): for prompts whose answer needs a
   hidden intermediate (``"The capital of the country where the Eiffel Tower is located is"`` →
   `` France``), at the last position, the first layer at which each lens ranks the intermediate
   token in its top 10, and its best rank over the layers before the last.

    PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/jlens_quality.py --lens FULL.pt [--ranks 32,64,128,576] \
        [--tokens 1024] [--json bench/results/jlens_quality.json]

``--lens`` defaults to the shipped lens (``JacobianLens.default``). The lenses measure different
things (J reads what a layer disposes the model to say at this and later positions, not the next
token only), so agreement with the final next-token distribution is one view, not a verdict.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

#: (prompt, hidden intermediate, what the prompt asks for) — the intermediate is never in the prompt.
TWO_HOP = [
    ("The capital of the country where the Eiffel Tower is located is", " France", " Paris"),
    ("The language spoken in the country whose capital is Berlin is", " Germany", " German"),
    ("The capital of the country where the Colosseum is located is", " Italy", " Rome"),
    ("The capital of the country where the Taj Mahal is located is", " India", " New"),
    ("The currency of the country whose capital is Tokyo is the", " Japan", " yen"),
    ("The capital of the country where the pyramids of Giza stand is", " Egypt", " Cairo"),
    ("The capital of the state where Hollywood is located is", " California", " Sacramento"),
    ("The author of the play about Romeo and Juliet was born in the town of", " Shakespeare", " Stratford"),
]


def first_token(hm: Any, text: str) -> int:
    ids = hm.tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(ids[0])


def per_layer(hm: Any, decs: dict[str, Any], sites: list[str], n_tokens: int, seq_len: int, skip_first: int) -> dict[str, Any]:
    """Mean KL(final ‖ lens) and top-1 agreement per site, over held-out rows of ``seq_len``."""
    from lens_widget.corpus import corpus_texts
    from lens_widget.decoders import Decoder
    from lens_widget.sites import select_matrix
    from lens_widget.tuned_training import token_stream

    logit = Decoder(hm)
    kl = {n: torch.zeros(len(sites), dtype=torch.float64) for n in decs}
    agree = {n: torch.zeros(len(sites), dtype=torch.float64) for n in decs}
    n = 0
    rows = token_stream(hm, corpus_texts("held_out"), seq_len)
    with torch.inference_mode():
        while n < n_tokens:
            row = next(rows, None)
            if row is None:
                break
            select, _ = select_matrix([list(range(len(row)))])
            acts = hm.record(hm.pad([row]), sites, select).acts
            keep = slice(skip_first, None)
            final = logit.logits(acts[sites[-1]][0, keep], sites[-1])
            logp = torch.log_softmax(final, -1)
            p = logp.exp()
            top = final.argmax(-1)
            for name, dec in decs.items():
                for j, s in enumerate(sites):
                    z = dec.logits(acts[s][0, keep], s)
                    logq = torch.log_softmax(z, -1)
                    kl[name][j] += (p * (logp - logq)).sum(-1).sum(dtype=torch.float64)
                    agree[name][j] += (z.argmax(-1) == top).sum()
            n += int(top.shape[0])
            print(f"{n} tokens", file=sys.stderr, flush=True)
    return {"tokens": n, "kl": {k: (v / n).tolist() for k, v in kl.items()}, "top1": {k: (v / n).tolist() for k, v in agree.items()}}


def two_hop(hm: Any, decs: dict[str, Any], sites: list[str]) -> list[dict[str, Any]]:
    """For each :data:`TWO_HOP` prompt and lens: the hidden token's rank at the last position per
    site, the first site (before the last block) where it is in the top 10, and its best rank
    there; and a control: the other prompts' hidden tokens at this prompt (their median best
    rank, and how many reach the top 10) — a lens that ranks every country high on every prompt
    shows "a country is coming", not this prompt's country."""
    from lens_widget import LogitLens

    hidden_ids = [first_token(hm, h) for _, h, _ in TWO_HOP]
    rows = []
    for (prompt, hidden, answer), hid in zip(TWO_HOP, hidden_ids):
        ans = first_token(hm, answer)
        others = [o for o in dict.fromkeys(hidden_ids) if o != hid]
        row: dict[str, Any] = {"prompt": prompt, "hidden": hidden, "hidden_id": hid, "answer": answer, "answer_id": ans, "lenses": {}}
        for name, dec in decs.items():
            r = LogitLens(hm, decoder=dec, compile="never").run(prompt, sites=sites, positions="last", track=[hid, ans, *others], k=1,
                                                                progress=False)
            tracked = [int(t) for t in r.tracked_ids]  # deduplicated: the answer may share the hidden token

            def ranks_of(tid: int) -> list[int]:
                return [int(x) for x in r.tracked_rank[0, :, -1, tracked.index(tid)]]

            ranks = ranks_of(hid)
            before = ranks[:-1]  # every site but the last block (the model's own output, the same for every lens)
            first = next((sites[i] for i, rk in enumerate(before) if rk <= 10), None)
            best = min(range(len(before)), key=lambda i: before[i])
            control = sorted(min(ranks_of(o)[:-1]) for o in others)
            row["lenses"][name] = {"ranks": ranks, "first_top10": first, "best_rank": before[best], "best_site": sites[best],
                                   "answer_ranks": ranks_of(ans), "control_median_best_rank": control[len(control) // 2] if control else None,
                                   "control_in_top10": sum(c <= 10 for c in control), "control_n": len(control)}
            row["final_rank"] = ranks[-1]
            row["final_answer_rank"] = row["lenses"][name]["answer_ranks"][-1]
            row["model_top1"] = hm.tokenizer.decode([int(r.topk_ids[0, -1, -1, 0])])
        rows.append(row)
    return rows


def print_tables(out: dict[str, Any]) -> None:
    names, sites = list(out["kl"]), out["sites"]
    print(f"{'site':>13} " + " ".join(f"{'KL ' + k:>14}" for k in names) + " " + " ".join(f"{'top1 ' + k:>16}" for k in names))
    for j, s in enumerate(sites):
        print(f"{s:>13} " + " ".join(f"{out['kl'][k][j]:14.3f}" for k in names) + " " + " ".join(f"{out['top1'][k][j]:16.3f}" for k in names))
    print("mean over sites but the last:", json.dumps(out["mean"]))
    for row in out["two_hop"]:
        cells = "; ".join(f"{n}: first {v['first_top10'] or 'never'}, best {v['best_rank']} at {v['best_site']} "
                          f"(others: median best {v['control_median_best_rank']}, {v['control_in_top10']}/{v['control_n']} in top 10)"
                          for n, v in row["lenses"].items())
        print(f"{row['prompt']!r} -> {row['hidden']!r} (final rank {row['final_rank']}): {cells}")


def markdown(out: dict[str, Any], lenses: tuple[str, ...] = ("logit", "tuned", "jacobian (shipped)")) -> str:
    """The README's two tables from a result: KL and top-1 per layer, and the two-hop table."""
    have = [n for n in lenses if n in out["kl"]]
    short = {n: n.split(" ")[0].replace("jacobian", "J") for n in have}
    head = "| layer | " + " | ".join(f"KL {short[n]}" for n in have) + " | " + " | ".join(f"top-1 {short[n]}" for n in have) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(have))]
    for j, site in enumerate(out["sites"][:-1]):
        label = "emb" if site == "embed" else site.rsplit("_", 1)[1]
        lines.append(f"| {label} | " + " | ".join(f"{out['kl'][n][j]:.2f}" for n in have) + " | "
                     + " | ".join(f"{out['top1'][n][j]:.3f}" for n in have) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{out['mean'][n]['kl']:.2f}**" for n in have) + " | "
                 + " | ".join(f"**{out['mean'][n]['top1']:.3f}**" for n in have) + " |")
    hop = ["| prompt → hidden token | first in top 10: logit / tuned / J | best rank: logit / tuned / J | J: others in top 10 | final rank |",
           "|---|---|---|---|---|"]
    for row in out["two_hop"]:
        lz = row["lenses"]

        def first(n: str) -> str:
            site = lz[n]["first_top10"]
            return "never" if site is None else ("emb" if site == "embed" else site.rsplit("_", 1)[1])

        hop.append(f"| {row['prompt']!r} → {row['hidden']!r} | {first('logit')} / {first('tuned')} / {first('jacobian')} | "
                   f"{lz['logit']['best_rank']} / {lz['tuned']['best_rank']} / {lz['jacobian']['best_rank']} | "
                   f"{lz['jacobian']['control_in_top10']}/{lz['jacobian']['control_n']} | {row['final_rank']} |")
    return "\n".join(lines) + "\n\n" + "\n".join(hop)


def write_plot(out: dict[str, Any], path: str | None) -> None:
    if path:
        from lens_widget import plots

        plots.save(plots.lens_quality_plot(out, title=f"{out['model']}, held-out text"), path, title="Lens quality by layer")
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="per-layer held-out quality and two-hop ranks of the logit, tuned and Jacobian lenses")
    ap.add_argument("--lens", default=None, help="a Jacobian-lens .pt file for the embedded SmolLM2 (default: the shipped lens)")
    ap.add_argument("--ranks", default="", help="also the lens stored at these ranks (float16 factors), e.g. 32,64,128,576")
    ap.add_argument("--shipped", action="store_true", help="also the shipped lens (JacobianLens.default) beside --lens")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--skip-first", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None, help="only print the README's tables from this result JSON")
    ap.add_argument("--html", default=None, help="also write the per-layer plot (plots.lens_quality_plot) here")
    args = ap.parse_args(argv)
    if args.markdown:
        with open(args.markdown) as f:
            done = json.load(f)
        print(markdown(done))
        write_plot(done, args.html)
        return 0
    torch.set_num_threads(args.threads)

    from lens_widget import HookedModel, JacobianLens, TunedLens
    from lens_widget.decoders import Decoder
    from lens_widget.lowrank import rounded

    t0 = time.perf_counter()
    hm = HookedModel.default()
    jl = JacobianLens.from_pretrained(args.lens, hm) if args.lens else JacobianLens.default(hm)
    decs: dict[str, Any] = {"logit": Decoder(hm), "tuned": TunedLens.default(hm), "jacobian": jl}
    if args.shipped:
        decs["jacobian (shipped)"] = JacobianLens.default(hm)
    for r in [int(x) for x in args.ranks.split(",") if x.strip()]:
        mats: dict[Any, torch.Tensor] = {i: rounded(J, r) for i, J in jl.jacobians.items()}
        if jl.J_embed is not None:
            mats["embed"] = rounded(jl.J_embed, r)
        decs[f"jacobian r{r}"] = JacobianLens(hm, mats)
    sites = jl.supported_sites
    out: dict[str, Any] = {"model": hm.name, "skip_first": args.skip_first, "seq_len": args.seq_len, "sites": sites,
                           "lens": jl.describe(), "lens_fit": jl.metadata.get("fit"), "threads": args.threads}
    out.update(per_layer(hm, decs, sites, args.tokens, args.seq_len, args.skip_first))
    out["mean"] = {k: {"kl": sum(v[:-1]) / (len(sites) - 1), "top1": sum(out["top1"][k][:-1]) / (len(sites) - 1)}
                   for k, v in out["kl"].items()}
    out["two_hop"] = two_hop(hm, {k: decs[k] for k in ("logit", "tuned", "jacobian")}, sites)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print_tables(out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    write_plot(out, args.html)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
