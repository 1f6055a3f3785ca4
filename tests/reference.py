"""An independent float64 logit lens: Hugging Face's ``hidden_states``, the model's own final norm
and unembedding applied by hand, every statistic from full float64 distributions (no clamps,
no zeroing, no chunking). What the engine's numbers are checked against."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from lens_widget.arch import get_path


def naive_lens(hm, prompt: Any, positions: Sequence[int] | None = None, matmul_dtype: torch.dtype = torch.float64) -> tuple[np.ndarray, list[str]]:
    """float64 logits ``[sites, T, V]`` (default sites) of one prompt (text, or a tokenizer's
    ``return_tensors="pt"`` output), at ``positions`` (default: all). ``matmul_dtype`` float32
    keeps a 262k-vocabulary unembedding out of float64 (the logits are still float64 after)."""
    enc = hm.tokenizer(prompt, return_tensors="pt") if isinstance(prompt, str) else prompt
    with torch.no_grad():
        out = hm.model(**enc, output_hidden_states=True)
    hs = out.hidden_states  # embeddings, block 0 .. block L-2 outputs, then the normed last
    model, arch = hm.model, hm.arch
    norm = get_path(model, arch.final_norm)
    post = getattr(get_path(model, arch.post_norm.rsplit(".", 1)[0]), arch.post_norm.rsplit(".", 1)[1], None) if arch.post_norm else None
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    sel = slice(None) if positions is None else list(positions)
    weight = head.weight.detach().to(matmul_dtype)
    rows = []
    for h in hs[:-1]:
        with torch.no_grad():
            x = norm(h[0, sel].detach())
            x = post(x) if post is not None else x
            z = (x.to(matmul_dtype) @ weight.T).double()
        if getattr(head, "bias", None) is not None:
            z = z + head.bias.detach().double()
        if cap:
            z = torch.tanh(z / cap) * cap
        rows.append(z)
    rows.append(out.logits[0, sel].double())  # the model's own final logits
    return torch.stack(rows).numpy(), hm.default_sites()


def stats(logits: np.ndarray) -> dict[str, np.ndarray]:
    """float64 ``logp``, ``p``, ``entropy`` and ``kl`` = KL(last site ‖ site) of ``[S, T, V]``
    logits, unclamped."""
    logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    p = np.exp(logp)
    entropy = -(p * logp).sum(-1)
    kl = (p[-1:] * (logp[-1:] - logp)).sum(-1)
    return {"logp": logp, "p": p, "entropy": entropy, "kl": kl}


def rank_band(z: np.ndarray, tid: int, tol: float = 1e-4) -> tuple[int, int]:
    """The bounds on the exact rank (1 + the number of strictly larger logits) of ``tid`` in the
    float64 logits ``z [V]`` that an engine in float32 may report: ties within ``tol`` may go
    either way. The token itself is never counted, so a rank one too large falls outside."""
    others = np.arange(z.shape[-1]) != tid
    return 1 + int((z > z[tid] + tol).sum()), 1 + int(((z > z[tid] - tol) & others).sum())
