"""Activation patching: put one cell's residual into another run and see what changes.

:func:`patch` replaces the residual stream at (site, target position) of a target prompt by a
source prompt's at (site, position) — or by a given vector, or zero / mean ablation — and
returns the intervened grid, the clean target's grid and their comparison (the diff grid, exact
JS). The clean and the patched target run as two rows of **one** forward pass (the intervention
on the second row only), so every cell outside the causal cone (an earlier site, an earlier
position, or the patched site at a later position) is equal to the clean grid's by construction.

:func:`patch_sweep` is activation patching over the whole residual stream (the causal-tracing
heatmap): for each (site, position) the clean prompt's residual is patched into the corrupted
run and the recovery of a logit difference at the last position is recorded,
``(LD_patched − LD_corrupt) / (LD_clean − LD_corrupt)``: 1 where that one residual carries all of
the clean behaviour, 0 where it carries none. Patches run many to a forward (one batch row each).

Both go through the activation source's intervention seam
(:class:`~lens_widget.sources.Intervention`): hooks, accelerate offload and nnsight alike. The
patched-in residuals are :class:`~lens_widget.sources.ActivationRef` s, recorded by the source in
the same job as the forwards that use them: on NDIF a patch, or a whole sweep, is **one** request
(``model.session``) and no activation comes back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .compare import Comparison
from .inputs import Batch
from .progress import Progress, ProgressBar, StopLike
from .result import LensResult
from .sites import resolve_site
from .sources import ActivationRef, Forward, Intervention

if TYPE_CHECKING:  # the engine delegates here; this module never imports it at run time
    from .engine import LogitLens

__all__ = ["Patch", "Sweep", "patch", "patch_sweep"]


@dataclass
class Patch:
    """What :func:`patch` returns: the intervened target grid (``patched``), the clean target's
    (``clean``), their comparison (``comparison``: b = patched − a = clean, exact JS), and what
    was patched where."""

    patched: LensResult
    clean: LensResult
    comparison: Comparison
    site: str
    target_position: int
    source: str  # "prompt", "value", "zero" or "mean"
    source_position: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def in_cone(self) -> np.ndarray:
        """``[S, P]`` True at the cells the patch can change: a later site at the patched position
        or after it, the patched cell itself (its value is the source's)."""
        r = self.clean
        s = r.sites.index(self.site)
        pos = r.positions[0]
        cone = np.zeros((r.n_sites, r.n_positions), dtype=bool)
        cone[s + 1 :, pos >= self.target_position] = True
        cone[s, pos == self.target_position] = True
        return cone


@dataclass
class Sweep:
    """What :func:`patch_sweep` returns: ``recovery [S, T]`` per (site, position) patched,
    the logit differences of the clean and corrupted runs and of every patched run
    (``patched_ld [S, T]``), the sites, the tokens (``clean_tokens`` / ``corrupt_tokens``), the
    pair ``(a, b)`` measured, and costs (``meta``: forwards, seconds)."""

    recovery: np.ndarray
    patched_ld: np.ndarray
    clean_ld: float
    corrupt_ld: float
    sites: list[str]
    clean_tokens: list[str]
    corrupt_tokens: list[str]
    pair: tuple[int, int]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per (site, position): the patched logit difference and its recovery."""
        S, T = self.recovery.shape
        s, t = np.meshgrid(np.arange(S), np.arange(T), indexing="ij")
        return pd.DataFrame({"site": [self.sites[i] for i in s.ravel()], "position": t.ravel(),
                             "token": [self.clean_tokens[i] for i in t.ravel()], "logit_diff": self.patched_ld.ravel(),
                             "recovery": self.recovery.ravel()})


def _position(p: int, n: int, what: str) -> int:
    q = int(p) + n if int(p) < 0 else int(p)
    if not 0 <= q < n:
        raise IndexError(f"{what} {p} is outside the prompt's {n} tokens")
    return q


def _one_prompt(lens: "LogitLens", prompt: Any, what: str) -> Batch:
    batch = lens.model.as_batch(prompt)
    if batch.input_ids.shape[0] != 1:
        raise ValueError(f"the {what} is one prompt (text or token ids)")
    return batch


def residual(lens: "LogitLens", prompt: Any, site: str, position: int) -> ActivationRef:
    """The residual vector of ``site`` at token ``position`` of ``prompt``, as a reference: the
    source records it where the model is, in the same job as the forward it patches (for a
    remote model it never comes back)."""
    batch = _one_prompt(lens, prompt, "source prompt")
    return ActivationRef(batch, site, _position(position, int(batch.lengths[0]), "position"))


@torch.inference_mode()
def patch(
    lens: "LogitLens",
    source_prompt: Any,
    target_prompt: Any,
    site: str | int,
    position: int,
    target_position: int | None = None,
    *,
    value: torch.Tensor | None = None,
    ablation: str | None = None,
    sites: Any = None,
    k: int = 10,
    track: Sequence[int | str] = (),
    progress: bool = False,
) -> Patch:
    """The target's grid with the residual at (``site``, ``target_position``) replaced by the
    source's at (``site``, ``position``) (``target_position`` defaults to ``position``), the
    clean target's grid, and their exact comparison.

    ``source_prompt=None`` with ``value=`` (a ``[d]`` vector) or ``ablation="zero"`` / ``"mean"``
    (the mean of the site over the target prompt's own positions) patches that instead.
    ``site``: a site name or the grid's label (a block number, ``"emb"``).
    """
    site = resolve_site(site, lens.model.num_layers, lens.model.parallel_blocks)
    target = _one_prompt(lens, target_prompt, "target prompt")
    n_t = int(target.lengths[0])
    tpos = _position(position if target_position is None else target_position, n_t, "target position")
    t0 = time.perf_counter()
    forwards = 1
    if sum(x is not None for x in (source_prompt, value, ablation)) != 1:
        raise ValueError("patch from exactly one of: a source prompt, value=, ablation='zero' | 'mean'")
    if source_prompt is not None:
        vec, kind, spos = residual(lens, source_prompt, site, position), "prompt", int(position)
        forwards += 1
    elif value is not None:
        vec, kind, spos = torch.as_tensor(value, dtype=torch.float32), "value", None
    elif ablation == "zero":  # no forward: the zero vector of the residual's width
        vec, kind, spos = torch.zeros(lens.model.d_model), "zero", None
    elif ablation == "mean":
        acts = lens.model.record(target, [site], torch.arange(n_t)[None]).acts[site][0]
        forwards += 1
        vec, kind, spos = acts.float().mean(0), "mean", None
    else:
        raise ValueError(f"ablation must be 'zero' or 'mean', got {ablation!r}")
    ids = target.rows()[0]
    iv = Intervention(site, [tpos], vec if isinstance(vec, ActivationRef) else vec.reshape(1, -1), rows=[1])
    # clean (row 0) and patched (row 1) in one forward; both decoded and compared chunk by chunk
    comparison = lens.compare(ids, ids, sites=sites, k=k, track=track, labels=("clean", "patched"), progress=progress, interventions=[iv])
    if site not in comparison.sites:
        raise ValueError(f"the patched site {site!r} is not among the grid's sites {comparison.sites[0]} … {comparison.sites[-1]}")
    clean, patched = comparison.a, comparison.b
    clean.prompts = patched.prompts = [lens.model.tokenizer.decode(ids)]
    return Patch(patched, clean, comparison, site, tpos, kind, spos, {"forwards": forwards, "seconds": time.perf_counter() - t0})


def _logit_diff(lens: "LogitLens", logits: torch.Tensor, a: int, b: int) -> torch.Tensor:
    return logits[..., a].double() - logits[..., b].double()


@torch.inference_mode()
def patch_sweep(
    lens: "LogitLens",
    clean: Any,
    corrupt: Any,
    tokens: tuple[int | str, int | str],
    *,
    sites: Any = None,
    batch_size: int = 32,
    progress: bool | Callable[[Progress], Any] = True,
    stop: StopLike = None,
) -> Sweep:
    """Patch the clean prompt's residual at each (site, position) into the corrupted run, one at
    a time, and record the recovery of ``logit(a) − logit(b)`` at the last position (``tokens =
    (a, b)``, ids or single-token strings): ``(LD_patched − LD_corrupt) / (LD_clean − LD_corrupt)``.

    The two prompts must have the same number of tokens (a minimal pair). Sites: ``embed`` and
    every block output by default (names, ``"resid"``, ``"all"`` for ``resid_out`` only). Each
    forward carries ``batch_size`` patches (one batch row each). ``progress``: a tqdm bar (True),
    none, or a callable receiving a :class:`~lens_widget.progress.Progress` (patches done of all)
    after each forward; ``stop`` (an ``Event`` or a callable), when set, raises
    :class:`~lens_widget.progress.Stopped` after the forward in progress. On a remote (NDIF) model
    every forward travels in one job: progress comes when it returns, and a stop cannot cut it short.
    """
    hm = lens.model
    cb, xb = _one_prompt(lens, clean, "clean prompt"), _one_prompt(lens, corrupt, "corrupt prompt")
    T = int(cb.lengths[0])
    if int(xb.lengths[0]) != T:
        raise ValueError(f"the clean and corrupted prompts must have the same number of tokens ({T} vs {int(xb.lengths[0])})")
    a, b = (hm.tokens.token_id(t) for t in tokens)
    names = [s for s in hm.site_names(sites) if s == "embed" or s.startswith("resid_out_")]
    if not names:
        raise ValueError("patch_sweep patches the residual stream: give 'embed' and/or 'resid_out_i' sites")
    t0 = time.perf_counter()
    last = torch.tensor([[T - 1]])
    jobs = [(s, site, t) for s, site in enumerate(names) for t in range(T)]
    size = max(1, int(batch_size))
    ids = xb.input_ids
    forwards = [Forward(cb, last), Forward(xb, last)]
    for j0 in range(0, len(jobs), size):
        chunk = jobs[j0 : j0 + size]
        n = len(chunk)
        batch = Batch(ids.expand(n, -1).clone(), torch.ones(n, T, dtype=torch.long), torch.full((n,), T), [""] * n)
        # the clean residual of each patch is a reference: recorded once, where the model is
        forwards.append(Forward(batch, last.expand(n, 1), [Intervention(site, [t], ActivationRef(cb, site, t), rows=[r])
                                                         for r, (_, site, t) in enumerate(chunk)]))
    report = progress if callable(progress) else None
    bar = ProgressBar(tqdm(total=len(jobs), desc="Patch sweep", unit="patch", disable=not progress or report is not None), len(jobs), report, stop)
    try:
        def done(i: int) -> None:  # after forward i: the first two are the clean and corrupted runs
            if i >= 2:
                bar.update(forwards[i].batch.input_ids.shape[0])

        logits = hm.source.token_logits(forwards, torch.tensor([a, b]), done=done)
    finally:
        bar.close()
    # the clean residuals come from the clean run itself (forward 0), or from a trace of their own
    n_forwards = len(forwards) + (not hm.source.refs_share_a_forward)
    clean_ld = float(_logit_diff(lens, logits[0][0, 0], 0, 1))
    corrupt_ld = float(_logit_diff(lens, logits[1][0, 0], 0, 1))
    patched = np.full((len(names), T), np.nan)
    lds = torch.cat([x[:, 0] for x in logits[2:]])
    for (s, _, t), ld in zip(jobs, _logit_diff(lens, lds, 0, 1).cpu().numpy()):
        patched[s, t] = ld
    denom = clean_ld - corrupt_ld
    recovery = (patched - corrupt_ld) / denom if abs(denom) > 1e-12 else np.full_like(patched, np.nan)
    return Sweep(recovery, patched, clean_ld, corrupt_ld, names, [hm.tokens.decode(i) for i in cb.rows()[0]], [hm.tokens.decode(i) for i in xb.rows()[0]],
                 (a, b), {"forwards": n_forwards, "patches": len(jobs), "batch_size": int(batch_size), "seconds": time.perf_counter() - t0,
                          "requests": 1 if hm.source.remote else n_forwards})
