"""The decoder seam: residual vectors of one site -> float32 logits over the vocabulary.

Every decode in the project (the grid, cell detail, trajectories, ``compute``, the self-check)
goes through a :class:`Decoder`. It knows which site a row comes from, so a per-layer lens
(the tuned lens, :class:`~lens_widget.tuned_lens.TunedLens`) slots in by overriding
:meth:`Decoder.translate`.

A decode is ``translate(h, site)`` -> the model's own final norm (its statistics recomputed for
every row, so Gemma's ``(1 + w)`` scale comes out right) -> an optional projection (OPT's
``project_out``) -> the unembedding (+ bias) -> the soft-cap where the config has one.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from .arch import get_path
from .devices import is_offloaded, materialized
from .hooked import HookedModel

__all__ = ["Decoder", "LogitLensDecoder", "UnsupportedSiteError"]


class UnsupportedSiteError(KeyError):
    """A site this decoder cannot decode (e.g. a tuned lens has no translator for it)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class Decoder:
    """The logit lens, and the base of every other decoder.

    For a half-precision model the unembedding stays in its own dtype and is upcast to float32
    one block of ``UPCAST_BYTES`` at a time inside :meth:`unembed` (the products of a full
    float32 copy, to the last bit or one ulp where BLAS blocks differently, without holding one: for a tied embedding that copy would be a
    second ``V x d x 4`` bytes beside the model). With accelerate offload the weights are held
    (``align_module_device``) for the duration of :meth:`loaded`, which callers enter once per
    block of work, never per chunk; rows move to the unembedding's execution device.
    """

    #: float32 scratch for one block of upcast unembedding rows (half-precision models).
    UPCAST_BYTES = 32 * 2**20

    #: Name shown in the widget's lens switch, tooltips and exported pages.
    name = "logit lens"

    def __init__(self, model: HookedModel):
        hf = model.model
        self.model = model
        self.norm: nn.Module | None = get_path(hf, model.arch.final_norm) if model.arch.final_norm else None
        self.post: nn.Module | None = None
        if model.arch.post_norm:
            try:
                self.post = get_path(hf, model.arch.post_norm)
            except AttributeError:
                self.post = None
        self.head: nn.Module = hf.get_output_embeddings()
        cap = getattr(hf.config, "final_logit_softcapping", None)
        self.softcap = float(cap) if cap else None
        w = self.head.weight
        self.in_dtype = next((p.dtype for p in (self.norm.parameters() if self.norm else [])), w.dtype)
        self.vocab = int(w.shape[0])
        self.device = model.device
        self._offloaded = any(is_offloaded(m) for mod in (self.norm, self.post, self.head) if mod is not None for m in mod.modules())
        self._weight: torch.Tensor | None = None  # the unembedding in the model's dtype (a view)
        self._weight32: torch.Tensor | None = None  # a full float32 copy, only if `weight` is read
        self._bias: torch.Tensor | None = None
        self._scratch: torch.Tensor | None = None
        self._depth = 0

    # -- which sites ---------------------------------------------------------------------
    def check_sites(self, sites: Sequence[str]) -> None:
        """Raise :class:`UnsupportedSiteError` for sites this decoder cannot decode."""

    # -- weights -------------------------------------------------------------------------
    @contextlib.contextmanager
    def loaded(self) -> Iterator["Decoder"]:
        """Hold the final norm and unembedding on their device for a block of work (re-entrant)."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        with materialized(self.norm, self.post, self.head):
            if self._weight is None:
                w = self.head.weight.detach()
                if w.device.type == "meta":
                    raise RuntimeError(
                        f"the unembedding ({type(self.head).__name__}) holds no weights (meta device) and no "
                        "accelerate offload hook loads them; load the model with its device_map through "
                        "transformers/accelerate, or give it real weights"
                    )
                self._weight = w
                bias = getattr(self.head, "bias", None)
                self._bias = None if bias is None else bias.detach().float()
            self._depth = 1
            try:
                yield self
            finally:
                self._depth = 0
                if self._offloaded:  # the hook takes the weights back: drop our views of them
                    self._weight = self._weight32 = self._bias = None

    @property
    def raw_weight(self) -> torch.Tensor:
        """The unembedding ``[V, d]`` in the model's own dtype (inside :meth:`loaded`)."""
        if self._weight is None:
            raise RuntimeError("Decoder weights are read inside `with decoder.loaded():`")
        return self._weight

    @property
    def head_bias(self) -> torch.Tensor | None:
        """The float32 unembedding bias ``[V]`` or ``None`` (inside :meth:`loaded`)."""
        return self._bias

    @property
    def weight(self) -> torch.Tensor:
        """The float32 unembedding ``[V, d]`` (inside :meth:`loaded`). For a half-precision model
        this makes a full float32 copy (kept while loaded); the lens itself never reads it
        (:meth:`unembed` upcasts block by block)."""
        w = self.raw_weight
        if w.dtype == torch.float32:
            return w
        if self._weight32 is None:
            self._weight32 = w.float()
        return self._weight32

    # -- decoding ------------------------------------------------------------------------
    def translate(self, h: torch.Tensor, site: str | None) -> torch.Tensor:
        """What this lens does to a residual vector of ``site`` before the final norm: nothing."""
        return h

    def prepare(self, h: torch.Tensor, site: str | None = None, apply_norm: bool = True) -> torch.Tensor:
        """The float32 vectors that the unembedding multiplies (``[..., d]``)."""
        with self.loaded():
            x = self.translate(h.to(device=self.device, dtype=self.in_dtype), site)
            if apply_norm and self.norm is not None:
                x = self.norm(x)
            if self.post is not None:
                x = self.post(x)
            # under a multi-device map the norm may run elsewhere than the unembedding
            return x.to(device=self.device, dtype=torch.float32)

    def finish(self, z: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Bias and soft-cap, in place (``ids`` when ``z`` holds only some vocabulary columns)."""
        if self._bias is not None:
            z.add_(self._bias if ids is None else self._bias[ids])
        if self.softcap is not None:
            z.div_(self.softcap).tanh_().mul_(self.softcap)
        return z

    def unembed(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``[..., d]`` prepared vectors -> ``[..., V]`` float32 logits (into ``out`` if given)."""
        with self.loaded():
            w = self.raw_weight
            if w.dtype == torch.float32:
                z = torch.matmul(x, w.T, out=out) if out is not None else x @ w.T
                return self.finish(z)
            flat = x.reshape(-1, x.shape[-1])
            z = out.view(-1, self.vocab) if out is not None else torch.empty(flat.shape[0], self.vocab, dtype=torch.float32, device=flat.device)
            rows = max(1, self.UPCAST_BYTES // (4 * w.shape[1]))
            if self._scratch is None or self._scratch.shape[1] != w.shape[1] or self._scratch.device != w.device:
                self._scratch = torch.empty(min(rows, self.vocab), w.shape[1], dtype=torch.float32, device=w.device)
            block = self._scratch
            flat = flat.detach()  # the lens never differentiates; mm(out=) refuses autograd
            for v0 in range(0, self.vocab, block.shape[0]):
                n = min(block.shape[0], self.vocab - v0)
                block[:n].copy_(w[v0 : v0 + n])  # exact: every half-precision value is a float32
                torch.mm(flat, block[:n].T, out=z[:, v0 : v0 + n])
            return self.finish(z.view(*x.shape[:-1], self.vocab))

    @torch.inference_mode()
    def logits(self, h: torch.Tensor, site: str | None = None, apply_norm: bool = True) -> torch.Tensor:
        """``[..., d]`` residual vectors of ``site`` -> ``[..., V]`` float32 logits."""
        with self.loaded():
            return self.unembed(self.prepare(h, site, apply_norm))

    @torch.inference_mode()
    def logits_of(self, h: torch.Tensor, ids: torch.Tensor, site: str | None = None, apply_norm: bool = True) -> torch.Tensor:
        """``[..., d] -> [..., len(ids)]``: logits of some tokens only."""
        with self.loaded():
            ids = ids.to(self.device)
            return self.finish(self.prepare(h, site, apply_norm) @ self.raw_weight[ids].float().T, ids)


#: The plain logit lens is the base decoder itself.
LogitLensDecoder = Decoder
