"""Turn a full (float32, published-schema ``.pt``) Jacobian-lens fit of the embedded SmolLM2 into
the shipped file ``lens_widget/lenses/smollm2-135m-instruct/jacobian_lens.safetensors``: every
``J_l`` factored by SVD at ``--rank`` (or kept whole with ``--rank full``) in float16, the fit's
record (command, seed, prompts, tokens, environment) and this conversion's (source file, its
sha256, the command) in the metadata. Deterministic: the same input gives the same bytes (SVD
in float64 on one thread).

    PYTHONPATH=. python scripts/ship_jlens.py --full /work/jfit/SmolLM2-135M-Instruct_jacobian_lens_full.pt --rank 128

Which rank: ``scripts/jlens_quality.py --ranks 32,64,128,full`` measures what each costs.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import warnings
from pathlib import Path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def held_out_check(hm, lens, n_tokens: int = 224, seq_len: int = 128, skip_first: int = 16) -> dict:
    """What the stored lens does here, under this process's transformers and torch: mean
    KL(final ‖ lens) over every site before the last on ``n_tokens`` held-out tokens (rows of
    ``seq_len``, positions ≥ ``skip_first``; ``jlens_quality.per_layer``), beside the logit lens's.
    A lens whose numerics no longer match the model (a library fix changed the forward) would read
    no better than the logit lens: refused."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from jlens_quality import per_layer

    from lens_widget.decoders import Decoder
    from lens_widget.lens_files import lens_environment

    sites = hm.site_names(None)
    got = per_layer(hm, {"logit lens": Decoder(hm), "J lens": lens}, sites, n_tokens, seq_len, skip_first)
    mean = {name: round(sum(kl[:-1]) / (len(sites) - 1), 4) for name, kl in got["kl"].items()}
    if not mean["J lens"] < mean["logit lens"]:
        raise SystemExit(f"the stored lens reads no better than the logit lens here ({mean}): mismatched, not shipped")
    return {"environment": lens_environment(), "tokens": got["tokens"], "mean_kl": mean}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", required=True, type=Path, help="the full fit (.pt, published schema + lens_widget metadata)")
    ap.add_argument("--rank", required=True, help="an int, or 'full' (float16, no factoring)")
    ap.add_argument("--out", type=Path, default=None, help="default: the shipped file in the package")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from lens_widget import HookedModel, JacobianLens
    from lens_widget.jacobian_lens import SHIPPED_JLENS_FILE

    rank = None if args.rank == "full" else int(args.rank)
    out = args.out or SHIPPED_JLENS_FILE
    hm = HookedModel.default()
    lens = JacobianLens.from_pretrained(args.full, hm)
    record = {"source": args.full.name, "source_sha256": sha256(args.full),
              "command": f"python scripts/ship_jlens.py --full {args.full.name} --rank {args.rank}"}
    tmp = out.with_name(out.name + ".unchecked")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fit's versions may differ from these: the check below is the point
        shipped = JacobianLens.from_shipped(lens.save_shipped(tmp, rank, record=record), hm)
    tmp.unlink()
    record["checked"] = held_out_check(hm, shipped)
    print(f"checked: {record['checked']}")
    path = lens.save_shipped(out, rank, record=record)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, rank {args.rank}, sha256 {sha256(path)[:16]}…)")
    print(JacobianLens.from_shipped(path, hm).describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
