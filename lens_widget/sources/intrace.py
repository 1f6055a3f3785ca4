"""The lens as it runs next to the model, inside an nnsight trace (locally or on NDIF).

This module imports only ``torch`` and :mod:`lens_widget.reduce`'s two pure functions, and it is
registered with nnsight to travel *by value* (its source, not a reference to an installed
package that NDIF does not have): :func:`in_trace` is what a remote trace's body calls. Its
arguments are plain data (tensors, numbers, strings, module paths); the model's modules are
reached through the trace's root envoy, so no weights travel, and only the reduced arrays come
back.

Three tasks, each over the ``[B, P]`` positions of ``select``:

* ``"record"``: the sites' activations (``[B, P, d]``; local sources, small remote requests);
* ``"lens"``: every (site, position) cell reduced exactly like the engine does it, chunk by
  chunk over rows (``ChunkReducer``'s statistics; see :func:`lens_cells`);
* ``"detail"``: full-vocabulary top-``n`` and any tokens' logit/probability/exact rank at some
  sites of one position (cell detail, trajectories, ``track_top``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..reduce import EXP_FLOOR, cell_outputs, cell_stats

__all__ = ["in_trace", "lens_cells", "detail", "ORDER"]

#: Forward order of the raw points inside one block (nnsight reads modules in forward order).
ORDER = {"in": 0, "attn_out": 1, "mid": 2, "mlp_out": 3, "out": 4}


def _resolve(root: Any, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def _take(x: Any, select: torch.Tensor) -> torch.Tensor:
    if isinstance(x, (tuple, list)):
        x = x[0]
    if x.dim() == 2:  # some blocks (OPT) flatten [batch * tokens, d] around the MLP
        x = x.view(select.shape[0], -1, x.shape[-1])
    rows = torch.arange(x.shape[0], device=x.device)[:, None]
    return x.detach()[rows, select.to(x.device)]


def record(root: Any, points: list[tuple[str, str, str]], recipe: dict[str, tuple[str, str | None]], select: torch.Tensor) -> dict[str, torch.Tensor]:
    """``points``: ``(name, module path, "input" | "output")`` in forward order; ``recipe``:
    ``site -> (a, b)``: the site is raw ``a`` (minus raw ``b`` when given)."""
    raw = {}
    for name, path, kind in points:
        env = _resolve(root, path)
        raw[name] = _take(env.input if kind == "input" else env.output, select)
    return {site: raw[a] if b is None else raw[a] - raw[b] for site, (a, b) in recipe.items()}


class _Lens:
    """The plain logit lens over the model's own final norm, projection and unembedding."""

    def __init__(self, root: Any, spec: dict[str, Any]):
        self.norm = _resolve(root, spec["norm"]) if spec.get("norm") else None
        self.post = _resolve(root, spec["post"]) if spec.get("post") else None
        head = _resolve(root, spec["head"])
        self.weight = head.weight.detach()
        bias = getattr(head, "bias", None)
        self.bias = None if bias is None else bias.detach().float()
        self.softcap = spec.get("softcap")
        self.in_dtype = getattr(torch, spec["in_dtype"])
        self.upcast_rows = max(1, int(spec.get("upcast_bytes", 32 * 2**20)) // (4 * self.weight.shape[1]))
        self.vocab = int(self.weight.shape[0])
        self.device = self.weight.device

    def prepare(self, h: torch.Tensor) -> torch.Tensor:
        x = h.to(device=self.device, dtype=self.in_dtype)
        if self.norm is not None:
            x = self.norm(x)
        if self.post is not None:
            x = self.post(x)
        return x.to(device=self.device, dtype=torch.float32)

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if w.dtype == torch.float32:
            z = x @ w.T
        else:  # upcast one block of rows at a time: no full float32 copy of the unembedding
            z = torch.empty(x.shape[0], self.vocab, dtype=torch.float32, device=x.device)
            for v0 in range(0, self.vocab, self.upcast_rows):
                v1 = min(self.vocab, v0 + self.upcast_rows)
                torch.mm(x, w[v0:v1].float().T, out=z[:, v0:v1])
        if self.bias is not None:
            z.add_(self.bias)
        if self.softcap is not None:
            z.div_(self.softcap).tanh_().mul_(self.softcap)
        return z


def lens_cells(lens: _Lens, acts: dict[str, torch.Tensor], job: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every (site, position) cell of a forward batch, reduced like ``LogitLens._reduce_batch``
    (the same chunks: ``block`` positions x ``group`` sites), as ``[B, S, P, ...]`` arrays padded
    like the engine's result store."""
    sites, final_site = job["sites"], job["final_site"]
    next_ids, n_pos, tracked = job["next_ids"], job["n_pos"], job["tracked"].to(lens.device)
    k, block, group = int(job["k"]), int(job["block"]), int(job["group"])
    B, S, P, M = len(n_pos), len(sites), int(job["P"]), int(tracked.numel())
    # int32 ids and ranks (a vocabulary is far below 2**31): what comes back from NDIF is
    # 12k + 21 bytes per cell plus 12 per tracked token
    f32, i32, nan = torch.float32, torch.int32, float("nan")
    out = {
        "topk_ids": torch.full((B, S, P, k), -1, dtype=i32),
        "topk_probs": torch.full((B, S, P, k), nan, dtype=f32),
        "topk_logits": torch.full((B, S, P, k), nan, dtype=f32),
        "entropy": torch.full((B, S, P), nan, dtype=f32),
        "next_prob": torch.full((B, S, P), nan, dtype=f32),
        "next_logit": torch.full((B, S, P), nan, dtype=f32),
        "next_rank": torch.zeros((B, S, P), dtype=i32),
        "kl": torch.full((B, S, P), nan, dtype=f32),
        "tracked_prob": torch.full((B, S, P, M), nan, dtype=f32),
        "tracked_logit": torch.full((B, S, P, M), nan, dtype=f32),
        "tracked_rank": torch.zeros((B, S, P, M), dtype=i32),
        "nonfinite": torch.zeros((B, S, P), dtype=torch.bool),
    }
    with torch.no_grad():
        for b in range(B):
            for p0 in range(0, int(n_pos[b]), block):
                p1 = min(int(n_pos[b]), p0 + block)
                logp = torch.log_softmax(lens.unembed(lens.prepare(acts[final_site][b, p0:p1])), dim=-1)
                p_final = logp.clamp(min=EXP_FLOOR).exp_()
                neg_h_final = (p_final * logp).sum(-1)
                for s0 in range(0, S, group):
                    s1 = min(S, s0 + group)
                    g = s1 - s0
                    raw = torch.stack([acts[site][b, p0:p1] for site in sites[s0:s1]], 1)  # [n, g, d]
                    x = torch.stack([lens.prepare(acts[site][b, p0:p1]) for site in sites[s0:s1]], 1).reshape((p1 - p0) * g, -1)
                    z = lens.unembed(x)
                    nxt = next_ids[b, p0:p1].to(z.device).repeat_interleave(g)
                    next_logit = z.gather(1, nxt.clamp(min=0)[:, None])
                    tracked_logit = z[:, tracked] if M else z.new_empty(z.shape[0], 0)
                    targets = torch.cat([next_logit, tracked_logit], 1)
                    top_logits, top_ids = torch.topk(z, k, dim=-1)
                    n = p1 - p0
                    ranks, lse, neg_entropy, cross = cell_stats(z.view(n, g, -1), targets.view(n, g, -1), p_final[:, None, :])
                    stats = (ranks.reshape(n * g, -1), lse.reshape(-1), neg_entropy.reshape(-1), cross.reshape(-1))
                    bad = ~torch.isfinite(raw.reshape(n * g, -1)).all(-1).to(z.device) | ~torch.isfinite(x).all(-1)
                    cells = cell_outputs(stats, top_ids, top_logits, next_logit[:, 0], tracked_logit, nxt >= 0, bad, neg_h_final, g)
                    for key, v in cells.items():
                        v = v.detach().cpu().reshape(n, g, *v.shape[1:]).transpose(0, 1)
                        out[key][b, s0:s1, p0:p1] = v.to(out[key].dtype)
    return out


def detail(lens: _Lens, acts: dict[str, torch.Tensor], job: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Full-vocabulary statistics of one position's rows at ``job["sites"]``: top-``n`` ids and
    logits, log-sum-exp, entropy, and the logit and exact rank of ``job["ids"]`` (``[S, ...]``)."""
    ids = job["ids"].to(lens.device)
    n = int(job["n"])
    with torch.no_grad():
        z = torch.cat([lens.unembed(lens.prepare(acts[s][:, 0])) for s in job["sites"]])  # [S*B, V]
        lse = torch.logsumexp(z, -1)
        logp = z - lse[:, None]
        sel = z[:, ids]
        ranks = torch.stack([(z > sel[:, j : j + 1]).sum(-1) + 1 for j in range(sel.shape[1])], -1) if ids.numel() else sel.long()
        top = torch.topk(z, min(n, z.shape[-1]), dim=-1) if n else None
        return {
            "lse": lse.cpu(),
            "entropy": (-(logp.clamp(min=EXP_FLOOR).exp() * logp).sum(-1)).cpu(),
            "logits": sel.cpu(),
            "ranks": ranks.to(torch.int64).cpu(),
            "top_ids": None if top is None else top.indices.cpu(),
            "top_logits": None if top is None else top.values.cpu(),
        }


def in_trace(root: Any, points: list, recipe: dict, select: torch.Tensor, task: str, job: dict | None = None, spec: dict | None = None) -> dict[str, Any]:
    """The whole body of a lens trace: record the raw points (in forward order), then ``task``.
    Everything returned is small (``record`` aside) and already on the CPU."""
    with torch.no_grad():
        acts = record(root, points, recipe, select)
        if task == "record":
            return {k: v.cpu() for k, v in acts.items()}
        if task == "logits":
            out = root.output
            logits = out.logits if hasattr(out, "logits") else out[0]
            return {"logits": _take(logits, select).float().cpu()}
        lens = _Lens(root, spec or {})
        if task == "lens":
            return lens_cells(lens, acts, job or {})
        if task == "detail":
            return detail(lens, acts, job or {})
    raise ValueError(f"unknown in-trace task {task!r}")
