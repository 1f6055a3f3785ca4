"""Fitting a Jacobian lens here: batched vector-Jacobian products through the model's own blocks.

**The estimator** (the reference package's, anthropics/jacobian-lens ``jlens/fitting.py``
``jacobian_for_prompt`` / ``fit``, which the paper's published lenses come from): for one prompt
of ``T`` tokens the *valid* positions are ``skip_first ≤ p < T - 1`` (the first 16 positions act
as attention sinks; the last has no next token), ``n`` of them. Per prompt

    J_l(prompt) = 1/n · Σ_{s valid} Σ_{t valid, t ≥ s} ∂h_final,t / ∂h_l,s
                = 1/n · Σ_{t valid} Σ_{s valid, s ≤ t} ∂h_final,t / ∂h_l,s

(the same double sum: a mean over target positions of the summed effect of every earlier source
position, or a mean over source positions of the effect on every later target), and ``J_l`` is
the plain mean of ``J_l(prompt)`` over prompts (each prompt weighs the same, whatever its
length). ``h_final`` is the last block's output (before the final norm); ``h_l`` the output of
block ``l`` (``resid_out_l``), and here also the embeddings (``embed``, the input to block 0).

**How.** One forward pass per prompt with the graph kept (model weights frozen for it, so a
backward computes only input gradients); row ``i`` of every ``J_l(prompt)`` at once is the VJP of
the cotangent ``e_i`` placed at every valid target position, averaged over valid source
positions. ``probe_batch`` cotangents go through one backward (``torch.autograd.grad(...,
is_grads_batched=True)``, i.e. vmap; where an architecture's backward refuses vmap, one backward
per cotangent, same numbers).

**Exact or estimated.** ``probes=None`` is exact: ``d`` cotangents per prompt. On this CPU (one
thread, SmolLM2-135M, d 576, 128 tokens) one cotangent costs ~0.36 s in batches of 32, so the
exact fit costs ~3.5 min *per prompt* (the paper averages ~100-1000 prompts). ``probes=k < d``
is the unbiased estimator ``Ĵ = (1/k) Σ_i u_i (u_iᵀ J)`` with ``E[u uᵀ] = I``: the ``u_i`` are
``√d`` times ``k`` columns of a random orthogonal matrix (Haar), drawn per prompt from
``(seed, prompt index)``, so ``Ĵ = (d/k) Q_k Q_kᵀ J`` — an unbiased random projection whose
noise shrinks with ``k`` and with the number of prompts (relative Frobenius error of the mean
about ``√((d/k - 1) / N)`` for ``N`` prompts) and vanishes at ``k = d`` (then ``Q Qᵀ = I``:
exact again). Costs ~``k / d`` of the exact fit. Measured on SmolLM2 (held-out text,
``scripts/jlens_quality.py``): 48 prompts x 32 probes (875 s) gave a mean KL(final ‖ lens) of
9.2 nats (logit lens 16.3) but top-1 agreement with the final layer far *below* the logit lens
(0.25 vs 0.51 one block before the end) — the probe noise, ~√((d/k − 1)/N) ≈ 0.6 of ``‖J‖``,
swamps the readout; 2 exact prompts (916 s) gave 8.5 nats and 0.60 there. At this size, few
exact prompts beat many probed ones. (A control variate centred on the running mean made it
worse: with ``d/k − 1 > 1`` each estimate amplifies its centre's noise.)

**Determinism and resuming.** No randomness but the probes, which depend only on ``seed`` and
the prompt's index; the running sum (float64) and count are checkpointed, and a resumed fit
gives the same ``J`` as one uninterrupted run, bit for bit.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from .hooked import HookedModel, as_hooked_model
from .lens_files import hidden_size, lens_environment, save_atomic
from .devices import execution_device

__all__ = ["fit_jacobian", "prompt_jacobians", "probe_matrix", "GradRecorder", "SKIP_FIRST", "MAX_SEQ_LEN"]

#: The reference package's defaults: positions before this index are left out of the average.
SKIP_FIRST = 16
#: ... and prompts are cut to this many tokens.
MAX_SEQ_LEN = 128


# -- recording with the graph ----------------------------------------------------------------------
class GradRecorder:
    """Forward hooks that keep (not detach) the residual stream at the embeddings (the input to
    block 0) and at block outputs, rooting the graph at the earliest of them."""

    def __init__(self, blocks: nn.ModuleList, layers: Sequence[int], embed: bool):
        self.blocks = blocks
        self.layers = sorted(set(layers))
        self.embed = embed
        self.acts: dict[str, torch.Tensor] = {}
        self.root = "embed" if embed else f"resid_out_{self.layers[0]}"
        self._handles: list[Any] = []

    def _keep(self, name: str, x: torch.Tensor) -> None:
        if name == self.root and not x.requires_grad:
            x.requires_grad_(True)
        self.acts[name] = x

    def __enter__(self) -> "GradRecorder":
        if self.embed:
            def pre(_m: nn.Module, args: tuple, kwargs: dict) -> None:
                x = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
                if x is None:
                    raise RuntimeError("could not find the hidden states among block 0's inputs")
                self._keep("embed", x)

            self._handles.append(self.blocks[0].register_forward_pre_hook(pre, with_kwargs=True))
        for i in self.layers:
            def out(_m: nn.Module, _args: tuple, output: Any, name: str = f"resid_out_{i}") -> None:
                self._keep(name, output[0] if isinstance(output, (tuple, list)) else output)

            self._handles.append(self.blocks[i].register_forward_hook(out))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def probe_matrix(d: int, k: int, seed: int, index: int) -> torch.Tensor:
    """``[k, d]`` probes with ``E[uᵀu] = I`` over draws: ``√d`` times ``k`` orthonormal rows of a
    Haar-random orthogonal matrix, drawn from ``(seed, index)`` only (deterministic, resumable)."""
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % (2**63 - 1))
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    Q, R = torch.linalg.qr(A)
    Q = Q * torch.sign(torch.diagonal(R))  # Haar measure (Mezzadri 2007)
    return (Q[:, :k].T * math.sqrt(d)).float()


#: Whether an architecture's backward ran under vmap (``is_grads_batched``), by model id.
_VMAP_OK: dict[int, bool] = {}


def valid_positions(T: int, skip_first: int) -> torch.Tensor:
    return torch.arange(skip_first, T - 1)


def prompt_jacobians(
    hm: HookedModel,
    ids: Sequence[int] | torch.Tensor,
    *,
    layers: Sequence[int],
    embed: bool = True,
    probes: torch.Tensor | None = None,
    probe_batch: int = 32,
    skip_first: int = SKIP_FIRST,
    batched: bool | None = None,
) -> dict[str, torch.Tensor]:
    """``{site: [d, d] float32}``: the per-prompt ``J_l(prompt)`` (``probes=None``) or its
    estimate ``(1/k) Uᵀ (U J)`` from ``probes`` ``U [k, d]``. Weights must not require grad
    (:func:`fit_jacobian_lens` freezes them)."""
    model = hm.model
    L = hm.num_layers
    ids_t = torch.as_tensor(list(ids) if not isinstance(ids, torch.Tensor) else ids, dtype=torch.long).reshape(1, -1)
    T = ids_t.shape[1]
    pos = valid_positions(T, skip_first)
    if len(pos) == 0:
        raise ValueError(f"prompt too short: {T} tokens, the estimator needs more than {skip_first + 1}")
    kwargs: dict[str, Any] = {"use_cache": False}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        kwargs["logits_to_keep"] = 1
    dev = execution_device(model.get_input_embeddings())
    sources = (["embed"] if embed else []) + [f"resid_out_{i}" for i in layers]
    with GradRecorder(hm.blocks, list(layers) + [L - 1], embed) as rec, torch.enable_grad():
        model(input_ids=ids_t.to(dev), **kwargs)
    target = rec.acts[f"resid_out_{L - 1}"]
    inputs = [rec.acts[s] for s in sources]
    d = target.shape[-1]
    rows = probes if probes is not None else None
    k = d if rows is None else rows.shape[0]
    out = {s: torch.zeros(k, d, dtype=torch.float32) for s in sources}
    tpos = pos.to(target.device)
    n_chunks = math.ceil(k / probe_batch)
    use_vmap = _VMAP_OK.get(id(model)) if batched is None else batched
    for c, a in enumerate(range(0, k, probe_batch)):
        b = min(k, a + probe_batch)
        cot = torch.zeros(b - a, *target.shape, dtype=target.dtype, device=target.device)
        if rows is None:
            cot[torch.arange(b - a)[:, None], 0, tpos[None, :], torch.arange(a, b)[:, None]] = 1.0
        else:
            cot[:, 0, tpos, :] = rows[a:b, None, :].to(cot)
        last = c == n_chunks - 1
        grads = None
        if use_vmap is not False:
            try:
                grads = torch.autograd.grad(target, inputs, cot, retain_graph=True, is_grads_batched=True)
                use_vmap = _VMAP_OK[id(model)] = True
            except (RuntimeError, NotImplementedError):
                if use_vmap:  # it worked before: a real error
                    raise
                use_vmap = _VMAP_OK[id(model)] = False
        if grads is None:
            per = [torch.autograd.grad(target, inputs, cot[j], retain_graph=True) for j in range(b - a)]
            grads = [torch.stack([p[m] for p in per]) for m in range(len(inputs))]
        for s, g in zip(sources, grads):  # g: [chunk, 1, T, d]
            out[s][a:b] = g[:, 0, pos.to(g.device)].float().mean(1).cpu()
        del grads, cot
        if last:
            break
    del rec, inputs, target
    if rows is not None:
        U = rows.float().cpu()
        out = {s: (U.T @ v) / k for s, v in out.items()}
    return out


# -- the fit -----------------------------------------------------------------------------------------
def _prompt_ids(hm: HookedModel, item: Any, column: str, max_seq_len: int) -> list[int]:
    if isinstance(item, dict):
        if column not in item:
            raise KeyError(f"a text item has no {column!r} field (it has {', '.join(map(str, item))}); pass column=...")
        item = item[column]
    if isinstance(item, str):
        ids = hm.tokenizer(item)["input_ids"]
    elif isinstance(item, torch.Tensor):
        ids = item.reshape(-1).tolist()
    elif isinstance(item, (list, tuple)) and all(isinstance(i, int) for i in item):
        ids = list(item)
    else:
        raise TypeError(f"texts must be strings, dicts with a {column!r} field, or token-id lists; got {type(item).__name__}")
    return list(ids)[:max_seq_len]


def fit_jacobian(
    model: Any,
    texts: Iterable[Any],
    *,
    probes: int | None = None,
    probe_batch: int = 32,
    max_seq_len: int = MAX_SEQ_LEN,
    skip_first: int = SKIP_FIRST,
    max_prompts: int | None = None,
    layers: Sequence[int] | None = None,
    embed: bool = True,
    seed: int = 0,
    column: str = "text",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: bool = True,
    stop_after: int | None = None,
    command: str | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Any:
    """Fit a :class:`~lens_widget.jacobian_lens.JacobianLens` on ``texts`` (module docstring:
    the estimator, its cost and its exactness).

    Args:
        model: a :class:`HookedModel` or a ``transformers`` causal LM.
        texts: one prompt each — strings (tokenized with the tokenizer's special tokens), dicts
            with a ``column`` field, or token-id lists — cut to ``max_seq_len`` tokens; prompts of
            ``skip_first + 1`` tokens or fewer are skipped (counted in ``metadata``).
        probes: ``None``: exact (``d`` VJPs a prompt); ``k``: the unbiased random-projection
            estimator with ``k`` VJPs a prompt.
        probe_batch: cotangents per backward (memory ~ ``probe_batch × T × d × (layers + 1)``).
        max_prompts: use at most this many prompts (of those long enough).
        layers: block outputs to fit (default ``0 … L-2``); ``embed``: also the embeddings.
        seed: seeds the probes (the exact fit draws nothing at random).
        checkpoint: a file written every ``checkpoint_every`` prompts and at the end (running
            sum, count, next prompt); with ``resume`` an existing one is continued from.
        stop_after: stop after this many prompts in this call (checkpointed), e.g. to time-box.
        command: recorded in the lens's metadata (default: ``sys.argv``).
        callback: called after each prompt with ``{"index", "tokens", "seconds", "n_prompts"}``.
    """
    from tqdm.auto import tqdm

    hm = as_hooked_model(model)
    L = hm.num_layers
    d = hidden_size(hm)
    layers = list(range(L - 1)) if layers is None else sorted({int(i) for i in layers})
    if any(not 0 <= i < L - 1 for i in layers):
        raise ValueError(f"layers must lie in 0 … {L - 2} (the last block is the target), got {layers}")
    if probes is not None and not 1 <= int(probes) <= d:
        raise ValueError(f"probes must be None (exact) or 1 … {d}, got {probes}")
    if hm.max_length:
        max_seq_len = min(max_seq_len, hm.max_length)
    sources = (["embed"] if embed else []) + [f"resid_out_{i}" for i in layers]
    config = {"probes": probes, "seed": int(seed), "max_seq_len": int(max_seq_len), "skip_first": int(skip_first),
              "sources": sources, "d_model": d, "model": hm.name}
    total = {s: torch.zeros(d, d, dtype=torch.float64) for s in sources}
    n_done, next_idx, n_tokens, skipped, seconds = 0, 0, 0, 0, 0.0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=True, map_location="cpu")
        if state.get("config") != config:
            raise ValueError(f"{ckpt} was written by a fit with {state.get('config')}; this one has {config} (resume=False starts afresh)")
        total = state["sum"]
        n_done, next_idx, n_tokens = int(state["n_done"]), int(state["next_idx"]), int(state["n_tokens"])
        skipped, seconds = int(state["skipped"]), float(state["seconds"])

    def checkpoint_now() -> None:
        if ckpt is not None:
            save_atomic({"sum": total, "n_done": n_done, "next_idx": next_idx, "n_tokens": n_tokens,
                          "skipped": skipped, "seconds": seconds, "config": config}, ckpt)

    items = iter(texts)
    frozen = [(p, p.requires_grad) for p in hm.model.parameters()]
    limit = max_prompts if max_prompts is not None else (len(texts) if hasattr(texts, "__len__") else None)  # type: ignore[arg-type]
    bar = tqdm(total=limit, initial=n_done, desc="Jacobian lens", unit="prompt", disable=not progress)
    done_here = 0
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        for index, item in enumerate(items):
            if index < next_idx:
                continue
            if (max_prompts is not None and n_done >= max_prompts) or (stop_after is not None and done_here >= stop_after):
                break
            ids = _prompt_ids(hm, item, column, max_seq_len)
            next_idx = index + 1
            if len(ids) <= skip_first + 1:
                skipped += 1
                continue
            t0 = time.perf_counter()
            U = None if probes is None else probe_matrix(d, int(probes), seed, index)
            Jp = prompt_jacobians(hm, ids, layers=layers, embed=embed, probes=U, probe_batch=probe_batch,
                                  skip_first=skip_first)
            for s in sources:
                total[s] += Jp[s].double()
            n_done += 1
            done_here += 1
            n_tokens += len(ids)
            dt = time.perf_counter() - t0
            seconds += dt
            bar.update(1)
            bar.set_postfix(s_per_prompt=f"{dt:.1f}", tokens=n_tokens)
            if callback is not None:
                callback({"index": index, "tokens": len(ids), "seconds": dt, "n_prompts": n_done})
            if checkpoint_every and n_done % checkpoint_every == 0:
                checkpoint_now()
    finally:
        bar.close()
        for p, flag in frozen:
            p.requires_grad_(flag)
    checkpoint_now()
    if n_done == 0:
        raise ValueError(f"no prompt was long enough to fit on (each needs more than {skip_first + 1} tokens; {skipped} skipped)")
    jac: dict[int | str, torch.Tensor] = {}
    for s in sources:
        mean = (total[s] / n_done).float()
        jac["embed" if s == "embed" else int(s.rsplit("_", 1)[1])] = mean
    estimator = ("exact: d one-hot cotangents per prompt" if probes is None else
                 f"unbiased random projection: {probes} scaled Haar-orthogonal probes per prompt, E[u u^T] = I")
    meta = {
        "fit": {
            "command": command if command is not None else " ".join(sys.argv),
            "seed": int(seed), "n_prompts": n_done, "n_tokens": n_tokens, "skipped_short": skipped,
            "probes": probes, "estimator": estimator, "max_seq_len": int(max_seq_len), "skip_first": int(skip_first),
            "normalisation": "mean over prompts of (1/n_valid) * sum over valid s <= t of d h_final[t] / d h_l[s]",
            "seconds": round(seconds, 2),
        },
        "environment": lens_environment(),
    }
    return jac, n_done, meta
