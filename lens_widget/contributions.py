"""The arithmetic of a cell's attribution: recorded rows and weights -> one contribution per part.

:mod:`lens_widget.attribution` records the rows with local hooks and calls these functions; the
in-trace lens (:mod:`lens_widget.sources.intrace`, shipped by value to NDIF with this module)
calls the same functions next to a remote model, so only the small table comes back. Torch only
(and :mod:`lens_widget.unembed`): plain functions over tensors and callables, no knowledge of
where the weights live (local modules, accelerate offload, or an nnsight trace's envoys).

The parts are the residual's summands in float64: the embedding, each head's
``z_h @ W_O[:, h-slice]ᵀ`` (through an attention post-norm with its scale frozen, where the block
has one), each attention output bias, each MLP's output. The readout is the decoder's map from
the residual to the asked tokens' logits with the final norm's scale frozen at the cell: a row
``v`` per token, so ``part · v`` is that part's contribution; what is constant is a row of its
own (see :func:`readout`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .unembed import NormParts, Unembed

__all__ = ["frozen_norm", "frozen_linear", "split_residual", "readout", "table", "attribute_rows"]

F64 = torch.float64


def frozen_norm(norm: Any, x: torch.Tensor, in_dtype: torch.dtype) -> NormParts:
    """The norm module (or envoy) ``norm`` at one input row ``x [d]`` as an affine map with the
    row's scale frozen (probed off the module, as :meth:`Unembed.norm_parts` does)."""
    return Unembed(norm, None, None, in_dtype, x.device, 0).norm_parts(x[None].float())


def frozen_linear(parts: NormParts, x: torch.Tensor) -> torch.Tensor:
    """The linear part of a frozen norm applied to rows ``x [n, d]`` (float64, shift left out)."""
    g, s = parts.gain.to(F64).to(x.device), parts.scale.to(F64).reshape(-1).to(x.device)
    c = x - x.mean(-1, keepdim=True) if parts.centred else x
    return g * c / s


def split_residual(rows: dict[str, torch.Tensor], layers: list[int], mlps: list[int], n_heads: int,
                   weights: Callable[[int], tuple[torch.Tensor, torch.Tensor | None, NormParts | None]]
                   ) -> tuple[list[str], list[tuple[int, int, str]], torch.Tensor]:
    """The parts of a residual vector: ``(names, (layer, head, kind) per part, X [n, d] float64
    on the CPU)``.

    ``rows``: ``"embed"`` (when the embedding is a part), ``f"z{l}"`` (the attention output
    projection's input, ``[n_heads * d_head]``) for ``l`` in ``layers``, ``f"mlp{l}"`` for ``l``
    in ``mlps``. ``weights(l)``: layer ``l``'s ``W_O`` as ``[d_model, n_heads * d_head]``, its
    bias (or ``None``) and its attention post-norm frozen at the cell (or ``None``)."""
    names: list[str] = []
    meta: list[tuple[int, int, str]] = []
    vecs: list[torch.Tensor] = []

    def add(name: str, l: int, hd: int, kind: str, v: torch.Tensor) -> None:
        names.append(name)
        meta.append((l, hd, kind))
        vecs.append(v.detach().to(device="cpu", dtype=F64).reshape(-1))

    if "embed" in rows:
        add("embed", -1, -1, "embed", rows["embed"])
    for l in sorted(set(layers) | set(mlps)):
        if l in layers:
            W, b, pn = weights(l)
            W = W.detach().to(device="cpu", dtype=F64)
            z = rows[f"z{l}"].detach().to(device="cpu", dtype=F64).reshape(-1)
            if W.shape[1] % n_heads or z.numel() != W.shape[1]:
                raise NotImplementedError(f"layer {l}: the projection's input ({z.numel()}) is not {n_heads} equal head slices of {tuple(W.shape)}")
            dh = W.shape[1] // n_heads
            heads = torch.einsum("dhk,hk->hd", W.view(W.shape[0], n_heads, dh), z.view(n_heads, dh))  # [H, d]
            if pn is not None:
                heads = frozen_linear(pn, heads)
            for hd in range(n_heads):
                add(f"L{l}.H{hd}", l, hd, "head", heads[hd])
            if b is not None:
                b = b.detach().to(device="cpu", dtype=F64)
                add(f"L{l}.attn_bias", l, -1, "attn_bias", b if pn is None else frozen_linear(pn, b[None])[0])
            if pn is not None and bool((pn.shift != 0).any()):
                add(f"L{l}.attn_norm_shift", l, -1, "remainder", pn.shift)
        if l in mlps:
            add(f"L{l}.mlp", l, -1, "mlp", rows[f"mlp{l}"])
    return names, meta, torch.stack(vecs)


def readout(u: Unembed, x: torch.Tensor, ids: list[int] | None) -> tuple[list[int], torch.Tensor, torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """The decoder's readout at one cell: ``(ids, cell, w, consts)``.

    ``x [d]``: the cell's row as the final norm sees it (after a lens's translation), in the
    norm's dtype on ``u.device``; ``u``'s weights held. ``ids``: the tokens (``None``: the row's
    top-1). ``cell [K]``: their logits as the lens computes them (float32); ``w [K, d]`` float64:
    the direction whose dot product with a (translated) part is its contribution, the final
    norm's scale frozen at ``x``; ``consts``: the constant rows (``[K]`` each): projection bias,
    final-norm shift, unembedding bias. The soft-cap's remainder is :func:`table`'s."""
    z = u.normed(x[None])
    if ids is None:
        full = u.unembed(z)[0].float()
        ids = [int(full.argmax())]
        cell = full[ids].cpu()
    else:
        cell = u.logits_of(z, torch.tensor(ids))[0].float().cpu()
    weight = u.weight
    if weight is None:
        raise RuntimeError("the unembedding's weights are not held (read out inside `with decoder.loaded():`)")
    U = weight[torch.tensor(ids, device=weight.device)].to(F64).cpu()  # [K, d_out]
    consts: list[tuple[str, torch.Tensor]] = []
    if u.post is None:
        r = U
    else:
        pw = getattr(u.post, "weight", None)
        if pw is None:
            raise NotImplementedError(f"the projection after the final norm ({type(u.post).__name__}) is not a linear layer")
        r = U @ pw.detach().to(F64).cpu()
        pb = getattr(u.post, "bias", None)
        if pb is not None:
            consts.append(("remainder: projection bias", U @ pb.detach().to(F64).cpu()))
    parts = u.norm_parts(x[None])
    gain, shift = parts.gain.to(F64).cpu(), parts.shift.to(F64).cpu()
    scale = parts.scale.to(F64).reshape(-1).cpu()[0]
    w = r * gain / scale  # [K, d]: the logit's direction before centring
    if parts.centred:
        w = w - w.mean(-1, keepdim=True)
    if bool((shift != 0).any()):
        consts.append(("remainder: final-norm shift", r @ shift))
    if u.bias is not None:
        consts.append(("remainder: unembedding bias", u.bias[torch.tensor(ids, device=u.bias.device)].to(F64).cpu()))
    return ids, cell, w, consts


def table(X: torch.Tensor, v: torch.Tensor, consts: list[tuple[str, torch.Tensor]], softcap: float | None) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """``(contributions [n, K], consts)``: each part's dot product with the readout ``v [K, d]``
    (float64), and the constant rows with the soft-cap's remainder added last
    (``cap · tanh(z / cap) − z`` at the pre-cap logit ``z``, where the lens has a cap)."""
    contrib = X @ v.T
    consts = list(consts)
    pre_cap = contrib.sum(0) + sum((c for _, c in consts), torch.zeros(v.shape[0], dtype=F64))
    if softcap:
        consts.append(("remainder: soft-cap", softcap * torch.tanh(pre_cap / softcap) - pre_cap))
    return contrib, consts


def attribute_rows(rows: dict[str, torch.Tensor], h: torch.Tensor, layers: list[int], mlps: list[int], n_heads: int,
                   weights: Callable[[int], tuple[torch.Tensor, torch.Tensor | None, NormParts | None]], u: Unembed, x: torch.Tensor,
                   ids: list[int] | None, A: torch.Tensor | None = None, c: torch.Tensor | None = None) -> dict[str, Any]:
    """A cell's whole attribution from its recorded rows (see :func:`split_residual`) and its
    residual ``h [d]``: ``names``, ``meta`` (layer, head, kind per part), ``contrib [n, K]``,
    ``consts`` (remainder rows, name and ``[K]``), ``ids``, ``cell [K]`` (the lens's logits) and
    ``resid_error`` (max |Σ parts − h|). ``x``: ``h`` as the final norm sees it (see
    :func:`readout`); ``A``, ``c``: the lens's affine map before the norm (``T(x) = A x + c``;
    ``None``: the identity)."""
    names, meta, X = split_residual(rows, layers, mlps, n_heads, weights)
    resid_error = float((X.sum(0) - h.detach().to(device="cpu", dtype=F64).reshape(-1)).abs().max())
    ids, cell, w, consts = readout(u, x, ids)
    v = w if A is None else w @ A.to(device="cpu", dtype=F64)  # [K, d] in the residual's space
    if c is not None:
        consts.insert(0, ("remainder: lens offset", w @ c.to(device="cpu", dtype=F64)))
    contrib, consts = table(X, v, consts, u.softcap)
    return {"names": names, "meta": meta, "contrib": contrib, "consts": consts, "ids": ids, "cell": cell, "resid_error": resid_error}
