"""The unembedding: prepared residual vectors -> float32 logits, the half every lens shares.

``Unembed`` is the model's own final norm (its statistics recomputed for every row), an optional
projection (OPT's ``project_out``), the unembedding matrix (+ bias) and the soft-cap where the
config has one. Lenses (:mod:`lens_widget.decoders`) differ only in what they do to a residual
vector *before* it (tuned lens: ``h + A h + b``; Jacobian lens: ``J h``), so they all hold one of
these, as tuned-lens keeps its ``Unembed`` apart from its lenses.

Torch only, and no knowledge of how the weights got here: the local decoder hands it the weights
it holds (under accelerate offload, for a block of work), and the in-trace lens
(:mod:`lens_widget.sources.intrace`, shipped by value to NDIF) builds one over the remote
model's modules. One copy of the math for both.

It also exposes the final norm as the linear map it is once its scale is frozen
(:meth:`Unembed.norm_parts`): ``norm(x) = gain * centre(x) / scale + shift``. Attribution needs
that scale for a cell; interventions and decoders can read it.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["Unembed", "NormParts", "UPCAST_BYTES"]

#: float32 scratch for one block of upcast unembedding rows (half-precision models).
UPCAST_BYTES = 32 * 2**20


class NormParts:
    """The final norm of some rows as an affine map with its scale frozen:
    ``norm(x) = gain * (x - centred * mean(x)) / scale + shift``.

    ``scale [..., 1]`` per row; ``gain``, ``shift`` ``[d]``; ``centred``: the norm subtracts the
    mean (LayerNorm) or not (RMSNorm). (A plain class: this module travels by value into
    nnsight traces.)"""

    def __init__(self, scale: torch.Tensor, gain: torch.Tensor, shift: torch.Tensor, centred: bool):
        self.scale, self.gain, self.shift, self.centred = scale, gain, shift, centred

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen-scale norm of ``x [..., d]`` (linear in ``x`` but for ``shift``)."""
        c = x - x.mean(-1, keepdim=True) if self.centred else x
        return self.gain * c / self.scale + self.shift


class Unembed:
    """Final norm -> projection -> unembedding (+ bias) -> soft-cap, in float32.

    ``norm``/``post`` are callables (modules or an nnsight trace's envoys) or ``None``;
    ``weight`` the unembedding ``[V, d]`` in the model's dtype and ``bias`` its float32 bias are
    set by the owner (:meth:`hold`) while they are readable; ``in_dtype`` is the dtype the norm
    expects; ``device`` where the unembedding computes.
    """

    def __init__(self, norm: Any, post: Any, softcap: float | None, in_dtype: torch.dtype, device: torch.device, vocab: int,
                 upcast_bytes: int = UPCAST_BYTES):
        self.norm, self.post = norm, post
        self.softcap = float(softcap) if softcap else None
        self.in_dtype, self.device, self.vocab = in_dtype, device, int(vocab)
        self.upcast_bytes = int(upcast_bytes)
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self._scratch: torch.Tensor | None = None
        self._parts: tuple[torch.Tensor, torch.Tensor, bool] | None = None

    def hold(self, weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        """The weights to use from now on (``None``: released)."""
        self.weight, self.bias = weight, bias
        if weight is None:
            self._scratch = None

    def _w(self) -> torch.Tensor:
        if self.weight is None:
            raise RuntimeError("the unembedding's weights are not held (decode inside `with decoder.loaded():`)")
        return self.weight

    # -- the norm --------------------------------------------------------------------------
    def normed(self, x: torch.Tensor, apply_norm: bool = True) -> torch.Tensor:
        """Final norm (unless ``apply_norm`` is False) and projection: the float32 vectors that
        the unembedding multiplies, on its device."""
        x = x.to(device=self.device, dtype=self.in_dtype)
        if apply_norm and self.norm is not None:
            x = self.norm(x)
        if self.post is not None:
            x = self.post(x)
        # under a multi-device map the norm may run elsewhere than the unembedding
        return x.to(device=self.device, dtype=torch.float32)

    def prepare(self, h: torch.Tensor, site: str | None = None) -> torch.Tensor:
        """The plain logit lens's rows (the reducer's decoder interface): :meth:`normed`."""
        return self.normed(h)

    @torch.no_grad()
    def norm_parts(self, h: torch.Tensor) -> NormParts:
        """The final norm at rows ``h [..., d]`` as an affine map with the rows' scale frozen.

        Gain, shift and whether the norm centres are read off the norm module itself by probing
        it with large ``±a`` vectors (its epsilon is then negligible), so every registry norm
        (LayerNorm, RMSNorm, Gemma's ``1 + w``) is covered without knowing its parameter names;
        each row's scale is then the one that reproduces ``norm(h)`` exactly (least squares over
        ``d`` equations, exact up to float rounding)."""
        if self.norm is None:
            d = h.shape[-1]
            one = torch.ones(d, device=h.device)
            return NormParts(torch.ones(*h.shape[:-1], 1, device=h.device), one, torch.zeros_like(one), False)
        gain, shift, centred = self._probe(h.shape[-1], h.device)
        x = h.to(device=gain.device, dtype=torch.float32)
        c = x - x.mean(-1, keepdim=True) if centred else x
        y = self.norm(x.to(self.in_dtype)).to(device=gain.device, dtype=torch.float32) - shift
        gc = gain * c
        scale = (gc * gc).sum(-1, keepdim=True) / (y * gc).sum(-1, keepdim=True)
        return NormParts(scale, gain, shift, centred)

    def _probe(self, d: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, bool]:
        if self._parts is None:
            a = 1024.0
            sign = torch.ones(d, device=device)
            sign[1::2] = -1.0
            if d % 2:  # a zero-mean probe needs an even count of +-1: make the last entry 0
                sign[-1] = 0.0

            def run(v: torch.Tensor) -> torch.Tensor:
                return self.norm(v.to(self.in_dtype)).float()

            plus, minus = run(a * sign), run(-a * sign)
            rms = float(sign.pow(2).mean().sqrt())
            shift = (plus + minus) / 2
            gain = torch.where(sign != 0, (plus - minus) / 2 * sign * rms, torch.zeros_like(plus))
            if d % 2:  # the probe left the last entry out: a second probe reads it
                s2 = torch.zeros(d, device=device)
                s2[-1], s2[0] = 1.0, -1.0
                g2 = (run(a * s2) - run(-a * s2)) / 2 * float(s2.pow(2).mean().sqrt())
                gain[-1] = g2[-1]
            # a constant shift changes an RMSNorm's output and leaves a LayerNorm's alone
            centred = bool(torch.allclose(run(a * sign + a), plus, rtol=1e-3, atol=1e-3 * float(plus.abs().max())))
            self._parts = (gain, shift, centred)
        return self._parts

    # -- the unembedding -------------------------------------------------------------------
    def finish(self, z: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Bias and soft-cap, in place (``ids`` when ``z`` holds only some vocabulary columns)."""
        if self.bias is not None:
            z.add_(self.bias if ids is None else self.bias[ids])
        if self.softcap is not None:
            z.div_(self.softcap).tanh_().mul_(self.softcap)
        return z

    def unembed(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``[..., d]`` prepared vectors -> ``[..., V]`` float32 logits (into ``out`` if given).

        A half-precision unembedding is upcast to float32 one block of ``upcast_bytes`` at a time
        (the products of a full float32 copy, without holding one: for a tied embedding that
        copy would be a second ``V x d x 4`` bytes beside the model)."""
        w = self._w()
        if w.dtype == torch.float32:
            z = torch.matmul(x, w.T, out=out) if out is not None else x @ w.T
            return self.finish(z)
        flat = x.reshape(-1, x.shape[-1]).detach()  # the lens never differentiates; mm(out=) refuses autograd
        z = out.view(-1, self.vocab) if out is not None else torch.empty(flat.shape[0], self.vocab, dtype=torch.float32, device=flat.device)
        rows = max(1, self.upcast_bytes // (4 * w.shape[1]))
        if self._scratch is None or self._scratch.shape != (min(rows, self.vocab), w.shape[1]) or self._scratch.device != w.device:
            self._scratch = torch.empty(min(rows, self.vocab), w.shape[1], dtype=torch.float32, device=w.device)
        block = self._scratch
        for v0 in range(0, self.vocab, block.shape[0]):
            n = min(block.shape[0], self.vocab - v0)
            block[:n].copy_(w[v0 : v0 + n])  # exact: every half-precision value is a float32
            torch.mm(flat, block[:n].T, out=z[:, v0 : v0 + n])
        return self.finish(z.view(*x.shape[:-1], self.vocab))

    def logits_of(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``[..., d]`` prepared vectors -> ``[..., len(ids)]`` logits of some tokens only."""
        ids = ids.to(self.device)
        return self.finish(x @ self._w()[ids].float().T, ids)
