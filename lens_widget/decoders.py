"""The decoder seam: residual vectors of one site -> float32 logits over the vocabulary.

Every decode in the project (the grid, cell detail, trajectories, ``compute``, the self-check)
goes through a :class:`Decoder`. It knows which site a row comes from, so a per-layer lens
(the tuned lens, :class:`~lens_widget.tuned_lens.TunedLens`) slots in by overriding
:meth:`Decoder.translate`.

A decode is ``translate(h, site)`` -> the shared :class:`~lens_widget.unembed.Unembed`: the
model's own final norm (its statistics recomputed for every row, so Gemma's ``(1 + w)`` scale
comes out right) -> an optional projection (OPT's ``project_out``) -> the unembedding (+ bias)
-> the soft-cap where the config has one.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from .arch import get_path
from .devices import is_offloaded, materialized
from .hooked import HookedModel
from .unembed import UPCAST_BYTES, NormParts, Unembed

__all__ = ["Decoder", "LogitLensDecoder", "UnsupportedSiteError", "refused_sites"]


class UnsupportedSiteError(KeyError):
    """A site this decoder cannot decode (e.g. a tuned lens has no translator for it)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def refused_sites(sites: Sequence[str], probe: Callable[[str], Any]) -> list[str]:
    """The sites for which ``probe(site)`` (a decoder's per-site lookup) raises
    :class:`UnsupportedSiteError`, in order: what a ``check_sites`` names in its one error."""
    bad = []
    for s in sites:
        try:
            probe(s)
        except UnsupportedSiteError:
            bad.append(s)
    return bad


class Decoder:
    """The logit lens, and the base of every other decoder.

    A decoder is what it does to a residual vector before the final norm (:meth:`translate`:
    nothing, for the logit lens) followed by the shared :class:`~lens_widget.unembed.Unembed`
    (final norm, projection, unembedding, bias, soft-cap). For a half-precision model the
    unembedding stays in its own dtype and is upcast block by block (see
    :meth:`Unembed.unembed <lens_widget.unembed.Unembed.unembed>`). With accelerate offload the
    weights are held (``align_module_device``) for the duration of :meth:`loaded`, which callers
    enter once per block of work, never per chunk; rows move to the unembedding's execution device.
    """

    #: Name shown in the widget's lens switch, tooltips and exported pages.
    name = "logit lens"
    @property
    def portable(self) -> bool:
        """Whether this decoder can run next to a remote model (inside an nnsight trace, on NDIF):
        the plain logit lens, and a decoder whose :meth:`translate` is a plain matrix per site that
        travels by value with the request (:meth:`in_trace_maps`: the Jacobian lens). Any other
        subclass that overrides :meth:`translate` has code of its own and is refused."""
        return self.in_trace_maps(()) is not None

    def in_trace_maps(self, sites: Sequence[str]) -> dict[str, torch.Tensor] | None:
        """What :meth:`translate` does at ``sites``, as data that can travel into a remote trace:
        ``{site: M [d, d] float32}`` applied there as ``h.float() @ M.T`` (sites not named: as is);
        ``{}`` for the logit lens; ``None`` for a decoder whose translate is code (it cannot travel)."""
        return {} if type(self).translate is Decoder.translate else None

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
        w = self.head.weight
        in_dtype = next((p.dtype for p in (self.norm.parameters() if self.norm else [])), w.dtype)
        self.device = model.device
        #: the shared final norm + unembedding (its weights held inside :meth:`loaded`)
        self.unembedding = Unembed(self.norm, self.post, float(cap) if cap else None, in_dtype, self.device, int(w.shape[0]), UPCAST_BYTES)
        self._offloaded = any(is_offloaded(m) for mod in (self.norm, self.post, self.head) if mod is not None for m in mod.modules())
        self._weight32: torch.Tensor | None = None  # a full float32 copy, only if `weight` is read
        self._depth = 0

    @property
    def UPCAST_BYTES(self) -> int:  # noqa: N802 - the name it has always had
        """float32 scratch for one block of upcast unembedding rows (half-precision models)."""
        return self.unembedding.upcast_bytes

    @UPCAST_BYTES.setter
    def UPCAST_BYTES(self, value: int) -> None:  # noqa: N802
        self.unembedding.upcast_bytes = int(value)

    @property
    def vocab(self) -> int:
        return self.unembedding.vocab

    @property
    def in_dtype(self) -> torch.dtype:
        return self.unembedding.in_dtype

    @property
    def softcap(self) -> float | None:
        return self.unembedding.softcap

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
            if self.unembedding.weight is None:
                w = self.head.weight.detach()
                if w.device.type == "meta":
                    raise RuntimeError(
                        f"the unembedding ({type(self.head).__name__}) holds no weights (meta device) and no "
                        "accelerate offload hook loads them; load the model with its device_map through "
                        "transformers/accelerate, or give it real weights"
                    )
                bias = getattr(self.head, "bias", None)
                self.unembedding.hold(w, None if bias is None else bias.detach().float())
            self._depth = 1
            try:
                yield self
            finally:
                self._depth = 0
                if self._offloaded:  # the hook takes the weights back: drop our views of them
                    self.unembedding.hold(None, None)
                    self._weight32 = None

    @property
    def raw_weight(self) -> torch.Tensor:
        """The unembedding ``[V, d]`` in the model's own dtype (inside :meth:`loaded`)."""
        if self.unembedding.weight is None:
            raise RuntimeError("Decoder weights are read inside `with decoder.loaded():`")
        return self.unembedding.weight

    @property
    def head_bias(self) -> torch.Tensor | None:
        """The float32 unembedding bias ``[V]`` or ``None`` (inside :meth:`loaded`)."""
        return self.unembedding.bias

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

    @property
    def holds_float32_copy(self) -> bool:
        """Whether a full float32 copy of a half-precision unembedding is held (only after
        :attr:`weight` was read; the lens itself never makes one)."""
        return self._weight32 is not None

    # -- decoding ------------------------------------------------------------------------
    def translate(self, h: torch.Tensor, site: str | None) -> torch.Tensor:
        """What this lens does to a residual vector of ``site`` before the final norm: nothing."""
        return h

    def prepare(self, h: torch.Tensor, site: str | None = None, apply_norm: bool = True) -> torch.Tensor:
        """The float32 vectors that the unembedding multiplies (``[..., d]``)."""
        with self.loaded():
            return self.unembedding.normed(self.translate(h.to(device=self.device, dtype=self.in_dtype), site), apply_norm)

    def norm_parts(self, h: torch.Tensor, site: str | None = None) -> NormParts:
        """The final norm at this lens's rows for ``h`` (after :meth:`translate`) as an affine
        map with each row's scale frozen (see :meth:`Unembed.norm_parts
        <lens_widget.unembed.Unembed.norm_parts>`): what attribution of a cell needs."""
        with self.loaded(), materialized(self.norm):
            return self.unembedding.norm_parts(self.translate(h.to(device=self.device, dtype=self.in_dtype), site))

    def finish(self, z: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Bias and soft-cap, in place (``ids`` when ``z`` holds only some vocabulary columns)."""
        return self.unembedding.finish(z, ids)

    def unembed(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``[..., d]`` prepared vectors -> ``[..., V]`` float32 logits (into ``out`` if given)."""
        with self.loaded():
            return self.unembedding.unembed(x, out)

    @torch.inference_mode()
    def logits(self, h: torch.Tensor, site: str | None = None, apply_norm: bool = True) -> torch.Tensor:
        """``[..., d]`` residual vectors of ``site`` -> ``[..., V]`` float32 logits."""
        with self.loaded():
            return self.unembed(self.prepare(h, site, apply_norm))

    @torch.inference_mode()
    def logits_of(self, h: torch.Tensor, ids: torch.Tensor, site: str | None = None, apply_norm: bool = True) -> torch.Tensor:
        """``[..., d] -> [..., len(ids)]``: logits of some tokens only."""
        with self.loaded():
            return self.unembedding.logits_of(self.prepare(h, site, apply_norm), ids)


#: The plain logit lens is the base decoder itself.
LogitLensDecoder = Decoder
