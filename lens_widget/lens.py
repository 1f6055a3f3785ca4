"""The logit lens: decode residual rows through the model's own final norm and unembedding,
and reduce each (site, position) cell to a few numbers, in row chunks, without ever holding a
``[sites, positions, vocab]`` tensor.

Per chunk of ``r`` rows the work is one ``[r, d] x [d, V]`` matmul into a preallocated float32
buffer, then passes over that buffer: exact ranks (strict ``>`` counts on the raw logits), top-k,
log-sum-exp, log-softmax in place, entropy and KL(final ‖ layer) as batched dot products.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .extraction import ActivationCache, resolve_positions
from .hooked import HookedModel, _select_matrix
from .models import get_path
from .result import LensResult

__all__ = ["Decoder", "LogitLens", "ChunkReducer", "DEFAULT_MEMORY_BUDGET"]

#: Bytes of scratch memory the reducer may use for its logits buffers.
DEFAULT_MEMORY_BUDGET = 512 * 2**20
_METRICS = ("logit_lens", "logit_diff")
_EXP_FLOOR = -87.0
_TOPK_BLOCK = 64  # exp(-87) ~ 1.6e-38, the smallest normal float32


class Decoder:
    """final norm -> (projection) -> unembedding (+ bias) -> (soft-cap), float32 logits.

    The norm is the model's own module, so its statistics are recomputed for every row (the
    classic lens) and variants such as Gemma's ``(1 + w)`` scale come out right. For a
    half-precision model the unembedding is copied once to float32 (``V x d x 4`` bytes).
    """

    def __init__(self, hooked: HookedModel):
        model, arch = hooked.model, hooked.arch
        self.norm = get_path(model, arch.final_norm) if arch.final_norm else None
        post = None
        if arch.post_norm:
            try:
                post = get_path(model, arch.post_norm)
            except AttributeError:
                post = None
        self.post = post
        head = model.get_output_embeddings()
        w = head.weight.detach()
        self.weight = w if w.dtype == torch.float32 else w.float()
        bias = getattr(head, "bias", None)
        self.bias = None if bias is None else bias.detach().float()
        cap = getattr(model.config, "final_logit_softcapping", None)
        self.softcap = float(cap) if cap else None
        self.in_dtype = next((p.dtype for p in (self.norm.parameters() if self.norm else [])), w.dtype)
        self.device = w.device
        self.vocab = int(w.shape[0])

    def prepare(self, h: torch.Tensor, apply_norm: bool = True) -> torch.Tensor:
        """The float32 vectors that the unembedding multiplies."""
        x = h.to(device=self.device, dtype=self.in_dtype)
        if apply_norm and self.norm is not None:
            x = self.norm(x)
        if self.post is not None:
            x = self.post(x)
        return x.float()

    def finish(self, z: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Bias and soft-cap, in place (``ids`` when ``z`` holds only some vocabulary columns)."""
        if self.bias is not None:
            z.add_(self.bias if ids is None else self.bias[ids])
        if self.softcap is not None:
            z.div_(self.softcap).tanh_().mul_(self.softcap)
        return z

    @torch.inference_mode()
    def logits(self, h: torch.Tensor, apply_norm: bool = True, out: torch.Tensor | None = None) -> torch.Tensor:
        """``[..., d] -> [..., V]`` float32 logits of residual vectors."""
        x = self.prepare(h, apply_norm)
        z = torch.matmul(x, self.weight.T, out=out) if out is not None else x @ self.weight.T
        return self.finish(z)

    @torch.inference_mode()
    def logits_of(self, h: torch.Tensor, ids: torch.Tensor, apply_norm: bool = True) -> torch.Tensor:
        """``[..., d] -> [..., len(ids)]``: logits of some tokens only."""
        ids = ids.to(self.device)
        z = self.prepare(h, apply_norm) @ self.weight[ids].T
        return self.finish(z, ids)


def _cell_stats(z: torch.Tensor, targets: torch.Tensor, p_final: torch.Tensor, m: torch.Tensor | None = None):
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


def _cell_stats_blocked(z: torch.Tensor, targets: torch.Tensor, p_final: torch.Tensor):
    """:func:`_cell_stats` plus the maxima of blocks of ``_TOPK_BLOCK`` logits, in the same pass,
    so that top-k reads only k blocks per row (:func:`blocked_topk`)."""
    block_max = z.view(*z.shape[:-1], -1, _TOPK_BLOCK).amax(-1)
    return (*_cell_stats(z, targets, p_final, block_max.amax(-1, keepdim=True)), block_max)


def blocked_topk(z: torch.Tensor, block_max: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(z, k)`` from per-block maxima: exact, reading only k blocks per row.

    Each of the k largest logits lies in a block whose maximum is at least the k-th largest
    logit, and at most k blocks have such a maximum (ties aside, where top-k is arbitrary anyway).
    """
    r, n_blocks = block_max.shape
    blocks = torch.topk(block_max, k, dim=-1).indices  # [r, k]
    cand = z.view(r, n_blocks, _TOPK_BLOCK).gather(1, blocks[..., None].expand(r, k, _TOPK_BLOCK))
    values, local = torch.topk(cand.view(r, -1), k, dim=-1)
    ids = blocks.gather(1, local // _TOPK_BLOCK) * _TOPK_BLOCK + local % _TOPK_BLOCK
    return values, ids


_COMPILED: dict[str, Any] = {}


def _compiled(fn: Any) -> Any:
    """``torch.compile(fn)``, once per process (None when disabled with LENS_WIDGET_COMPILE=0)."""
    if os.environ.get("LENS_WIDGET_COMPILE", "1") == "0":
        return None
    if fn.__name__ not in _COMPILED:
        _COMPILED[fn.__name__] = torch.compile(fn, dynamic=True)
    return _COMPILED[fn.__name__]


class ChunkReducer:
    """Reduces chunks of rows to per-cell statistics with reused scratch buffers.

    Fresh ``[rows, V]`` tensors are served by mmap and re-faulted on every chunk; keeping the
    logits buffer alive and writing with ``out=`` avoids that. The reductions run fused through
    ``torch.compile`` (about 3x fewer memory passes); if compiling fails, the same statistics
    come from eager passes over preallocated buffers.
    """

    def __init__(self, decoder: Decoder, max_rows: int, k: int, compile: bool = True):
        V, dev = decoder.vocab, decoder.device
        self.decoder, self.k, self.max_rows = decoder, min(k, V), max_rows
        self.z = torch.empty(max_rows, V, dtype=torch.float32, device=dev)
        self.compile = compile
        self._p: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None

    @staticmethod
    def rows_for_budget(vocab: int, budget: int) -> int:
        """Rows per chunk: logits and eager scratch (4 B each), a mask (1 B), final probs (4 B)."""
        return max(1, int(budget // (vocab * 13)))

    def _scratch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._p is None or self._mask is None:
            self._p = torch.empty_like(self.z)
            self._mask = torch.empty(self.z.shape, dtype=torch.bool, device=self.z.device)
        return self._p, self._mask

    @torch.inference_mode()
    def final_distribution(self, h: torch.Tensor, apply_norm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities ``[r, V]`` (a new tensor) and negative entropy ``[r]`` of final-layer rows."""
        logp = torch.log_softmax(self.decoder.logits(h, apply_norm), dim=-1)
        # exp of arguments below float32's normal range is 15-40x slower on CPU (Gemma's early
        # layers span hundreds of nats); those probabilities are < 1e-37 either way.
        p = logp.clamp(min=_EXP_FLOOR).exp_()
        neg_h = (p * logp).sum(-1)
        return p, neg_h

    def _eager_stats(self, z: torch.Tensor, targets: torch.Tensor, p_final: torch.Tensor, group: int):
        """:func:`_cell_stats` in passes over preallocated buffers (no ``[r, V]`` temporaries)."""
        r = z.shape[0]
        p, mask = self._scratch()
        ranks = torch.stack(
            [torch.gt(z, targets[:, j : j + 1], out=mask[:r]).view(torch.uint8).sum(-1, dtype=torch.int32) + 1 for j in range(targets.shape[1])],
            -1,
        )
        zmax = z.amax(-1)
        lse = zmax + torch.sub(z, zmax[:, None], out=p[:r]).clamp_(min=_EXP_FLOOR).exp_().sum(-1).log()
        logp = torch.sub(z, lse[:, None], out=p[:r])
        # torch's eager sums are cascaded (accurate in float32); products reuse z, read already
        neg_entropy = torch.mul(torch.clamp(logp, min=_EXP_FLOOR, out=z).exp_(), logp, out=z).sum(-1)
        n_pos = r // group
        cross = torch.mul(logp.view(n_pos, group, -1), p_final[:n_pos, None, :], out=z.view(n_pos, group, -1)).sum(-1).view(-1)
        return ranks, lse, neg_entropy, cross

    @torch.inference_mode()
    def reduce(
        self,
        h: torch.Tensor,
        next_ids: torch.Tensor,
        tracked: torch.Tensor,
        final: tuple[torch.Tensor, torch.Tensor],
        group: int = 1,
        apply_norm: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Statistics of ``r`` rows ``h [r, d]``.

        ``next_ids [r]`` (``-1`` = none), ``tracked [M]`` ids, ``final`` the final layer's
        (probabilities, negative entropy) for the chunk's positions. Rows are ordered
        position-major in groups of ``group`` sites: row ``i`` belongs to position ``i // group``.
        """
        r = h.shape[0]
        n_pos = r // group
        z = self.decoder.logits(h, apply_norm, out=self.z[:r])
        dev = z.device
        has_next = (next_ids >= 0).to(dev)
        next_logit = z.gather(1, next_ids.clamp(min=0).to(dev)[:, None])
        M = int(tracked.numel())
        tracked_logit = z[:, tracked.to(dev)] if M else z.new_empty(r, 0)
        targets = torch.cat([next_logit, tracked_logit], 1)
        nonfinite = ~torch.isfinite(h).all(-1).to(dev)
        p_final, neg_h_final = final
        stats = None
        V = z.shape[1]
        blocked = V % _TOPK_BLOCK == 0 and self.k <= V // _TOPK_BLOCK
        fused = _compiled(_cell_stats_blocked if blocked else _cell_stats) if self.compile else None
        if fused is not None:
            try:
                out = fused(z.view(n_pos, group, -1), targets.view(n_pos, group, -1), p_final[:n_pos, None, :])
                stats = out[0].view(r, -1), out[1].view(r), out[2].view(r), out[3].view(r)
                top_logits, top_ids = blocked_topk(z, out[4].view(r, -1), self.k) if blocked else torch.topk(z, self.k, dim=-1)
            except Exception as exc:  # no C++ compiler, unsupported device, ...: eager is exact too
                warnings.warn(f"lens_widget: torch.compile of the reductions failed ({type(exc).__name__}); using eager passes")
                self.compile = False
                stats = None
        if stats is None:
            top_logits, top_ids = torch.topk(z, self.k, dim=-1)
            stats = self._eager_stats(z, targets, p_final, group)  # overwrites z: after top-k
        ranks, lse, neg_entropy, cross = stats
        nonfinite |= ~torch.isfinite(lse)
        out = {
            "topk_ids": top_ids,
            "topk_logits": top_logits,
            "topk_probs": (top_logits - lse[:, None]).exp(),
            "entropy": -neg_entropy,
            "next_logit": next_logit[:, 0],
            "next_prob": (next_logit[:, 0] - lse).exp(),
            "next_rank": ranks[:, 0],
            "tracked_logit": tracked_logit,
            "tracked_prob": (tracked_logit - lse[:, None]).exp(),
            "tracked_rank": ranks[:, 1:],
            "kl": neg_h_final[:n_pos].repeat_interleave(group) - cross,
            "nonfinite": nonfinite,
        }
        # Cells without a next token carry no next-token numbers.
        nan = torch.tensor(float("nan"), device=dev)
        for key in ("next_logit", "next_prob"):
            out[key] = torch.where(has_next, out[key], nan)
        out["next_rank"] = torch.where(has_next, out["next_rank"], torch.zeros_like(out["next_rank"]))
        # Rows whose activations overflowed are flagged, not drawn as data.
        if bool(nonfinite.any()):
            for key in ("topk_probs", "topk_logits", "entropy", "next_prob", "next_logit", "tracked_prob", "tracked_logit", "kl"):
                v = out[key]
                out[key] = torch.where(nonfinite.view(-1, *([1] * (v.dim() - 1))), nan, v)
        return out


class LogitLens:
    """The lens over a :class:`HookedModel`: the tutorial's ``compute`` and the grid's ``run``."""

    def __init__(self, model: HookedModel, memory_budget: int = DEFAULT_MEMORY_BUDGET, compile: bool = True):
        """``memory_budget``: bytes of scratch for logits chunks; ``compile``: fuse the per-chunk
        reductions with ``torch.compile`` (first call compiles for a few seconds; falls back to
        eager passes if compiling fails; ``LENS_WIDGET_COMPILE=0`` turns it off everywhere)."""
        self.model = model
        self.decoder = Decoder(model)
        self.memory_budget = int(memory_budget)
        self.compile = bool(compile)

    @classmethod
    def from_model(cls, model: HookedModel, **kwargs: Any) -> "LogitLens":
        return cls(model, **kwargs)

    @classmethod
    def from_model_name(cls, name_or_path: str, **hf_kwargs: Any) -> "LogitLens":
        """Load a model (see :meth:`HookedModel.from_pretrained`) and build its lens."""
        return cls(HookedModel.from_pretrained(name_or_path, **hf_kwargs))

    # -- token helpers ---------------------------------------------------------------------
    def _token_ids(self, tokens: Iterable[int | str]) -> torch.Tensor:
        return torch.tensor([self.model.tokens.token_id(t) for t in tokens], dtype=torch.long)

    # -- the reference tutorial's call -----------------------------------------------------
    def compute(
        self,
        activations: ActivationCache | dict[str, torch.Tensor],
        target_key: str,
        apply_norm: bool = True,
        apply_softmax: bool = False,
        token_directions: Sequence[Any] | None = None,
        metric: str | None = None,
        progress: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Decode cached activations.

        ``target_key`` is a cache key (``"resid_out_3"``) or a pattern with ``{i}``
        (``"resid_out_{i}"``: every layer in the cache). Without a metric the result is
        ``{"logit_lens_<key>": [batch, positions, vocab]}`` (logits, or probabilities with
        ``apply_softmax``). With ``metric="logit_diff"`` and ``token_directions=[(a, b), ...]``
        (ids or single-token strings) it is ``{"logit_diff_<key>": [batch, positions]}`` for one
        pair, ``[batch, positions, pairs]`` for several. Padded positions are NaN.
        """
        if metric is None:
            metric = "logit_diff" if token_directions else "logit_lens"
        if metric not in _METRICS:
            raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(_METRICS)} (or None)")
        if metric == "logit_diff" and not token_directions:
            raise ValueError("metric='logit_diff' needs token_directions=[(token_a, token_b), ...]")
        keys = self._expand_key(activations, target_key)
        pairs = self._pairs(token_directions) if metric == "logit_diff" else None
        out: dict[str, torch.Tensor] = {}
        for key in tqdm(keys, desc=f"Computing Logit Lens of {target_key}", disable=not progress or len(keys) < 2):
            h = activations[key]
            valid = getattr(activations, "positions", None)
            valid = (valid >= 0) if isinstance(valid, torch.Tensor) and valid.shape == h.shape[:2] else None
            if pairs is not None:
                ids = pairs.reshape(-1)
                z = self.decoder.logits_of(h, ids, apply_norm).view(*h.shape[:-1], -1, 2)
                value = z[..., 0] - z[..., 1]
                value = value[..., 0] if pairs.shape[0] == 1 else value
                name = f"logit_diff_{key}"
            else:
                value = self._full(h, apply_norm, apply_softmax)
                name = f"logit_lens_{key}"
            if valid is not None:
                value = value.masked_fill(~valid.view(*valid.shape, *([1] * (value.dim() - 2))).to(value.device), float("nan"))
            out[name] = value
        return out

    def _full(self, h: torch.Tensor, apply_norm: bool, apply_softmax: bool) -> torch.Tensor:
        flat = h.reshape(-1, h.shape[-1])
        out = torch.empty(flat.shape[0], self.decoder.vocab, dtype=torch.float32, device=self.decoder.device)
        step = ChunkReducer.rows_for_budget(self.decoder.vocab, self.memory_budget)
        for i in range(0, flat.shape[0], step):
            z = self.decoder.logits(flat[i : i + step], apply_norm)
            out[i : i + step] = torch.softmax(z, -1) if apply_softmax else z
        return out.view(*h.shape[:-1], -1)

    def _pairs(self, directions: Sequence[Any]) -> torch.Tensor:
        pairs = []
        for d in directions:
            if not isinstance(d, (tuple, list)) or len(d) != 2:
                raise ValueError(f"each token direction must be a pair (token_a, token_b), got {d!r}")
            pairs.append([self.model.tokens.token_id(d[0]), self.model.tokens.token_id(d[1])])
        return torch.tensor(pairs, dtype=torch.long)

    @staticmethod
    def _expand_key(activations: Any, target_key: str) -> list[str]:
        if "{i}" in target_key:
            prefix, suffix = target_key.split("{i}", 1)
            keys = [k for k in activations.keys() if k.startswith(prefix) and k.endswith(suffix) and k[len(prefix) : len(k) - len(suffix) or None].isdigit()]
            keys.sort(key=lambda k: int(k[len(prefix) : len(k) - len(suffix) or None]))
            if not keys:
                raise KeyError(f"no cache key matches {target_key!r}; the cache holds {', '.join(activations.keys())}")
            return keys
        if target_key not in activations:
            raise KeyError(f"{target_key!r} is not in the cache; it holds {', '.join(activations.keys())}")
        return [target_key]

    # -- the grid's call -------------------------------------------------------------------
    def run(
        self,
        prompts: Any,
        *,
        sites: str | Sequence[str] | None = None,
        positions: Any = "all",
        k: int = 10,
        track: Iterable[int | str] = (),
        track_top: int = 0,
        batch_size: int = 4,
        progress: bool = True,
        return_activations: bool = False,
    ) -> LensResult | tuple[LensResult, list[dict[str, torch.Tensor]]]:
        """The lens of every (site, position) cell of one or more prompts, reduced.

        Args:
            prompts: one prompt or a list (different lengths are fine), or token ids / a
                tokenizer output (see :meth:`HookedModel.as_batch`).
            sites: ``None``/``"resid"`` (embeddings + every block output), ``"all"``, or names.
            positions: see :func:`~lens_widget.extraction.resolve_positions`.
            k: top tokens kept per cell.
            track: token ids or single-token strings whose probability, logit and exact rank
                are kept at every cell.
            track_top: also track the final layer's top-N tokens at each prompt's last position.
            batch_size: prompts per forward pass.
            return_activations: also return, per prompt, ``{site: [P, d]}`` on the model's device
                (what the widget keeps to answer clicks exactly).
        """
        hm = self.model
        site_names = hm.site_names(sites)
        if int(k) < 1:
            raise ValueError("k must be at least 1")
        final_site = f"resid_out_{hm.num_layers - 1}"
        record = list(dict.fromkeys(site_names + [final_site]))
        batch_all = hm.as_batch(prompts)
        pos_lists = [resolve_positions(positions, int(n)) for n in batch_all.lengths]
        tracked = self._token_ids(track)
        if track_top:
            tracked = torch.cat([tracked, self._final_top(batch_all, int(track_top))])
        tracked = torch.tensor(list(dict.fromkeys(tracked.tolist())), dtype=torch.long)

        B, S, P, M = len(pos_lists), len(site_names), max(len(p) for p in pos_lists), int(tracked.numel())
        kk = min(int(k), self.decoder.vocab)
        store = _ResultStore(B, S, P, kk, M)
        max_rows = ChunkReducer.rows_for_budget(self.decoder.vocab, self.memory_budget)
        reducer = ChunkReducer(self.decoder, max_rows, kk, compile=self.compile)
        group = min(S, max_rows)
        block = max(1, max_rows // group)
        total = sum(math.ceil(len(p) / block) * math.ceil(S / group) for p in pos_lists)
        bar = tqdm(total=total, desc="Logit lens", unit="chunk", disable=not progress)
        kept: list[dict[str, torch.Tensor]] = []
        try:
            for start in range(0, B, max(1, int(batch_size))):
                idx = list(range(start, min(B, start + int(batch_size))))
                batch = hm.pad([batch_all.input_ids[i, : int(batch_all.lengths[i])].tolist() for i in idx])
                select, _ = _select_matrix([pos_lists[i] for i in idx])
                acts, _ = hm.run_with_sites(batch, record, select)
                for j, b in enumerate(idx):
                    n_pos = len(pos_lists[b])
                    pos_t = torch.as_tensor(pos_lists[b])
                    ids_b = batch.input_ids[j, : int(batch.lengths[j])]
                    nxt = torch.where(pos_t + 1 < ids_b.numel(), ids_b[(pos_t + 1).clamp(max=ids_b.numel() - 1)], -1)
                    for p0 in range(0, n_pos, block):
                        p1 = min(n_pos, p0 + block)
                        final = reducer.final_distribution(acts[final_site][j, p0:p1])
                        for s0 in range(0, S, group):
                            s1 = min(S, s0 + group)
                            h = torch.stack([acts[site][j, p0:p1] for site in site_names[s0:s1]], 1)
                            g = s1 - s0
                            stats = reducer.reduce(
                                h.reshape(-1, h.shape[-1]), nxt[p0:p1].repeat_interleave(g), tracked, final, group=g
                            )
                            store.put(b, slice(s0, s1), slice(p0, p1), stats, g)
                            bar.update(1)
                    if return_activations:
                        kept.append({site: acts[site][j, :n_pos] for site in record})
                del acts
        finally:
            bar.close()

        input_ids = np.full((B, int(batch_all.input_ids.shape[1])), -1, dtype=np.int64)
        for b in range(B):
            n = int(batch_all.lengths[b])
            input_ids[b, :n] = batch_all.input_ids[b, :n].numpy()
        positions_np = np.full((B, P), -1, dtype=np.int64)
        next_np = np.full((B, P), -1, dtype=np.int64)
        for b, pl in enumerate(pos_lists):
            n = int(batch_all.lengths[b])
            positions_np[b, : len(pl)] = pl
            next_np[b, : len(pl)] = [int(input_ids[b, p + 1]) if p + 1 < n else -1 for p in pl]
        arrays = store.numpy()
        # KL and entropy are >= 0, KL(final || final) is 0 by definition: rounding (~1e-5) says otherwise.
        for key in ("kl", "entropy"):
            np.maximum(arrays[key], 0, out=arrays[key], where=~np.isnan(arrays[key]))
        if final_site in site_names:
            kl_final = arrays["kl"][:, site_names.index(final_site)]
            kl_final[~np.isnan(kl_final)] = 0.0
        used = set(input_ids[input_ids >= 0].tolist()) | set(np.unique(arrays["topk_ids"]).tolist()) | set(tracked.tolist())
        result = LensResult(
            prompts=list(batch_all.prompts),
            input_ids=input_ids,
            lengths=batch_all.lengths.numpy().astype(np.int64),
            sites=site_names,
            positions=positions_np,
            next_ids=next_np,
            tracked_ids=tracked.numpy().astype(np.int64),
            token_strings=hm.tokens.table(used),
            model_name=hm.name,
            **arrays,
        )
        return (result, kept) if return_activations else result

    def _final_top(self, batch: Any, n: int) -> torch.Tensor:
        last = (batch.lengths - 1)[:, None]
        acts, _ = self.model.run_with_sites(batch, [f"resid_out_{self.model.num_layers - 1}"], last)
        z = self.decoder.logits(next(iter(acts.values()))[:, 0])
        return torch.topk(z, min(n, z.shape[-1]), dim=-1).indices.reshape(-1).cpu()

    # -- one cell, exactly -----------------------------------------------------------------
    @torch.inference_mode()
    def cell_detail(self, h: torch.Tensor, k: int = 50, token_ids: Sequence[int] = ()) -> dict[str, Any]:
        """Full-vocabulary detail of one residual vector ``h [d]``: top-k and any tokens' ranks."""
        z = self.decoder.logits(h[None])[0]
        logp = torch.log_softmax(z, -1)
        top = torch.topk(z, min(int(k), z.numel()))
        ids = torch.as_tensor(list(token_ids), dtype=torch.long)
        stats = []
        for t in ids.tolist():
            stats.append({"id": int(t), "logit": float(z[t]), "prob": float(logp[t].exp()), "rank": int((z > z[t]).sum()) + 1})
        return {
            "top_ids": top.indices.cpu().numpy().astype(np.int32),
            "top_logits": top.values.cpu().numpy().astype(np.float32),
            "top_probs": logp[top.indices].exp().cpu().numpy().astype(np.float32),
            "entropy": float(-(logp.exp() * logp).sum()),
            "token_stats": stats,
        }


class _ResultStore:
    """Output arrays ``[B, S, P, ...]`` filled chunk by chunk (rows come position-major)."""

    def __init__(self, B: int, S: int, P: int, k: int, M: int):
        f, i = np.float32, np.int64
        nan = np.nan
        self.a = {
            "topk_ids": np.full((B, S, P, k), -1, i),
            "topk_probs": np.full((B, S, P, k), nan, f),
            "topk_logits": np.full((B, S, P, k), nan, f),
            "entropy": np.full((B, S, P), nan, f),
            "next_prob": np.full((B, S, P), nan, f),
            "next_logit": np.full((B, S, P), nan, f),
            "next_rank": np.zeros((B, S, P), i),
            "kl": np.full((B, S, P), nan, f),
            "tracked_prob": np.full((B, S, P, M), nan, f),
            "tracked_logit": np.full((B, S, P, M), nan, f),
            "tracked_rank": np.zeros((B, S, P, M), i),
            "nonfinite": np.zeros((B, S, P), bool),
        }

    def put(self, b: int, sites: slice, pos: slice, stats: dict[str, torch.Tensor], group: int) -> None:
        n_pos = pos.stop - pos.start
        for key, arr in self.a.items():
            v = stats[key].detach().cpu().numpy()
            v = v.reshape(n_pos, group, *v.shape[1:])  # [pos, site, ...]
            arr[b, sites, pos] = np.swapaxes(v, 0, 1)

    def numpy(self) -> dict[str, np.ndarray]:
        return self.a
