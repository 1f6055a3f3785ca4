"""Command line: ``python -m lens_widget demo`` and ``python -m lens_widget render PROMPT``."""

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
    return p


def layer_table(result, answer_id: int) -> str:
    """Compact per-layer table at the last position: top-1, its probability, the answer's rank."""
    from .sites import site_label

    col = result.position_index(-1)
    answer = result.display(answer_id)
    rows = [f"{'layer':>6}  {'top-1':<18} {'p(top-1)':>8}  {'rank of ' + answer:>16}  {'p(' + answer + ')':>10}"]
    m = result.tracked_index(answer_id)
    for s, site in enumerate(result.sites):
        top = result.display(result.topk_ids[0, s, col, 0])
        if len(top) > 18:
            top = top[:17] + "…"
        rows.append(
            f"{site_label(site):>6}  {top:<18} {result.topk_probs[0, s, col, 0]:8.3f}  "
            f"{int(result.tracked_rank[0, s, col, m]):>16}  {result.tracked_prob[0, s, col, m]:10.4f}"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
        track = [model.tokens.token_id(t) for t in args.track]
        if args.answer is not None:
            answer = model.tokens.token_id(args.answer)
        else:
            answer = int(lens.final_top(args.prompt, 1)[0])
        result = lens.run(args.prompt, k=args.k, track=[answer, *track])
    except (PromptError, TokenLookupError, ValueError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{model.name}: {args.prompt!r}\n")
    print(layer_table(result, answer))
    if not args.no_html:
        from .widget import LensWidget

        widget = LensWidget(result=result)
        path = widget.save_html(Path(args.out))
        print(f"\nwrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser, no kernel needed")
    return 0

