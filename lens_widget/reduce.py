"""Reductions of logits chunks to what a person reads per cell, without ever holding a
``[sites, positions, vocab]`` tensor.

Per chunk of ``r`` rows the work is one ``[r, d] x [d, V]`` matmul into a preallocated float32
buffer, then passes over that buffer: exact ranks (strict ``>`` counts on the raw logits), top-k,
log-sum-exp, entropy and KL(final ‖ site) as batched sums. The passes run fused through
``torch.compile`` when the work is large enough to repay compiling (compiled once per process, in
the background, while eager passes carry on); small work and a failed compile use eager passes
over preallocated buffers. Both are exact and tested against a naive full-vocabulary lens.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from . import certified

__all__ = [
    "ChunkReducer",
    "Lane",
    "reduce_columns",
    "FusedKernels",
    "FUSED",
    "blocked_topk",
    "token_stats",
    "js_divergence",
    "rows_for_budget",
    "DEFAULT_MEMORY_BUDGET",
    "EXP_FLOOR",
    "TOPK_BLOCK",
    "CertifiedTally",
    "HeldUnembed",
]

#: exp of arguments below float32's normal range is 15-40x slower on CPU; those probabilities
#: are < 1.6e-38 either way (Gemma's early layers span hundreds of nats).
EXP_FLOOR = -87.0
#: Top-k reads the k best blocks of this many logits (see :func:`blocked_topk`).
TOPK_BLOCK = 64
#: Below this many logits per run (rows x vocab), eager passes finish before a compile would.
FUSE_MIN_WORK = int(os.environ.get("LENS_WIDGET_FUSE_MIN_WORK", 64 * 49152 * 31))


#: Bytes of scratch memory a reducer may use for its logits buffers, by default (on the CPU).
DEFAULT_MEMORY_BUDGET = 512 * 2**20


def rows_for_budget(vocab: int, budget: int, lanes: int = 1) -> int:
    """Rows per chunk: logits and eager scratch (4 B each), a mask (1 B), and each lane's final
    probabilities (4 B; ``lanes`` decoders reduce the same rows, sharing the other buffers)."""
    return max(1, int(budget // (vocab * (9 + 4 * max(1, int(lanes))))))


if TYPE_CHECKING:  # types only: this module travels by value into nnsight traces (plain classes only)
    from typing import Protocol

    class RowDecoder(Protocol):
        """What a :class:`ChunkReducer` decodes with: a :class:`~lens_widget.decoders.Decoder`,
        or the in-trace lens's bare :class:`~lens_widget.unembed.Unembed` (the logit lens)."""

        vocab: int
        device: torch.device

        def prepare(self, h: torch.Tensor, site: str | None = None) -> torch.Tensor: ...

        def unembed(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor: ...


def cell_stats(z: torch.Tensor, targets: torch.Tensor, p_final: torch.Tensor, m: torch.Tensor | None = None):
    """Ranks of ``targets``, log-sum-exp, negative entropy and sum(p_final * log p), per row.

    ``z [n, g, V]`` logits (``g`` sites of ``n`` positions), ``targets [n, g, T]`` logits whose
    exact ranks are counted (strictly larger logits), ``p_final [n, 1, V]`` the final layer's
    probabilities, ``m`` the row maxima if known. Two passes over ``z`` when compiled: max and
    ranks, then every sum at once (sum p log p = E_p[z] - lse, sum q log p = E_q[z] - lse).
    Element-wise math is float32, sums accumulate in float64 (a vectorised float32 sum over 49k
    terms loses ~1e-4 relative).
    """
    f64 = torch.float64
    ranks = (z.unsqueeze(-2) > targets.unsqueeze(-1)).sum(-1, dtype=torch.int32) + 1
    if m is None:
        m = z.amax(-1, keepdim=True)
    e = torch.exp(z - m)
    s = e.to(f64).sum(-1)
    mean_z = (e * z).to(f64).sum(-1) / s
    lse = m[..., 0].to(f64) + torch.log(s)
    cross = (p_final * z).to(f64).sum(-1) - lse * p_final.to(f64).sum(-1)
    return ranks, lse.float(), (mean_z - lse).float(), cross.float()


def cell_stats_blocked(z: torch.Tensor, targets: torch.Tensor, p_final: torch.Tensor):
    """:func:`cell_stats` plus the maxima of blocks of ``TOPK_BLOCK`` logits, in the same pass,
    so that top-k reads only k blocks per row (:func:`blocked_topk`)."""
    block_max = z.view(*z.shape[:-1], -1, TOPK_BLOCK).amax(-1)
    return (*cell_stats(z, targets, p_final, block_max.amax(-1, keepdim=True)), block_max)


def blocked_topk(z: torch.Tensor, block_max: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(z, k)`` from per-block maxima: exact, reading only k blocks per row.

    Each of the k largest logits lies in a block whose maximum is at least the k-th largest
    logit, and at most k blocks have such a maximum (ties aside, where top-k is arbitrary anyway).
    """
    r, n_blocks = block_max.shape
    blocks = torch.topk(block_max, k, dim=-1).indices  # [r, k]
    cand = z.view(r, n_blocks, TOPK_BLOCK).gather(1, blocks[..., None].expand(r, k, TOPK_BLOCK))
    values, local = torch.topk(cand.view(r, -1), k, dim=-1)
    ids = blocks.gather(1, local // TOPK_BLOCK) * TOPK_BLOCK + local % TOPK_BLOCK
    return values, ids


def uses_blocked_topk(vocab: int, k: int) -> bool:
    """Whether top-k of ``vocab`` logits comes from block maxima (``vocab`` a multiple of the
    block, and at least ``k`` blocks)."""
    return vocab % TOPK_BLOCK == 0 and k <= vocab // TOPK_BLOCK


@torch.inference_mode()
def token_stats(z: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logit, probability and exact 1-based rank of tokens ``ids [M]`` in each row of ``z [r, V]``,
    and each row's entropy: the one full-vocabulary computation behind cell detail and
    trajectories (``[r, M]`` each, entropy ``[r]``)."""
    ids = ids.to(z.device)
    lse = torch.logsumexp(z, -1, keepdim=True)
    logp = z - lse
    sel = z[:, ids]
    ranks = torch.stack([(z > sel[:, j : j + 1]).sum(-1) + 1 for j in range(sel.shape[1])], -1) if ids.numel() else sel.long()
    entropy = -(logp.clamp(min=EXP_FLOOR).exp() * logp).sum(-1)
    return {"logits": sel, "probs": (sel - lse).exp(), "ranks": ranks.to(torch.int64), "entropy": entropy}


#: Vocabulary columns per pass of :func:`js_divergence` (bounds its temporaries to ``[r, JS_BLOCK]``).
JS_BLOCK = 2048
_LN2 = 0.6931471805599453


@torch.inference_mode()
def js_divergence(za: torch.Tensor, zb: torch.Tensor, block: int = JS_BLOCK) -> torch.Tensor:
    """Jensen–Shannon divergence (nats) of the softmaxes of two logits chunks ``[r, V]``, per row,
    exactly over the whole vocabulary: ``½ Σ p (log p − log m) + ½ Σ q (log q − log m)`` with
    ``m = (p + q) / 2``, ``log m = logaddexp(log p, log q) − ln 2``.

    Neither input is changed (the reducer reads them afterwards); temporaries are ``[r, block]``.
    Element-wise math is float32, sums accumulate in float64; identical rows give exactly 0.
    """
    f64 = torch.float64
    r, V = za.shape
    ma, mb = za.amax(-1, keepdim=True), zb.amax(-1, keepdim=True)
    sa = torch.zeros(r, 1, dtype=f64, device=za.device)
    sb = torch.zeros_like(sa)
    for v0 in range(0, V, block):
        sa += torch.exp(za[:, v0 : v0 + block] - ma).sum(-1, keepdim=True, dtype=f64)
        sb += torch.exp(zb[:, v0 : v0 + block] - mb).sum(-1, keepdim=True, dtype=f64)
    lse_a = (ma.to(f64) + torch.log(sa)).float()
    lse_b = (mb.to(f64) + torch.log(sb)).float()
    total = torch.zeros(r, dtype=f64, device=za.device)
    for v0 in range(0, V, block):
        la = za[:, v0 : v0 + block] - lse_a
        lb = zb[:, v0 : v0 + block] - lse_b
        # where p == q, m is p exactly (logaddexp - ln 2 would round it): identical rows give 0
        lm = torch.where(la == lb, la, torch.logaddexp(la, lb).sub_(_LN2))
        pa = la.clamp(min=EXP_FLOOR).exp_()
        pb = lb.clamp(min=EXP_FLOOR).exp_()
        total += (pa.mul_(la.sub_(lm)) + pb.mul_(lb.sub_(lm))).sum(-1, dtype=f64)
    return (0.5 * total).clamp_(min=0.0, max=_LN2).float()


def js_fused(za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    """:func:`js_divergence` written for ``torch.compile`` (whole rows; the compiler fuses the
    element-wise math into the reductions, so no ``[r, V]`` temporary is materialised)."""
    f64 = torch.float64
    ma, mb = za.amax(-1, keepdim=True), zb.amax(-1, keepdim=True)
    lse_a = (ma.to(f64) + torch.log(torch.exp(za - ma).to(f64).sum(-1, keepdim=True))).float()
    lse_b = (mb.to(f64) + torch.log(torch.exp(zb - mb).to(f64).sum(-1, keepdim=True))).float()
    la, lb = za - lse_a, zb - lse_b
    pa, pb = torch.exp(la.clamp(min=EXP_FLOOR)), torch.exp(lb.clamp(min=EXP_FLOOR))
    lm = torch.where(la == lb, la, torch.logaddexp(la, lb) - _LN2)
    total = (pa * (la - lm) + pb * (lb - lm)).to(f64).sum(-1)
    return (0.5 * total).clamp(min=0.0, max=_LN2).float()


class FusedKernels:
    """The compiled reductions, compiled once per process in a background thread.

    ``get(name)`` returns the compiled function once it is ready and ``None`` before (callers
    then use eager passes), so compiling never blocks a grid. ``LENS_WIDGET_COMPILE=0`` turns
    compiling off; a compile that fails warns once and leaves eager passes in charge.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[str, Callable[..., Any]] = {}
        self._started: set[str] = set()
        self._failed: dict[str, str] = {}
        self._threads: list[threading.Thread] = []

    def __getstate__(self) -> dict[str, Any]:
        # This module travels by value into nnsight traces (NDIF): a copy starts with no kernels
        # (its reducers run eager passes there) and no locks or threads, which cannot travel.
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    @staticmethod
    def enabled() -> bool:
        return os.environ.get("LENS_WIDGET_COMPILE", "1") != "0"

    def get(self, name: str) -> Callable[..., Any] | None:
        return self._ready.get(name)

    def failure(self, name: str) -> str | None:
        return self._failed.get(name)

    def warm(self, name: str, vocab: int, device: torch.device, block: bool = False) -> threading.Thread | None:
        """Start compiling kernel ``name`` for ``vocab``-wide rows on ``device`` (no-op when
        started already or disabled). ``block=True`` waits for it (benchmarks, tests)."""
        if not self.enabled():
            return None
        with self._lock:
            if name in self._started:
                thread = next((t for t in self._threads if t.name == f"lens-widget-compile-{name}"), None)
            else:
                self._started.add(name)
                thread = threading.Thread(target=self._compile, args=(name, vocab, device), name=f"lens-widget-compile-{name}", daemon=True)
                self._threads.append(thread)
                thread.start()
        if block and thread is not None:
            thread.join()
        return thread

    def _compile(self, name: str, vocab: int, device: torch.device) -> None:
        fn = {"cell_stats": cell_stats, "cell_stats_blocked": cell_stats_blocked, "js": js_fused}[name]
        try:
            compiled = torch.compile(fn, dynamic=True)
            # Shapes with every dimension > 1, so the compiled graph stays general.
            with torch.inference_mode():
                z = torch.randn(2, 3, vocab, device=device)
                if name == "js":
                    compiled(z.view(6, vocab), z.view(6, vocab).flip(0).contiguous())
                else:
                    compiled(z, z[..., :2].contiguous(), torch.softmax(z[:, :1], -1))
            self._ready[name] = compiled
        except Exception as exc:  # no C++ compiler, unsupported device, ...: eager is exact too
            self._failed[name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"lens_widget: torch.compile of the reductions failed ({type(exc).__name__}); using eager passes")


#: The process's compiled reductions.
FUSED = FusedKernels()


class ChunkReducer:
    """Reduces chunks of prepared rows to per-cell statistics with reused scratch buffers.

    Fresh ``[rows, V]`` tensors are served by mmap and re-faulted on every chunk; keeping the
    logits buffer alive and writing with ``out=`` avoids that.
    """

    def __init__(self, decoder: "RowDecoder", max_rows: int, k: int, fused: bool = True, strict: bool = False,
                 share: "ChunkReducer | None" = None, certify: "certified.Certify | None" = None):
        """``share``: another reducer whose buffers this one reuses (several decoders reducing
        the same rows one after the other: one set of ``[rows, V]`` buffers for all).
        ``certify``: decode through the certified unembedding (:mod:`lens_widget.certified`:
        a fast approximate product with a proven bound, reductions identical to the float32
        path); ``None``: the float32 path."""
        V = decoder.vocab
        self.decoder, self.k, self.max_rows = decoder, min(k, V), max_rows
        if share is not None and (share.z.shape != (max_rows, V) or share.z.device != torch.device(decoder.device)):
            share = None
        self.z = share.z if share is not None else torch.empty(max_rows, V, dtype=torch.float32, device=decoder.device)
        self.blocked = uses_blocked_topk(V, self.k)
        self.kernel = self.kernel_for(V, self.k)
        self.fused = fused
        self.strict = strict  # a failing compiled kernel raises instead of falling back
        self.fused_chunks = 0  # how many chunks the compiled kernel reduced (tests, benchmarks)
        self.fused_js_chunks = 0  # how many JS divergences the compiled kernel computed
        self._shared = share
        self._p: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        self.certify = certify
        self.tally = CertifiedTally()
        self._eps: torch.Tensor | None = None  # the bound of the logits now in self.z (certified)

    @staticmethod
    def kernel_for(vocab: int, k: int) -> str:
        """Name of the compiled kernel that reduces ``vocab``-wide rows with top-``k``."""
        return "cell_stats_blocked" if uses_blocked_topk(vocab, min(k, vocab)) else "cell_stats"

    def _scratch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._shared is not None:
            return self._shared._scratch()
        if self._p is None or self._mask is None:
            self._p = torch.empty_like(self.z)
            self._mask = torch.empty(self.z.shape, dtype=torch.bool, device=self.z.device)
        return self._p, self._mask

    @property
    def certifying(self) -> bool:
        """Whether the next chunk decodes through the certified unembedding (it stops once
        :class:`~lens_widget.certified.Certify` ``give_up`` says the float32 path is cheaper)."""
        return self.certify is not None and not self.tally.gave_up

    @torch.inference_mode()
    def final(self, h: torch.Tensor, site: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities ``[r, V]`` (a new tensor) and negative entropy ``[r]`` of the final
        layer's rows ``h [r, d]`` (activations of ``site``) through this reducer's decoder
        (always the float32 path: every probability of it is read)."""
        x = self.decoder.prepare(h, site)
        return self.final_from_logits(self.decoder.unembed(x, out=self.z[: x.shape[0]]))

    @torch.inference_mode()
    def final_from_logits(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`final_distribution` from the final layer's logits ``[r, V]`` (left unchanged)."""
        logp = torch.log_softmax(z, dim=-1)
        p = logp.clamp(min=EXP_FLOOR).exp_()
        return p, (p * logp).sum(-1)

    def _eager_stats(self, z: torch.Tensor, targets: torch.Tensor, p_final: torch.Tensor, group: int):
        """:func:`cell_stats` in passes over preallocated buffers (no ``[r, V]`` temporaries)."""
        r = z.shape[0]
        p, mask = self._scratch()
        ranks = torch.stack(
            [torch.gt(z, targets[:, j : j + 1], out=mask[:r]).view(torch.uint8).sum(-1, dtype=torch.int32) + 1 for j in range(targets.shape[1])],
            -1,
        )
        zmax = z.amax(-1)
        lse = zmax + torch.sub(z, zmax[:, None], out=p[:r]).clamp_(min=EXP_FLOOR).exp_().sum(-1).log()
        logp = torch.sub(z, lse[:, None], out=p[:r])
        # torch's eager sums are cascaded (accurate in float32); products reuse z, read already
        neg_entropy = torch.mul(torch.clamp(logp, min=EXP_FLOOR, out=z).exp_(), logp, out=z).sum(-1)
        n_pos = r // group
        cross = torch.mul(logp.view(n_pos, group, -1), p_final[:n_pos, None, :], out=z.view(n_pos, group, -1)).sum(-1).view(-1)
        return ranks, lse, neg_entropy, cross

    def _fused_stats(self, z: torch.Tensor, targets: torch.Tensor, p_final: torch.Tensor, group: int):
        """The compiled kernel's statistics and top-k, or ``None`` when it is not ready."""
        fn = FUSED.get(self.kernel) if self.fused else None
        if fn is None:
            if self.fused and self.strict:
                raise RuntimeError(f"the compiled kernel {self.kernel} is not ready")
            return None
        r, n_pos = z.shape[0], z.shape[0] // group
        try:
            out = fn(z.view(n_pos, group, -1), targets.view(n_pos, group, -1), p_final[:n_pos, None, :])
        except Exception as exc:
            if self.strict:
                raise
            warnings.warn(f"lens_widget: the compiled reductions failed ({type(exc).__name__}); using eager passes")
            self.fused = False
            return None
        top = blocked_topk(z, out[4].view(r, -1), self.k) if self.blocked else torch.topk(z, self.k, dim=-1)
        self.fused_chunks += 1
        return (out[0].view(r, -1), out[1].view(r), out[2].view(r), out[3].view(r)), top

    @torch.inference_mode()
    def prepare_rows(self, raw: list[torch.Tensor], sites: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk's rows for :meth:`reduce`: ``raw[i]`` ``[n, d]`` activations of ``sites[i]``,
        each prepared by the decoder (its own translator), as ``[n * g, d]`` position-major, and
        ``[n * g]`` flags of rows whose activations held NaN/inf."""
        x = torch.stack([self.decoder.prepare(h, site) for h, site in zip(raw, sites)], 1)
        bad = ~torch.isfinite(torch.stack(raw, 1)).all(-1)
        return x.reshape(-1, x.shape[-1]), bad.reshape(-1)

    @torch.inference_mode()
    def reduce(
        self,
        x: torch.Tensor,
        next_ids: torch.Tensor,
        tracked: torch.Tensor,
        final: tuple[torch.Tensor, torch.Tensor],
        group: int = 1,
        nonfinite: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Statistics of ``r`` prepared rows ``x [r, d]``.

        ``next_ids [r]`` (``-1`` = none), ``tracked [M]`` ids, ``final`` the final layer's
        (probabilities, negative entropy) for the chunk's positions, ``nonfinite [r]`` rows whose
        activations held NaN/inf. Rows are ordered position-major in groups of ``group`` sites:
        row ``i`` belongs to position ``i // group``. (:meth:`logits` then :meth:`reduce_logits`
        when the logits are needed first, e.g. for a JS divergence or a final distribution.)
        """
        return self.reduce_logits(self.logits(x), x, next_ids, tracked, final, group, nonfinite)

    @torch.inference_mode()
    def js(self, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
        """:func:`js_divergence` of two logits chunks, through the compiled kernel when this
        reducer is fused and the kernel is ready (counted in ``fused_js_chunks``)."""
        fn = FUSED.get("js") if self.fused else None
        if fn is None:
            if self.fused and self.strict:
                raise RuntimeError("the compiled kernel js is not ready")
            return js_divergence(za, zb)
        self.fused_js_chunks += 1
        return fn(za, zb)

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits ``[r, V]`` of prepared rows ``x [r, d]``, in this reducer's buffer (valid
        until the next call; :meth:`reduce_logits` overwrites it). Certifying, they are the
        approximate logits (within the bound kept for :meth:`reduce_logits`)."""
        out = self.z[: x.shape[0]]
        self._eps = None
        if not self.certifying:
            return self.decoder.unembed(x, out=out)
        with HeldUnembed(self.decoder) as u:
            z, self._eps = self.certify.logits(x, u.weight, u.bias, u.softcap, out=out)  # type: ignore[union-attr]
        return z

    def _certified_stats(self, z: torch.Tensor, x: torch.Tensor, next_ids: torch.Tensor, tracked: torch.Tensor, p_final: torch.Tensor,
                         group: int):
        """:meth:`reduce_logits`'s statistics from approximate logits (``None``: ``z`` is not
        the certified chunk this reducer just computed)."""
        eps, self._eps = self._eps, None
        if eps is None or z.data_ptr() != self.z.data_ptr() or eps.shape[0] != z.shape[0]:
            return None
        dev = z.device
        ids = torch.cat([next_ids.clamp(min=0).to(dev)[:, None], tracked.to(dev)[None, :].expand(z.shape[0], -1)], 1)
        with HeldUnembed(self.decoder) as u:
            o = self.certify.stats(z, eps, x, u.weight, u.bias, u.softcap, ids, self.k, p_final, group)  # type: ignore[union-attr]
        self.tally.add(o, self.certify)  # type: ignore[arg-type]
        stats = (o["ranks"], o["lse"], o["neg_entropy"], o["cross"])
        return stats, (o["topk_logits"], o["topk_ids"]), o["target_logits"]

    @torch.inference_mode()
    def reduce_logits(
        self,
        z: torch.Tensor,
        x: torch.Tensor,
        next_ids: torch.Tensor,
        tracked: torch.Tensor,
        final: tuple[torch.Tensor, torch.Tensor],
        group: int = 1,
        nonfinite: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """:meth:`reduce` of rows whose logits ``z`` (from :meth:`logits`) are already computed
        (e.g. read first by :func:`js_divergence`). May overwrite ``z``."""
        r = x.shape[0]
        dev = z.device
        cert = self._certified_stats(z, x, next_ids, tracked, final[0], group)
        if cert is not None:
            stats, (top_logits, top_ids), targets = cert
        else:
            next_logit = z.gather(1, next_ids.clamp(min=0).to(dev)[:, None])
            tracked_logit = z[:, tracked.to(dev)] if tracked.numel() else z.new_empty(r, 0)
            targets = torch.cat([next_logit, tracked_logit], 1)
            fused = self._fused_stats(z, targets, final[0], group)
            if fused is not None:
                stats, (top_logits, top_ids) = fused
            else:
                top_logits, top_ids = torch.topk(z, self.k, dim=-1)
                stats = self._eager_stats(z, targets, final[0], group)  # overwrites z: after top-k
        bad = ~torch.isfinite(x).all(-1) if nonfinite is None else nonfinite.to(dev) | ~torch.isfinite(x).all(-1)
        return cell_outputs(stats, top_ids, top_logits, targets[:, 0], targets[:, 1:], next_ids.to(dev) >= 0, bad, final[1], group)


class CertifiedTally:
    """What a reducer's certified chunks did (:meth:`report`), and whether it gave up certifying
    (too many rows went back to the float32 path)."""

    def __init__(self) -> None:
        self.chunks = self.rows = self.fallback_rows = self.window = self.union = 0
        self.gave_up = False

    def add(self, o: dict[str, torch.Tensor], certify: "certified.Certify") -> None:
        self.chunks += 1
        self.rows += int(o["fallback"].numel())
        self.fallback_rows += int(o["fallback"].sum())
        self.window += int(o["window"].sum())
        self.union += int(o["union"])
        if self.chunks >= certify.GIVE_UP_AFTER and self.fallback_rows > certify.give_up * self.rows:
            self.gave_up = True

    def report(self) -> dict[str, Any]:
        """Plain numbers: chunks, rows, the share of rows recomputed in float32, the mean window
        (columns recounted for a row's ranks and top-k), the mean union (columns recounted per
        chunk), whether it gave up."""
        return {"chunks": self.chunks, "rows": self.rows, "fallback_share": self.fallback_rows / max(1, self.rows),
                "mean_window": self.window / max(1, self.rows), "mean_union": self.union / max(1, self.chunks), "gave_up": self.gave_up}


class HeldUnembed:
    """``with HeldUnembed(decoder) as u``: the decoder's :class:`~lens_widget.unembed.Unembed` with its
    weights held (a :class:`~lens_widget.decoders.Decoder` inside ``loaded()``; the in-trace lens
    is a bare ``Unembed`` whose weights are set)."""

    def __init__(self, decoder: Any):
        self.decoder = decoder
        self._ctx = decoder.loaded() if hasattr(decoder, "loaded") else None

    def __enter__(self) -> Any:
        if self._ctx is not None:
            self._ctx.__enter__()
        return getattr(self.decoder, "unembedding", self.decoder)

    def __exit__(self, *exc: Any) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


def cell_outputs(stats, top_ids, top_logits, next_logit, tracked_logit, has_next, nonfinite, neg_h_final, group: int) -> dict[str, torch.Tensor]:
    """The per-cell arrays from the reductions' raw statistics (NaN where undefined)."""
    ranks, lse, neg_entropy, cross = stats
    nonfinite = nonfinite | ~torch.isfinite(lse)
    n_pos = lse.shape[0] // group
    nan = torch.tensor(float("nan"), device=lse.device)
    out = {
        "topk_ids": top_ids,
        "topk_logits": top_logits,
        "topk_probs": (top_logits - lse[:, None]).exp(),
        "entropy": -neg_entropy,
        # cells without a next token carry no next-token numbers
        "next_logit": torch.where(has_next, next_logit, nan),
        "next_prob": torch.where(has_next, (next_logit - lse).exp(), nan),
        "next_rank": torch.where(has_next, ranks[:, 0], torch.zeros_like(ranks[:, 0])),
        "tracked_logit": tracked_logit,
        "tracked_prob": (tracked_logit - lse[:, None]).exp(),
        "tracked_rank": ranks[:, 1:],
        "kl": neg_h_final[:n_pos].repeat_interleave(group) - cross,
        "nonfinite": nonfinite,
    }
    # rows whose activations overflowed are flagged, not drawn as data
    if bool(nonfinite.any()):
        for key in ("topk_probs", "topk_logits", "entropy", "next_prob", "next_logit", "tracked_prob", "tracked_logit", "kl"):
            v = out[key]
            out[key] = torch.where(nonfinite.view(-1, *([1] * (v.dim() - 1))), nan, v)
    return out


class Lane:
    """One decoder reading one prompt's columns in :func:`reduce_columns`.

    ``reducer`` decodes and reduces (its decoder prepares and unembeds); ``acts(site, c0, c1)``
    gives the ``[c1 - c0, d]`` activations of ``site`` at columns ``c0:c1``; ``next_ids [n_cols]``
    the token after each column (``-1``: none); ``put(s0, s1, c0, c1, cells)`` takes the cells
    of sites ``s0:s1`` x columns ``c0:c1`` (tensors ``[(c1 - c0) * (s1 - s0), ...]``,
    position-major)."""

    def __init__(self, reducer: ChunkReducer, acts: Callable[[str, int, int], torch.Tensor], next_ids: torch.Tensor,
                 put: Callable[[int, int, int, int, dict], Any]):
        self.reducer, self.acts, self.next_ids, self.put = reducer, acts, next_ids, put


@torch.inference_mode()
def reduce_columns(
    lanes: Sequence[Lane],
    sites: Sequence[str],
    final_site: str,
    n_cols: int,
    block: int,
    group: int,
    tracked: torch.Tensor,
    *,
    between: Callable[[int, int, int, int, list], Any] | None = None,
    done: Callable[[int], Any] | None = None,
) -> None:
    """The chunk loop, the one every lens computation runs: ``n_cols`` columns in blocks of
    ``block`` positions x groups of ``group`` sites; per block each lane's final-layer
    distribution, per chunk each lane's rows prepared, unembedded and reduced (never a
    ``[sites, positions, vocab]`` tensor).

    Several lanes read the same columns: several lenses over one recording (decoded one after
    the other, sharing buffers), or the two sides of a comparison, whose logits ``between(s0,
    s1, c0, c1, [z of each lane])`` reads before they are reduced (the exact JS divergence).
    When one group holds every site, the final distribution comes from the chunk's own logits
    (no second product of the final rows). ``done(n)`` is called after every ``n`` chunks
    reduced (progress, stop).
    """
    certifying = any(lane.reducer.certify is not None for lane in lanes)
    if between is not None and certifying:
        raise ValueError("between() reads every logit of a chunk: compared lanes decode through the float32 path")
    S = len(sites)
    f = list(sites).index(final_site) if final_site in sites else None
    # certified logits are approximate: the final distribution then comes from its own rows
    from_chunk = f is not None and group >= S and not certifying
    for c0 in range(0, n_cols, block):
        c1 = min(n_cols, c0 + block)
        n = c1 - c0
        finals = [None if from_chunk else lane.reducer.final(lane.acts(final_site, c0, c1), final_site) for lane in lanes]
        for s0 in range(0, S, group):
            s1 = min(S, s0 + group)
            g = s1 - s0
            chunk_sites = list(sites[s0:s1])

            def decode(lane: Lane) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
                x, bad = lane.reducer.prepare_rows([lane.acts(site, c0, c1) for site in chunk_sites], chunk_sites)
                return x, bad, lane.reducer.logits(x)

            def finish(i: int, x: torch.Tensor, bad: torch.Tensor, z: torch.Tensor) -> None:
                lane = lanes[i]
                final = finals[i]
                if final is None:  # the final site's rows are among the chunk's
                    final = lane.reducer.final_from_logits(z.view(n, g, -1)[:, f - s0])  # type: ignore[operator]
                nxt = lane.next_ids[c0:c1].repeat_interleave(g)
                lane.put(s0, s1, c0, c1, lane.reducer.reduce_logits(z, x, nxt, tracked, final, g, bad))

            if between is None:
                for i, lane in enumerate(lanes):
                    finish(i, *decode(lane))
                    if done is not None:
                        done(1)
            else:
                decoded = [decode(lane) for lane in lanes]
                between(s0, s1, c0, c1, [d[2] for d in decoded])
                for i, d in enumerate(decoded):
                    finish(i, *d)
                if done is not None:
                    done(len(lanes))
