"""Command line: ``python -m lens_widget demo``, ``python -m lens_widget render PROMPT`` and
``python -m lens_widget train-tuned-lens --out DIR`` and ``python -m lens_widget fit-jacobian-lens --out FILE``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

DEMO_PROMPT = "The capital of France is"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lens_widget",
        description="Logit lens of a causal LM: a layer-by-layer table in the terminal and a standalone HTML widget.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, out_default: str) -> None:
        sp.add_argument("--out", default=out_default, help=f"HTML file to write (default: {out_default})")
        sp.add_argument("--k", type=int, default=10, help="top tokens kept per cell (default: 10)")
        sp.add_argument("--answer", default=None, help="token whose rank the table shows (default: the final top-1)")
        sp.add_argument("--track", action="append", default=[], metavar="TOKEN", help="also track this token (repeatable)")
        sp.add_argument("--no-html", action="store_true", help="print the table only")

    demo = sub.add_parser("demo", help=f"the embedded SmolLM2-135M on {DEMO_PROMPT!r}")
    common(demo, "lens_demo.html")
    demo.add_argument("--prompt", default=DEMO_PROMPT, help="prompt (default: %(default)r)")

    render = sub.add_parser("render", help="any model and prompt")
    render.add_argument("prompt", help="the prompt text")
    render.add_argument("--model", default=None, help="hub name or local folder (default: the embedded SmolLM2)")
    render.add_argument("--gguf-file", default=None, help="GGUF file name inside --model's folder")
    render.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weights dtype")
    render.add_argument("--device", default=None, help="torch device, e.g. cuda:0 (default: cpu)")
    common(render, "lens.html")

    train = sub.add_parser("train-tuned-lens", help="train a tuned lens (tuned-lens's recipe) and save it in tuned-lens's format")
    train.add_argument("--out", required=True, help="folder to write config.json + params.pt (+ training.json) to")
    train.add_argument("--model", default=None, help="hub name or local folder (default: the embedded SmolLM2)")
    train.add_argument("--text", action="append", default=[], metavar="FILE",
                       help="training text: .txt (one document per blank-line-separated paragraph) or .jsonl "
                            "(--column field); repeatable (default: the Debian corpus's training split, see lens_widget.corpus)")
    train.add_argument("--column", default="text", help="field of a .jsonl line (default: text)")
    train.add_argument("--steps", type=int, default=100, help="optimizer steps (default: 100)")
    train.add_argument("--tokens-per-step", type=int, default=512, help="tokens per step (default: 512)")
    train.add_argument("--seq-len", type=int, default=256, help="tokens per row (default: 256)")
    train.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"], help="sgd (Nesterov, the recipe) or adam")
    train.add_argument("--lr", type=float, default=None, help="learning rate (default: 1.0 x (1 - momentum) for sgd, 1e-3 for adam)")
    train.add_argument("--weight-decay", type=float, default=1e-3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--init", default="zeros", choices=["zeros", "regression"],
                       help="zeros (tuned-lens) or a least-squares warm start (see regression_init)")
    train.add_argument("--init-tokens", type=int, default=32768, help="tokens for --init regression (default: 32768)")
    train.add_argument("--start", default=None, metavar="DIR", help="start from this lens folder (tuned-lens format) instead of --init")
    train.add_argument("--save-init", default=None, metavar="DIR", help="also save the warm start alone (tuned-lens format)")
    train.add_argument("--checkpoint", default=None, help="checkpoint file (resumed from when it exists)")
    train.add_argument("--checkpoint-every", type=int, default=10)
    train.add_argument("--stop-after", type=int, default=None, help="stop after this many steps in this call")
    train.add_argument("--eval-tokens", type=int, default=0, help="held-out tokens for a KL table at the end (Debian corpus; default: none)")
    train.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")

    jl = sub.add_parser("fit-jacobian-lens", help="fit a Jacobian lens (batched VJPs) and save it in the published .pt schema")
    jl.add_argument("--out", required=True, help="the .pt file to write ({'J': {layer: [d, d]}, ...} + metadata)")
    jl.add_argument("--model", default=None, help="hub name or local folder (default: the embedded SmolLM2)")
    jl.add_argument("--text", action="append", default=[], metavar="FILE",
                    help="prompts: .txt (one per blank-line-separated paragraph) or .jsonl (--column field); repeatable "
                         "(default: the Debian corpus's training split, see lens_widget.corpus)")
    jl.add_argument("--column", default="text", help="field of a .jsonl line (default: text)")
    jl.add_argument("--prompts", type=int, default=100, help="prompts to average over (default: 100)")
    jl.add_argument("--probes", type=int, default=None,
                    help="VJPs per prompt for the unbiased random-projection estimator (default: exact, d per prompt)")
    jl.add_argument("--probe-batch", type=int, default=32, help="cotangents per backward pass (default: 32)")
    jl.add_argument("--seq-len", type=int, default=128, help="tokens per prompt at most (default: 128)")
    jl.add_argument("--skip-first", type=int, default=16, help="leading positions left out (default: 16)")
    jl.add_argument("--pack", action="store_true",
                    help="join the texts (end-of-text between) and cut them into prompts of exactly --seq-len tokens "
                         "(the paper's fixed-length sequences) instead of one prompt per text")
    jl.add_argument("--no-embed", action="store_true", help="do not fit J for the embeddings")
    jl.add_argument("--seed", type=int, default=0)
    jl.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="stored dtype of J")
    jl.add_argument("--checkpoint", default=None, help="checkpoint file (resumed from when it exists)")
    jl.add_argument("--checkpoint-every", type=int, default=1)
    jl.add_argument("--stop-after", type=int, default=None, help="stop after this many prompts in this call")
    jl.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return p


def layer_table(result, answer_id: int) -> str:
    """Compact per-layer table at the last position: top-1, its probability, the answer's rank."""
    return lenses_table({"": result}, answer_id)


def lenses_table(results, answer_id: int) -> str:
    """Per-layer table at the last position, one block of columns per lens side by side
    (``{label: LensResult}`` over the same sites): top-1, its probability, the answer's rank
    and probability; a heading line names the lenses when there are several or they are named."""
    from .sites import site_label

    first = next(iter(results.values()))
    answer = first.display(answer_id)
    rank_h, prob_h = f"rank {answer}", f"p({answer})"
    wr, wp = max(6, len(rank_h)), max(8, len(prob_h))
    width = 16 + 1 + 8 + 2 + wr + 2 + wp
    rows = []
    if any(results):
        rows.append(f"{'':>6}  " + " | ".join(f"{label:<{width}}" for label in results).rstrip())
    rows.append(f"{'layer':>6}  " + " | ".join(f"{'top-1':<16} {'p(top-1)':>8}  {rank_h:>{wr}}  {prob_h:>{wp}}" for _ in results))
    cells = []
    for r in results.values():
        col, m = r.position_index(-1), r.tracked_index(answer_id)
        cells.append((r, col, m))
    for s, site in enumerate(first.sites):
        parts = []
        for r, col, m in cells:
            top = r.display(r.topk_ids[0, s, col, 0])
            if len(top) > 16:
                top = top[:15] + "…"
            parts.append(f"{top:<16} {r.topk_probs[0, s, col, 0]:8.3f}  {int(r.tracked_rank[0, s, col, m]):>{wr}}  {r.tracked_prob[0, s, col, m]:{wp}.4f}")
        rows.append(f"{site_label(site):>6}  " + " | ".join(parts))
    if len(results) > 1:
        firsts = []
        for label, r in results.items():
            f = r.first_layer(answer_id)
            firsts.append(f"{label}: {'never' if f is None else site_label(r.sites[f])}")
        rows.append(f"\n{answer} is top-1 from layer  " + ",  ".join(firsts))
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "train-tuned-lens":
        return _train_tuned_lens(args)
    if args.command == "fit-jacobian-lens":
        return _fit_jacobian_lens(args, argv)
    if args.k < 1 or args.k > 200:
        print("error: --k must be between 1 and 200", file=sys.stderr)
        return 2
    import torch

    from .engine import LogitLens
    from .hooked import HookedModel
    from .inputs import PromptError
    from .tokens import TokenLookupError

    try:
        if args.command == "demo" or args.model is None:
            print("loading the embedded SmolLM2-135M-Instruct …", file=sys.stderr)
            model = HookedModel.default()
        else:
            print(f"loading {args.model} …", file=sys.stderr)
            model = HookedModel.from_pretrained(
                args.model, gguf_file=args.gguf_file, dtype=getattr(torch, args.dtype), device=args.device
            )
        lens = LogitLens(model)
        decoders = {"logit lens": None}
        if args.command == "demo" or args.model is None:
            # the embedded model ships a tuned and a Jacobian lens: all three, from one recorded pass
            from .jacobian_lens import JacobianLens
            from .tuned_lens import TunedLens

            decoders["tuned lens"] = TunedLens.default(model)
            decoders["J lens"] = JacobianLens.default(model)
        track = [model.tokens.token_id(t) for t in args.track]
        if args.answer is not None:
            answer = model.tokens.token_id(args.answer)
        else:
            answer = int(lens.final_top(args.prompt, 1)[0])
        results = lens.run(args.prompt, k=args.k, track=[answer, *track], decoders=decoders)
    except (PromptError, TokenLookupError, ValueError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{model.name}: {args.prompt!r} (last position)\n")
    print(lenses_table(results, answer))
    if not args.no_html:
        from .widget import LensWidget

        widget = LensWidget(result=results)
        path = widget.save_html(Path(args.out))
        print(f"\nwrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser, no kernel needed")
    return 0



def _read_texts(paths: Sequence[str], column: str):
    import json

    for path in paths:
        p = Path(path)
        if p.suffix == ".jsonl":
            with p.open(encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        yield json.loads(line)[column]
        else:
            yield from (para for para in p.read_text(encoding="utf-8", errors="replace").split("\n\n") if para.strip())


def _train_tuned_lens(args: argparse.Namespace) -> int:
    import json
    import time

    import torch

    from .corpus import corpus_texts
    from .hooked import HookedModel
    from .tuned_training import TrainingLog, held_out_kl, regression_init, train_tuned_lens

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = HookedModel.default() if args.model is None else HookedModel.from_pretrained(args.model)
        if args.text:
            texts = lambda: _read_texts(args.text, args.column)  # noqa: E731
        else:
            texts = lambda: corpus_texts("train", seed=args.seed)  # noqa: E731
        t0 = time.time()
        from .tuned_lens import TunedLens

        lens = TunedLens(model)
        if args.start:
            lens = TunedLens.from_pretrained(args.start, model)
        elif args.init == "regression":
            lens = regression_init(model, texts(), tokens=args.init_tokens, seq_len=args.seq_len, lens=lens)
            if args.save_init:
                lens.save(args.save_init)
        t_init = time.time() - t0
        log = TrainingLog()
        lens = train_tuned_lens(
            model, texts(), lens=lens, steps=args.steps, tokens_per_step=args.tokens_per_step, seq_len=args.seq_len,
            optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
            checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every, stop_after=args.stop_after, log=log,
        )
        seconds = time.time() - t0
        out = lens.save(args.out)
        report = {
            "argv": sys.argv,
            "args": vars(args), "model": model.name, "steps": lens.trained_steps,
            "init_seconds": t_init, "seconds": seconds, "log": [{k: r[k] for k in ("step", "loss", "lr", "tokens", "seconds")} for r in log],
        }
        if args.eval_tokens:
            report["held_out"] = held_out_kl(model, {"logit lens": None, "tuned lens": lens}, corpus_texts("held_out"),
                                             seq_len=args.seq_len, max_tokens=args.eval_tokens, progress=True)
        (out / "training.json").write_text(json.dumps(report, indent=1))
    except (ValueError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({lens.trained_steps} steps, {seconds:.0f} s)")
    return 0


def _fit_jacobian_lens(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    import shlex

    import torch

    from .hooked import HookedModel
    from .jacobian_lens import fit_jacobian_lens

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python -m lens_widget " + shlex.join(list(sys.argv[1:] if argv is None else argv))
    try:
        model = HookedModel.default() if args.model is None else HookedModel.from_pretrained(args.model)
        if args.text:
            texts = _read_texts(args.text, args.column)
        else:
            from .corpus import corpus_texts

            texts = corpus_texts("train", seed=args.seed)
        if args.pack:
            from .tuned_training import token_stream

            texts = token_stream(model, texts, args.seq_len, args.column)
        lens = fit_jacobian_lens(
            model, texts, probes=args.probes, probe_batch=args.probe_batch, max_seq_len=args.seq_len,
            skip_first=args.skip_first, max_prompts=args.prompts, embed=not args.no_embed, seed=args.seed,
            checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every, stop_after=args.stop_after,
            command=command,
        )
        out = lens.save(args.out, dtype=getattr(torch, args.dtype))
    except (ValueError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fit = lens.metadata["fit"]
    print(f"wrote {out} ({fit['n_prompts']} prompts, {fit['n_tokens']} tokens, {fit['seconds']:.0f} s)")
    return 0
