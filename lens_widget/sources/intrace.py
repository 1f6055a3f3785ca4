"""The lens as it runs next to the model, inside an nnsight trace (locally or on NDIF).

This module imports only ``torch`` and the torch-only modules that travel with it
(:mod:`lens_widget.reduce`: the chunk loop and reductions; :mod:`lens_widget.unembed`: the
final norm + unembedding; :mod:`lens_widget.schema`: the cell table), and they are all
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

For ``"lens"`` and ``"detail"``, ``job["maps"]`` (``{site: [d, d]}``, float32) are a Jacobian
lens's matrices, sent by value with the request and applied to those sites first (:func:`translated`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..reduce import ChunkReducer, Lane, reduce_columns, token_stats
from ..schema import CELL_FIELDS, trailing
from ..unembed import UPCAST_BYTES, Unembed

__all__ = ["in_trace", "translated", "lens_cells", "detail", "record", "unembedding", "apply_intervention", "ORDER"]

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


def record(root: Any, points: list[tuple[str, str, str]], recipe: dict[str, tuple[str, str | None]], select: torch.Tensor,
           patches: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, torch.Tensor]:
    """``points``: ``(name, module path, "input" | "output")`` in forward order; ``recipe``:
    ``site -> (a, b)``: the site is raw ``a`` (minus raw ``b`` when given). ``patches``: point
    name -> interventions applied there before it is read (points named ``"patch:..."`` are
    only changed, not read)."""
    raw = {}
    for name, path, kind in points:
        env = _resolve(root, path)
        for patch in (patches or {}).get(name, ()):
            _patch(env, kind, patch, int(select.shape[0]))
        if name.startswith("patch:"):
            continue
        raw[name] = _take(env.input if kind == "input" else env.output, select)
    return {site: raw[a] if b is None else raw[a] - raw[b] for site, (a, b) in recipe.items()}


def unembedding(root: Any, spec: dict[str, Any]) -> Unembed:
    """The plain logit lens over the remote model's own final norm, projection and unembedding
    (reached through the trace's root envoy: no weights travel)."""
    head = _resolve(root, spec["head"])
    weight = head.weight.detach()
    bias = getattr(head, "bias", None)
    u = Unembed(_resolve(root, spec["norm"]) if spec.get("norm") else None, _resolve(root, spec["post"]) if spec.get("post") else None,
                spec.get("softcap"), getattr(torch, spec["in_dtype"]), weight.device, int(weight.shape[0]),
                int(spec.get("upcast_bytes", UPCAST_BYTES)))
    u.hold(weight, None if bias is None else bias.detach().float())
    return u


def translated(acts: dict[str, torch.Tensor], maps: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """``h.float() @ M.T`` (back in ``h``'s dtype) at the sites ``maps`` names: a Jacobian lens's
    J, sent by value with the request (``Decoder.in_trace_maps``); other sites as they are."""
    if not maps:
        return acts
    return {s: (a.float() @ maps[s].to(a.device).T).to(a.dtype) if s in maps else a for s, a in acts.items()}


def lens_cells(lens: Unembed, acts: dict[str, torch.Tensor], job: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every (site, position) cell of a forward batch, reduced by the engine's own chunk loop
    (:func:`~lens_widget.reduce.reduce_columns`, the same chunks: ``block`` positions x ``group``
    sites), as ``[B, S, P, ...]`` arrays padded like the engine's result store."""
    sites, final_site = list(job["sites"]), job["final_site"]
    next_ids, n_pos, tracked = job["next_ids"], job["n_pos"], job["tracked"].to(lens.device)
    k, block, group = int(job["k"]), int(job["block"]), int(job["group"])
    B, S, P, M = len(n_pos), len(sites), int(job["P"]), int(tracked.numel())
    # int32 ids and ranks (a vocabulary is far below 2**31): what comes back from NDIF is
    # 12k + 21 bytes per cell plus 12 per tracked token
    dtypes = {"int": torch.int32, "float": torch.float32, "bool": torch.bool}
    out = {f.name: torch.full((B, S, P, *trailing(f, k, M)), f.fill, dtype=dtypes[f.kind]) for f in CELL_FIELDS}
    reducer = ChunkReducer(lens, block * group, k, fused=False)

    def sink(b: int):
        def put(s0: int, s1: int, c0: int, c1: int, cells: dict[str, torch.Tensor]) -> None:
            for key, v in cells.items():
                v = v.detach().cpu().reshape(c1 - c0, s1 - s0, *v.shape[1:]).transpose(0, 1)
                out[key][b, s0:s1, c0:c1] = v.to(out[key].dtype)
        return put

    with torch.no_grad():
        for b in range(B):
            lane = Lane(reducer, lambda site, c0, c1, b=b: acts[site][b, c0:c1], next_ids[b, : int(n_pos[b])].to(lens.device), sink(b))
            reduce_columns([lane], sites, final_site, int(n_pos[b]), block, group, tracked)
    return out


def detail(lens: Unembed, acts: dict[str, torch.Tensor], job: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Full-vocabulary statistics of one position's rows at ``job["sites"]``: top-``n`` ids and
    logits, log-sum-exp, entropy, and the logit and exact rank of ``job["ids"]`` (``[S, ...]``)."""
    ids = job["ids"].to(lens.device)
    n = int(job["n"])
    with torch.no_grad():
        z = torch.cat([lens.unembed(lens.normed(acts[s][:, 0])) for s in job["sites"]])  # [S*B, V]
        st = token_stats(z, ids)
        top = torch.topk(z, min(n, z.shape[-1]), dim=-1) if n else None
        return {
            "lse": torch.logsumexp(z, -1).cpu(),
            "entropy": st["entropy"].cpu(),
            "logits": st["logits"].cpu(),
            "ranks": st["ranks"].cpu(),
            "top_ids": None if top is None else top.indices.cpu(),
            "top_logits": None if top is None else top.values.cpu(),
        }


def apply_intervention(x: torch.Tensor, positions: Any, value: torch.Tensor, mode: str, rows: Any = None, batch: int | None = None) -> torch.Tensor:
    """``x [B, T, d]`` with ``value`` put at (or, ``mode="add"``, added to) token ``positions``
    of prompt ``rows`` (``None``: all) — a new tensor. ``value`` is ``[d]``, ``[n_pos, d]`` or
    ``[n_rows, n_pos, d]`` (see :class:`lens_widget.sources.Intervention`). Some blocks (OPT's
    MLP) flatten ``[B * T, d]``: with ``batch=B`` such an ``x`` is changed in that layout."""
    if x.dim() == 2 and batch is not None:
        return apply_intervention(x.view(batch, -1, x.shape[-1]), positions, value, mode, rows).view_as(x)
    out = x.clone()
    r = torch.arange(x.shape[0], device=x.device) if rows is None else torch.as_tensor(list(rows), device=x.device)
    pos = torch.as_tensor(list(positions), device=x.device)
    if int(pos.max()) >= x.shape[1] or int(pos.min()) < -x.shape[1]:
        raise IndexError(f"an intervention at positions {pos.tolist()}: the batch has {x.shape[1]} tokens")
    v = value.to(device=x.device, dtype=x.dtype)
    want = (r.numel(), pos.numel(), x.shape[-1])
    fits = v.shape[-1] == want[2] and (v.dim() == 1 or (v.dim() == 2 and v.shape[0] in (1, want[1])) or tuple(v.shape) == want)
    if not fits:
        raise ValueError(f"an intervention value of shape {tuple(value.shape)} does not fit {r.numel()} prompts x "
                         f"{pos.numel()} positions x d={x.shape[-1]}")
    v = v.expand(*want) if v.dim() < 3 else v
    idx = (r[:, None], pos[None, :])
    out[idx] = v if mode == "replace" else out[idx] + v
    return out


def _patch(env: Any, io: str, patch: dict[str, Any], batch: int) -> None:
    """Apply one intervention to an envoy's input or output, inside the trace."""
    x = env.input if io == "input" else env.output
    first = x[0] if isinstance(x, (tuple, list)) else x
    y = apply_intervention(first, patch["positions"], patch["value"], patch["mode"], patch.get("rows"), batch)
    new = (y, *x[1:]) if isinstance(x, tuple) else y
    if io == "input":
        env.input = new
    else:
        env.output = new


def in_trace(root: Any, points: list, recipe: dict, select: torch.Tensor, task: str, job: dict | None = None, spec: dict | None = None,
             patches: dict | None = None) -> dict[str, Any]:
    """The whole body of a lens trace: record the raw points (in forward order, applying
    ``patches`` where they are), then ``task``. Everything returned is small (``record`` aside)
    and already on the CPU."""
    with torch.no_grad():
        acts = record(root, points, recipe, select, patches)
        if task == "record":
            return {k: v.cpu() for k, v in acts.items()}
        if task == "logits":
            out = root.output
            logits = out.logits if hasattr(out, "logits") else out[0]
            return {"logits": _take(logits, select).float().cpu()}
        lens = unembedding(root, spec or {})
        acts = translated(acts, (job or {}).get("maps"))
        if task == "lens":
            return lens_cells(lens, acts, job or {})
        if task == "detail":
            return detail(lens, acts, job or {})
    raise ValueError(f"unknown in-trace task {task!r}")
