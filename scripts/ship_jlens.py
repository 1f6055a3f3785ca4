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
from pathlib import Path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    path = lens.save_shipped(out, rank, record=record)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, rank {args.rank}, sha256 {sha256(path)[:16]}…)")
    print(JacobianLens.from_shipped(path, hm).describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
