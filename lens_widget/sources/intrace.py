"""The lens as it runs next to the model, inside an nnsight trace (locally or on NDIF).

This module imports only ``torch`` and the torch-only modules that travel with it
(:mod:`lens_widget.reduce`: the chunk loop and reductions; :mod:`lens_widget.unembed`: the
final norm + unembedding; :mod:`lens_widget.schema`: the cell table), and they are all
registered with nnsight to travel *by value* (its source, not a reference to an installed
package that NDIF does not have): :func:`in_trace` is what a remote trace's body calls. Its
arguments are plain data (tensors, numbers, strings, module paths); the model's modules are
reached through the trace's root envoy, so no weights travel, and only the reduced arrays come
back.

Its tasks, each over the ``[B, P]`` positions of ``select``:

* ``"record"``: the sites' activations (``[B, P, d]``; local sources, small remote requests);
* ``"lens"``: every (site, position) cell reduced exactly like the engine does it, chunk by
  chunk over rows (``ChunkReducer``'s statistics; see :func:`lens_cells`);
* ``"detail"``: full-vocabulary top-``n`` and any tokens' logit/probability/exact rank at some
  sites of one position (cell detail, trajectories, ``track_top``);
* ``"attribute"``: one cell's exact attribution (:func:`attribute_cell`).

For ``"lens"`` and ``"detail"``, ``job["maps"]`` (``{site: [d, d]}``, float32) are a Jacobian
lens's matrices, sent by value with the request and applied to those sites first (:func:`translated`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..certified import resolve_precision
from ..contributions import attribute_rows, frozen_norm
from ..reduce import ChunkReducer, Lane, reduce_columns, token_stats
from ..schema import CELL_FIELDS, trailing
from ..unembed import UPCAST_BYTES, Unembed

__all__ = ["in_trace", "translated", "lens_cells", "compare_cells", "detail", "attribute_cell", "record", "unembedding", "apply_intervention", "ORDER"]

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
           patches: dict[str, list[dict[str, Any]]] | None = None, earlier: list[Any] | None = None) -> dict[str, torch.Tensor]:
    """``points``: ``(name, module path, "input" | "output")`` in forward order; ``recipe``:
    ``site -> (a, b)``: the site is raw ``a`` (minus raw ``b`` when given). ``patches``: point
    name -> interventions applied there before it is read (points named ``"patch:..."`` are
    only changed, not read); a patch whose value is ``None`` takes it from an earlier trace of
    the same session: ``earlier[i][site][0, col]`` for its ``ref = (i, site, col)``."""
    raw = {}
    for name, path, kind in points:
        env = _resolve(root, path)
        if (patches or {}).get(name):
            _patch(env, kind, patches[name], int(select.shape[0]), earlier or [])  # type: ignore[index]
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


def _cells_out(job: dict[str, Any], B: int, M: int) -> dict[str, torch.Tensor]:
    """The result arrays ``[B, S, P, ...]``, padded like the engine's result store; int32 ids and
    ranks (a vocabulary is far below 2**31): what comes back from NDIF is 12k + 21 bytes per
    cell plus 12 per tracked token."""
    k, S, P = int(job["k"]), len(job["sites"]), int(job["P"])
    dtypes = {"int": torch.int32, "float": torch.float32, "bool": torch.bool}
    return {f.name: torch.full((B, S, P, *trailing(f, k, M)), f.fill, dtype=dtypes[f.kind]) for f in CELL_FIELDS}


def _lane(reducer: ChunkReducer, acts: dict[str, torch.Tensor], out: dict[str, torch.Tensor], b: int, lo: int, next_ids: torch.Tensor) -> Lane:
    """Prompt ``b``'s lane over its columns from ``lo`` on (lane column ``c`` is column ``lo + c``)."""

    def put(s0: int, s1: int, c0: int, c1: int, cells: dict[str, torch.Tensor]) -> None:
        for key, v in cells.items():
            v = v.detach().cpu().reshape(c1 - c0, s1 - s0, *v.shape[1:]).transpose(0, 1)
            out[key][b, s0:s1, lo + c0 : lo + c1] = v.to(out[key].dtype)

    return Lane(reducer, lambda site, c0, c1: acts[site][b, lo + c0 : lo + c1], next_ids[lo:], put)


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
    block, group = int(job["block"]), int(job["group"])
    out = _cells_out(job, len(n_pos), int(tracked.numel()))
    certify = resolve_precision(job.get("precision", "float32"), lens.weight.dtype, lens.device) if lens.weight is not None else None
    reducer = ChunkReducer(lens, block * group, int(job["k"]), fused=False, certify=certify)
    with torch.no_grad():
        for b in range(len(n_pos)):
            lane = _lane(reducer, acts, out, b, 0, next_ids[b, : int(n_pos[b])].to(lens.device))
            reduce_columns([lane], sites, final_site, int(n_pos[b]), block, group, tracked)
    return out


def compare_cells(lens: Unembed, acts: dict[str, torch.Tensor], job: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Two prompts of a forward batch compared as :func:`lens_widget.compare_run.compare_in_one_run`
    does it: their ``pair["n"]`` aligned columns (from ``off_a`` / ``off_b``) in one chunk loop
    with two lanes and the exact JS divergence of each pair of rows (``js [S, n]``), then each
    side's unpaired columns alone. The cells come back as :func:`lens_cells`'s."""
    sites, final_site = list(job["sites"]), job["final_site"]
    next_ids, n_pos, tracked = job["next_ids"], job["n_pos"], job["tracked"].to(lens.device)
    block, group, k = int(job["block"]), int(job["group"]), int(job["k"])
    pair = job["pair"]
    out = _cells_out(job, len(n_pos), int(tracked.numel()))
    sides = [(int(pair["a"]), int(pair["off_a"])), (int(pair["b"]), int(pair["off_b"]))]
    reducers = [ChunkReducer(lens, block * group, k, fused=False) for _ in sides]  # own buffers: both sides decoded before reducing
    n = int(pair["n"])
    js = torch.full((len(sites), n), float("nan"), dtype=torch.float32)

    def between(s0: int, s1: int, c0: int, c1: int, z: list[torch.Tensor]) -> None:
        js[s0:s1, c0:c1] = reducers[0].js(z[0], z[1]).view(c1 - c0, s1 - s0).T.cpu()

    def lane(i: int, lo: int) -> Lane:
        b = sides[i][0]
        return _lane(reducers[i], acts, out, b, lo, next_ids[b, : int(n_pos[b])].to(lens.device))

    with torch.no_grad():
        reduce_columns([lane(0, sides[0][1]), lane(1, sides[1][1])], sites, final_site, n, block, group, tracked, between=between)
        for i, (b, off) in enumerate(sides):  # columns without a partner
            for lo, hi in ((0, off), (off + n, int(n_pos[b]))):
                if hi > lo:
                    reduce_columns([lane(i, lo)], sites, final_site, hi - lo, block, group, tracked)
    out["js"] = js
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


def attribute_cell(root: Any, lens: Unembed, rows: dict[str, torch.Tensor], job: dict[str, Any]) -> dict[str, Any]:
    """A cell's attribution next to the model (:func:`lens_widget.contributions.attribute_rows`,
    the arithmetic of the local path): ``rows`` holds the job's ``reads`` (the embedding, each
    layer's projection input ``z{l}``, attention post-norm input ``pn{l}``, MLP output
    ``mlp{l}``) and the site, each ``[1, 1, d]``; the layers' ``W_O`` and norms are read off the
    remote model's modules. Only the table (a few numbers per part) comes back."""
    flat = {name: v[0, 0] for name, v in rows.items()}
    blocks, proj_path, post_path = job["blocks"], job["proj"], job.get("post_norm")
    pn_dtype = getattr(torch, job["post_norm_dtype"]) if job.get("post_norm_dtype") else torch.float32

    def weights(l: int) -> tuple[torch.Tensor, Any, Any]:
        proj = _resolve(root, f"{blocks}.{l}.{proj_path}")
        W = proj.weight.detach()
        W = W.T if job["conv1d"] else W  # GPT-2's Conv1D stores W_O as [in, out]
        b = getattr(proj, "bias", None)
        pn = frozen_norm(_resolve(root, f"{blocks}.{l}.{post_path}"), flat[f"pn{l}"], pn_dtype) if post_path else None
        return W, None if b is None else b.detach(), pn

    with torch.no_grad():
        h = flat[job["site"]]
        x = h.to(device=lens.device, dtype=lens.in_dtype)
        return attribute_rows(flat, h, list(job["layers"]), list(job["mlps"]), int(job["n_heads"]), weights, lens, x, job["ids"])


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


def _patch(env: Any, io: str, patches: list[dict[str, Any]], batch: int, earlier: list[Any]) -> None:
    """Apply interventions to an envoy's input or output, inside the trace (one read, one write)."""
    x = env.input if io == "input" else env.output
    y = x[0] if isinstance(x, (tuple, list)) else x
    for patch in patches:
        value = patch["value"]
        if value is None:
            i, site, col = patch["ref"]
            value = earlier[int(i)][site][0, int(col)]
        y = apply_intervention(y, patch["positions"], value, patch["mode"], patch.get("rows"), batch)
    new = (y, *x[1:]) if isinstance(x, tuple) else y
    if io == "input":
        env.input = new
    else:
        env.output = new


def in_trace(root: Any, points: list, recipe: dict, select: torch.Tensor, task: str, job: dict | None = None, spec: dict | None = None,
             patches: dict | None = None, earlier: list | None = None) -> dict[str, Any]:
    """The whole body of a lens trace: record the raw points (in forward order, applying
    ``patches`` where they are; ``earlier``: the results of the session's earlier traces, which
    patches may take their values from), then ``task``. Everything returned is small
    (``record`` aside) and already on the CPU (a ``keep`` record stays where it is: a later
    trace of the session reads it)."""
    with torch.no_grad():
        acts = record(root, points, recipe, select, patches, earlier)
        if task == "record":
            return {k: v if (job or {}).get("keep") else v.cpu() for k, v in acts.items()}
        if task == "logits":  # the model's own, at ``select`` (only of ``job["ids"]`` when given)
            out = root.output
            logits = _take(out.logits if hasattr(out, "logits") else out[0], select).float()
            ids = (job or {}).get("ids")
            return {"logits": (logits if ids is None else logits[..., ids.to(logits.device)]).cpu()}
        lens = unembedding(root, spec or {})
        acts = translated(acts, (job or {}).get("maps"))
        if task == "lens":
            return lens_cells(lens, acts, job or {})
        if task == "compare":
            return compare_cells(lens, acts, job or {})
        if task == "detail":
            return detail(lens, acts, job or {})
        if task == "attribute":
            return attribute_cell(root, lens, acts, job or {})
    raise ValueError(f"unknown in-trace task {task!r}")
