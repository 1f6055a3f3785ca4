"""Exact queries about one cell or one column: what the widget asks when a cell is clicked.

A cell's full-vocabulary detail (top-k, entropy, any tokens' logit, probability and exact
rank), a column's trajectory (tokens along the layers), the final layer's top tokens (for
``track_top``) and the lens's self-check. Each decodes only the rows asked for, through the
decoder; with a remote model (nnsight ``remote=``) the same numbers are computed next to the
model (:func:`lens_widget.sources.intrace.detail`) from an
:class:`~lens_widget.sources.ActivationRef`. New per-cell analyses live beside these, as
functions of (model, decoder, activations).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .decoders import Decoder
from .hooked import HookedModel
from .inputs import Batch
from .reduce import token_stats
from .sites import select_matrix
from .sources import ActivationRef, Work

__all__ = ["cell_detail", "trajectory", "final_top", "check_lens", "remote_detail", "check_portable"]


def check_portable(decoder: Decoder) -> None:
    """Refuse a decoder that cannot run next to a remote model."""
    if not decoder.portable:
        raise ValueError(
            f"the {decoder.name} decodes here, with code of its own; with a remote source "
            "(nnsight remote=True / 'local') only the plain logit lens and lenses that are a matrix per site "
            "(the Jacobian lens: sent by value with the request) run next to the model"
        )


def remote_detail(model: HookedModel, decoder: Decoder, batch: Batch, sites: Sequence[str], positions: torch.Tensor, n: int,
                  ids: torch.Tensor) -> dict[str, Any]:
    """Full-vocabulary statistics of ``sites`` at one position per prompt, computed next to
    the model (:func:`lens_widget.sources.intrace.detail`)."""
    check_portable(decoder)
    select = positions.reshape(-1, 1).long()
    job = {"sites": list(sites), "n": int(n), "ids": ids.long(), "maps": decoder.in_trace_maps(list(sites))}
    work: Work[dict[str, Any]] = Work(None, "detail", job, lambda res: res)
    return model.source.reduce(batch, list(sites), select, work)


def final_top(model: HookedModel, decoder: Decoder, batch: Any, n: int) -> torch.Tensor:
    """Ids of the final layer's top-``n`` tokens at each prompt's last position, ``[B * n]``."""
    batch = model.as_batch(batch)
    final_site = model.final_site
    if model.source.remote:
        res = remote_detail(model, decoder, batch, [final_site], batch.lengths - 1, n, torch.empty(0, dtype=torch.long))
        return res["top_ids"].reshape(-1).cpu()
    acts = model.record(batch, [final_site], (batch.lengths - 1)[:, None]).acts
    z = decoder.logits(acts[final_site][:, 0], final_site)
    return torch.topk(z, min(n, z.shape[-1]), dim=-1).indices.reshape(-1).cpu()


def _detail_dict(top_ids: torch.Tensor, top_logits: torch.Tensor, lse: torch.Tensor, entropy: float, ids: list[int],
                 logits: torch.Tensor, ranks: torch.Tensor) -> dict[str, Any]:
    return {
        "top_ids": top_ids.cpu().numpy().astype(np.int32),
        "top_logits": top_logits.cpu().numpy().astype(np.float32),
        "top_probs": (top_logits - lse).exp().cpu().numpy().astype(np.float32),
        "entropy": float(entropy),
        "token_stats": [
            {"id": int(t), "logit": float(logits[j]), "prob": float((logits[j] - lse).exp()), "rank": int(ranks[j])}
            for j, t in enumerate(ids)
        ],
    }


@torch.inference_mode()
def cell_detail(model: HookedModel, decoder: Decoder, h: Any, site: str, k: int = 50, token_ids: Sequence[int] = ()) -> dict[str, Any]:
    """Full-vocabulary detail of one residual vector ``h [d]`` of ``site``: top-k, entropy,
    and the logit, probability and exact rank of any tokens. ``h`` may be an
    :class:`~lens_widget.sources.ActivationRef` (a remote model's row): the source then
    computes the same numbers next to the model."""
    ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    if isinstance(h, ActivationRef):
        res = remote_detail(model, decoder, h.batch, [site], torch.tensor([h.position]), int(k), ids)
        return _detail_dict(res["top_ids"][0], res["top_logits"][0], res["lse"][0], float(res["entropy"][0]), ids.tolist(),
                            res["logits"][0], res["ranks"][0])
    z = decoder.logits(h[None], site)
    top = torch.topk(z[0], min(int(k), z.shape[-1]))
    st = token_stats(z, ids)
    lse = torch.logsumexp(z[0], -1)
    return _detail_dict(top.indices, top.values, lse, float(st["entropy"][0]), ids.tolist(), st["logits"][0], st["ranks"][0])


@torch.inference_mode()
def trajectory(model: HookedModel, decoder: Decoder, column: dict[str, Any], sites: Sequence[str], token_ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Probability, logit and exact rank of ``token_ids`` at every site of one column
    (``column[site]`` is that position's residual vector): ``[S, M]`` arrays."""
    ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    refs = [column[s] for s in sites]
    if refs and isinstance(refs[0], ActivationRef):  # one trace: every site of the column, next to the model
        res = remote_detail(model, decoder, refs[0].batch, list(sites), torch.tensor([refs[0].position]), 0, ids)
        probs, logits, ranks = (res["logits"] - res["lse"][:, None]).exp(), res["logits"], res["ranks"]
    else:
        with decoder.loaded():
            z = torch.cat([decoder.logits(column[s][None], s) for s in sites])
        st = token_stats(z, ids)
        probs, logits, ranks = st["probs"], st["logits"], st["ranks"]
    return {
        "probs": probs.cpu().numpy().astype(np.float32),
        "logits": logits.cpu().numpy().astype(np.float32),
        "ranks": ranks.cpu().numpy().astype(np.int32),
    }


@torch.inference_mode()
def check_lens(model: HookedModel, decoder: Decoder, prompt: str = "The capital of France is") -> float:
    """max |lens(last block) - model logits| over the prompt's positions (float32 ≈ 1e-5)."""
    batch = model.encode(prompt)
    select, _ = select_matrix([list(range(int(batch.lengths[0])))])
    last = model.final_site
    rec = model.record(batch, [last], select, want_logits=True)
    assert rec.logits is not None
    lens_logits = decoder.logits(rec.acts[last][0], last)
    return float((lens_logits - rec.logits[0].to(lens_logits.device)).abs().max())
