"""Comparisons of two lens results: a diff grid of two prompts, two lenses or two models.

``compare(a, b)`` lines up two :class:`~lens_widget.result.LensResult` s cell by cell and returns a
:class:`Comparison`: per aligned (site, column) cell the differences **b − a** of the grid's
metrics, top-1 agreement, and the Jensen–Shannon divergence of the two cells' next-token
distributions.

**Alignment** (:func:`align_columns`). Two prompts with the same number of lens columns are
compared column by column. Otherwise ``align="last"`` (the default) pairs the last columns and
walks back from there as far as the shorter prompt goes (the earlier tokens of the longer prompt
are left out); ``align="start"`` pairs the first columns; an ``int`` position ``p`` (negative:
counted from each prompt's last token) or a pair ``(p_a, p_b)`` pairs token position ``p_a`` of
``a`` with ``p_b`` of ``b`` and extends the pairing both ways as far as both prompts have columns.

**Jensen–Shannon divergence**, in nats (0 … ln 2). Exact over the full vocabulary when both sides
were computed in one engine run (:meth:`lens_widget.LogitLens.compare`: two lenses on one prompt,
or two prompts in one batch), where the reducer decodes both sides' rows of each chunk together.
From two saved results it is a **top-k approximation** (:func:`topk_js`; ``Comparison.js_exact``
is False and ``js_label`` says so): each distribution is restricted to the union of the two top-k
sets plus one bucket for the remaining probability mass. It tends to read low (merging the tail
into one bucket can only lower a divergence): on SmolLM2 at k=10 the mean was 6–13 % below the
exact value (``bench/compare_bench.py``).

Results of models with different vocabularies or tokenizers, or over different sites, are refused
(:class:`ComparisonError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import numpy as np
import pandas as pd

from .metrics import COMPARE_METRICS
from .result import LensResult
from .sites import site_label
from .tokens import TokenLookupError

__all__ = ["Comparison", "ComparisonError", "compare", "align_columns", "topk_js", "Align", "LN2"]

#: ``"last"``, ``"start"``, a token position (int) or a pair of positions ``(p_a, p_b)``.
Align = Union[str, int, Sequence[int]]
#: The largest Jensen–Shannon divergence, in nats.
LN2 = float(np.log(2.0))
#: Per-cell differences read straight off the results (no token to choose).
_CELL_DELTAS = ("d_top1_prob", "d_next_prob", "next_rank_log_ratio", "d_entropy", "d_kl")


class ComparisonError(ValueError):
    """Two results that cannot be compared (different vocabularies, tokenizers or sites)."""


def align_columns(pos_a: Sequence[int], len_a: int, pos_b: Sequence[int], len_b: int, align: Align = "last") -> tuple[np.ndarray, np.ndarray, str]:
    """Pairs of lens columns of two prompts: ``(cols_a, cols_b, description)``.

    ``pos_a`` / ``pos_b`` are the token positions of each prompt's lens columns (in order),
    ``len_a`` / ``len_b`` the prompts' token counts. See the module's docstring for ``align``.
    The aligned columns are contiguous in both prompts (a shift of one against the other).
    """
    pos_a, pos_b = [int(p) for p in pos_a], [int(p) for p in pos_b]
    na, nb = len(pos_a), len(pos_b)
    if na == 0 or nb == 0:
        raise ComparisonError("a prompt with no lens columns cannot be compared")
    if isinstance(align, str):
        if align not in ("last", "start"):
            raise ValueError(f"align must be 'last', 'start', a token position or a pair of positions, got {align!r}")
        if na == nb:
            how = "position by position"
        else:
            how = "on the last token" if align == "last" else "on the first token"
        ca, cb = (na - 1, nb - 1) if align == "last" else (0, 0)
    else:
        if isinstance(align, (int, np.integer)) and not isinstance(align, bool):
            p_a = p_b = int(align)
        elif isinstance(align, Sequence) and len(align) == 2 and all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in align):
            p_a, p_b = int(align[0]), int(align[1])
        else:
            raise ValueError(f"align must be 'last', 'start', a token position or a pair of positions, got {align!r}")

        def column(pos: list[int], length: int, p: int, name: str) -> int:
            q = p + length if p < 0 else p
            if q not in pos:
                raise ComparisonError(f"position {p} of prompt {name} has no lens column; its columns are at {pos}")
            return pos.index(q)

        ca, cb = column(pos_a, len_a, p_a, "a"), column(pos_b, len_b, p_b, "b")
        how = f"on position {p_a}" if p_a == p_b else f"on position {p_a} of a = {p_b} of b"
    back = min(ca, cb)
    n = back + min(na - ca, nb - cb)
    cols_a = np.arange(ca - back, ca - back + n, dtype=np.int64)
    cols_b = np.arange(cb - back, cb - back + n, dtype=np.int64)
    return cols_a, cols_b, how


def topk_js(ids_a: np.ndarray, p_a: np.ndarray, ids_b: np.ndarray, p_b: np.ndarray) -> np.ndarray:
    """The top-k approximation of the Jensen–Shannon divergence (nats) of cells ``[..., k]``.

    Each cell's two distributions are restricted to the union of both top-k sets plus one
    "other" bucket holding the rest of the mass. A token in one side's top-k but not the other's
    gets, on the other side, its k-th probability capped by the mass left (shared equally among
    the missing tokens). Exact when both top-k sets hold all the mass; identical inputs give 0.
    """
    ids_a, ids_b = np.asarray(ids_a), np.asarray(ids_b)
    pa = np.asarray(p_a, dtype=np.float64)
    pb = np.asarray(p_b, dtype=np.float64)
    shape = pa.shape[:-1]
    k = pa.shape[-1]
    ids_a, ids_b = ids_a.reshape(-1, k), ids_b.reshape(-1, k)
    pa, pb = pa.reshape(-1, k), pb.reshape(-1, k)
    eq = ids_a[:, :, None] == ids_b[:, None, :]  # [N, k_a, k_b]
    in_b = eq.any(2)  # a's token is in b's top-k
    in_a = eq.any(1)  # b's token is in a's top-k
    rest_a = np.clip(1.0 - pa.sum(-1), 0.0, None)
    rest_b = np.clip(1.0 - pb.sum(-1), 0.0, None)
    miss_b = (~in_b).sum(-1)  # tokens b must estimate
    miss_a = (~in_a).sum(-1)
    fill_b = np.minimum(pb[:, -1], rest_b / np.maximum(miss_b, 1))
    fill_a = np.minimum(pa[:, -1], rest_a / np.maximum(miss_a, 1))
    pb_on_a = np.where(in_b, (eq * pb[:, None, :]).sum(2), fill_b[:, None])  # b's prob of a's tokens
    pa_on_b = np.where(in_a, 0.0, fill_a[:, None])  # a's prob of b's tokens a lacks (shared ones counted above)
    pb_only = np.where(in_a, 0.0, pb)
    A = np.concatenate([pa, pa_on_b], 1)
    B = np.concatenate([pb_on_a, pb_only], 1)
    A = np.concatenate([A, np.clip(1.0 - A.sum(-1, keepdims=True), 0.0, None)], 1)
    B = np.concatenate([B, np.clip(1.0 - B.sum(-1, keepdims=True), 0.0, None)], 1)
    A /= A.sum(-1, keepdims=True)
    B /= B.sum(-1, keepdims=True)
    M = 0.5 * (A + B)
    with np.errstate(divide="ignore", invalid="ignore"):
        ta = np.where(A > 0, A * (np.log(A) - np.log(M)), 0.0)
        tb = np.where(B > 0, B * (np.log(B) - np.log(M)), 0.0)
    js = np.clip(0.5 * (ta.sum(-1) + tb.sum(-1)), 0.0, LN2)
    bad = ~(np.isfinite(pa).all(-1) & np.isfinite(pb).all(-1))
    js[bad] = np.nan
    return js.reshape(shape).astype(np.float32)


@dataclass
class Comparison:
    """Two lens results lined up cell by cell (S sites, P aligned columns, M shared tracked tokens).

    Every difference is **b − a**. Attributes:
        a, b: the two results; prompt_a, prompt_b: which prompt of each.
        label_a, label_b: what each side is (a lens, a prompt, a model), for legends and tooltips.
        sites: the shared sites, in depth order.
        cols_a, cols_b: ``[P]`` lens columns of each side that are paired.
        positions_a, positions_b: ``[P]`` their token positions.
        align: how the columns were paired (``"position by position"``, ``"on the last token"``, …).
        deltas: ``{name: [S, P]}`` for ``d_top1_prob``, ``d_next_prob`` (each side's own next
            token), ``next_rank_log_ratio`` (``log(rank_b / rank_a)``; NaN without a next token),
            ``d_entropy``, ``d_kl`` (each side's KL to its own final layer).
        top1_agree: ``[S, P]`` both sides have the same top-1 token.
        js: ``[S, P]`` Jensen–Shannon divergence of the two cells (nats).
        js_exact: True when ``js`` is exact over the full vocabulary (one engine run), False for
            the top-k approximation (:func:`topk_js`).
        nonfinite: ``[S, P]`` either side held NaN/inf there.
        tracked_ids: ``[M]`` tokens tracked on both sides; d_tracked_prob / d_tracked_logit ``[S, P, M]``.
        meta: how it was computed (a one-run compare: chunks reduced by the compiled kernels).
    """

    a: LensResult
    b: LensResult
    prompt_a: int
    prompt_b: int
    label_a: str
    label_b: str
    sites: list[str]
    cols_a: np.ndarray
    cols_b: np.ndarray
    positions_a: np.ndarray
    positions_b: np.ndarray
    align: str
    deltas: dict[str, np.ndarray]
    top1_agree: np.ndarray
    js: np.ndarray
    js_exact: bool
    nonfinite: np.ndarray
    tracked_ids: np.ndarray
    d_tracked_prob: np.ndarray
    d_tracked_logit: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    # -- shape ----------------------------------------------------------------------------
    @property
    def n_sites(self) -> int:
        return len(self.sites)

    @property
    def n_positions(self) -> int:
        return int(self.cols_a.size)

    @property
    def site_labels(self) -> list[str]:
        return [site_label(s) for s in self.sites]

    @property
    def js_label(self) -> str:
        """What ``js`` is: exact, or the top-k approximation (shown in legends and tooltips)."""
        return "JS divergence (exact, full vocabulary)" if self.js_exact else f"JS divergence (top-{min(self.a.k, self.b.k)} approximation)"

    # -- values ---------------------------------------------------------------------------
    def side(self, which: str, array: np.ndarray) -> np.ndarray:
        """``[S, P, ...]`` of one side's ``[B, S, P_side, ...]`` result array at the aligned columns."""
        if which == "a":
            return np.asarray(array)[self.prompt_a][:, self.cols_a]
        if which == "b":
            return np.asarray(array)[self.prompt_b][:, self.cols_b]
        raise ValueError(f"side must be 'a' or 'b', got {which!r}")

    def tracked_index(self, token_id: int) -> int:
        hits = np.nonzero(self.tracked_ids == int(token_id))[0]
        if hits.size == 0:
            raise TokenLookupError(f"token id {token_id} is not tracked on both sides; shared tracked ids: {self.tracked_ids.tolist()}")
        return int(hits[0])

    def metric(self, name: str, token: int | None = None, tokens: Sequence[int] = ()) -> np.ndarray:
        """``[S, P]`` values of a compare metric (``lens_widget.metrics.COMPARE_METRICS``):
        ``d_tracked_prob`` takes ``token`` (default: the first shared tracked token),
        ``d_logit_diff`` takes ``tokens=(t_a, t_b)`` (default: the first two)."""
        if name not in COMPARE_METRICS:
            raise ValueError(f"unknown compare metric {name!r}; use one of {', '.join(COMPARE_METRICS)}")
        if name in self.deltas:
            return self.deltas[name]
        if name == "js":
            return self.js
        if name == "top1_agree":
            return self.top1_agree.astype(np.float32)
        if name == "d_tracked_prob":
            if not self.tracked_ids.size:
                raise TokenLookupError("no token is tracked on both sides")
            j = 0 if token is None else self.tracked_index(token)
            return self.d_tracked_prob[..., j]
        ids = list(tokens) or self.tracked_ids[:2].tolist()
        if len(ids) != 2:
            raise TokenLookupError("d_logit_diff needs two tokens tracked on both sides")
        return self.logit_diff(ids[0], ids[1])

    def logit_diff(self, token_a: int, token_b: int) -> np.ndarray:
        """``[S, P]`` Δ of logit(token_a) − logit(token_b) (both tracked on both sides)."""
        i, j = self.tracked_index(token_a), self.tracked_index(token_b)
        return self.d_tracked_logit[..., i] - self.d_tracked_logit[..., j]

    def swapped(self) -> "Comparison":
        """The same comparison with a and b exchanged (Δ signs flip, JS and agreement stay)."""
        return compare(self.b, self.a, align=(int(self.positions_b[0]), int(self.positions_a[0])), prompt_a=self.prompt_b, prompt_b=self.prompt_a,
                       labels=(self.label_b, self.label_a), js=self.js if self.js_exact else None)

    def to_dataframe(self) -> pd.DataFrame:
        """Long table, one row per aligned (site, column) cell: both sides' positions, tokens and
        top-1, every Δ, the tracked tokens' Δ, top-1 agreement and JS."""
        S, P = self.n_sites, self.n_positions
        s, c = np.meshgrid(np.arange(S), np.arange(P), indexing="ij")
        s, c = s.ravel(), c.ravel()
        top_a = self.side("a", self.a.topk_ids)[..., 0][s, c]
        top_b = self.side("b", self.b.topk_ids)[..., 0][s, c]
        pa, pb = self.positions_a[c], self.positions_b[c]
        frame: dict[str, Any] = {
            "site": [self.sites[i] for i in s],
            "layer": s,
            "column": c,
            "position_a": pa,
            "position_b": pb,
            "token_a": [self.a.display(int(self.a.input_ids[self.prompt_a, p])) for p in pa],
            "token_b": [self.b.display(int(self.b.input_ids[self.prompt_b, p])) for p in pb],
            "top1_a": [self.a.display(int(i)) for i in top_a],
            "top1_b": [self.b.display(int(i)) for i in top_b],
        }
        for name in _CELL_DELTAS:
            frame[name] = self.deltas[name][s, c]
        frame["top1_agree"] = self.top1_agree[s, c]
        frame["js"] = self.js[s, c]
        frame["nonfinite"] = self.nonfinite[s, c]
        for m, tid in enumerate(self.tracked_ids.tolist()):
            frame[f"d_prob[{tid}]"] = self.d_tracked_prob[s, c, m]
            frame[f"d_logit[{tid}]"] = self.d_tracked_logit[s, c, m]
        df = pd.DataFrame(frame)
        df.attrs.update({"js_exact": self.js_exact, "align": self.align, "label_a": self.label_a, "label_b": self.label_b})
        return df


def _check_comparable(a: LensResult, b: LensResult) -> None:
    """Refuse results that do not share a vocabulary, a tokenizer and a site list."""
    if a.vocab_size and b.vocab_size and a.vocab_size != b.vocab_size:
        raise ComparisonError(
            f"the results come from models with different vocabularies ({a.vocab_size} vs {b.vocab_size} tokens): "
            "token ids mean different things, so their cells cannot be compared"
        )
    clash = [i for i in set(a.token_strings) & set(b.token_strings) if a.token_strings[i] != b.token_strings[i]]
    if clash:
        i = sorted(clash)[0]
        raise ComparisonError(
            f"the results come from different tokenizers: token id {i} is {a.token_strings[i]!r} in a and "
            f"{b.token_strings[i]!r} in b ({len(clash)} ids differ)"
        )
    if list(a.sites) != list(b.sites):
        raise ComparisonError(f"the results cover different sites ({a.sites[0]} … {a.sites[-1]}, {a.n_sites} vs {b.sites[0]} … {b.sites[-1]}, {b.n_sites}); compute both over the same sites")


def _default_labels(a: LensResult, b: LensResult, pa: int, pb: int) -> tuple[str, str]:
    """What tells the two sides apart: the model, else the lens, else the prompt."""
    if a.model_name != b.model_name:
        return a.model_label or "a", b.model_label or "b"
    if a.lens_name != b.lens_name:
        return a.lens_name, b.lens_name
    ta = a.prompts[pa] if pa < len(a.prompts) else ""
    tb = b.prompts[pb] if pb < len(b.prompts) else ""
    if ta != tb and ta and tb:
        return ta, tb
    return "a", "b"


def compare(
    a: LensResult,
    b: LensResult,
    align: Align = "last",
    *,
    prompt_a: int = 0,
    prompt_b: int = 0,
    labels: tuple[str, str] | None = None,
    js: np.ndarray | None = None,
) -> Comparison:
    """Line up prompt ``prompt_a`` of ``a`` with prompt ``prompt_b`` of ``b`` (see the module's
    docstring for ``align``) and compute every per-cell difference b − a.

    ``js`` (``[S, P]``, exact over the full vocabulary, from one engine run) replaces the top-k
    approximation; :meth:`lens_widget.LogitLens.compare` passes it. ``labels`` name the sides.
    Raises :class:`ComparisonError` for different vocabularies, tokenizers or sites.
    """
    _check_comparable(a, b)
    for r, p, name in ((a, prompt_a, "a"), (b, prompt_b, "b")):
        if not 0 <= int(p) < r.n_prompts:
            raise IndexError(f"prompt_{name}={p}: result {name} has {r.n_prompts} prompt(s)")
    pa_i, pb_i = int(prompt_a), int(prompt_b)
    ca_all, cb_all = a.columns(pa_i), b.columns(pb_i)
    ia, ib, how = align_columns(a.positions[pa_i, ca_all], int(a.lengths[pa_i]), b.positions[pb_i, cb_all], int(b.lengths[pb_i]), align)
    cols_a, cols_b = ca_all[ia], cb_all[ib]

    def pair(arr_a: np.ndarray, arr_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(arr_a)[pa_i][:, cols_a], np.asarray(arr_b)[pb_i][:, cols_b]

    deltas: dict[str, np.ndarray] = {}
    ta, tb = pair(a.topk_probs, b.topk_probs)
    deltas["d_top1_prob"] = (tb[..., 0] - ta[..., 0]).astype(np.float32)
    na, nb = pair(a.next_prob, b.next_prob)
    deltas["d_next_prob"] = (nb - na).astype(np.float32)
    ra, rb = pair(a.next_rank, b.next_rank)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((ra > 0) & (rb > 0), np.log(rb.astype(np.float64)) - np.log(ra.astype(np.float64)), np.nan)
    deltas["next_rank_log_ratio"] = ratio.astype(np.float32)
    ea, eb = pair(a.entropy, b.entropy)
    deltas["d_entropy"] = (eb - ea).astype(np.float32)
    ka, kb = pair(a.kl, b.kl)
    deltas["d_kl"] = (kb - ka).astype(np.float32)
    ida, idb = pair(a.topk_ids, b.topk_ids)
    bad_a, bad_b = pair(a.nonfinite, b.nonfinite)
    nonfinite = bad_a | bad_b
    if js is None:
        js_arr = topk_js(ida, ta, idb, tb)
        js_exact = False
    else:
        js_arr = np.asarray(js, dtype=np.float32)
        if js_arr.shape != deltas["d_kl"].shape:
            raise ValueError(f"js has shape {js_arr.shape}, the aligned grid is {deltas['d_kl'].shape}")
        js_exact = True
    js_arr = np.where(nonfinite, np.float32(np.nan), js_arr).astype(np.float32)
    shared = [int(t) for t in a.tracked_ids.tolist() if int(t) in set(b.tracked_ids.tolist())]
    ja = [a.tracked_index(t) for t in shared]
    jb = [b.tracked_index(t) for t in shared]
    tpa, tpb = pair(a.tracked_prob, b.tracked_prob)
    tla, tlb = pair(a.tracked_logit, b.tracked_logit)
    return Comparison(
        a=a,
        b=b,
        prompt_a=pa_i,
        prompt_b=pb_i,
        label_a=(labels or _default_labels(a, b, pa_i, pb_i))[0],
        label_b=(labels or _default_labels(a, b, pa_i, pb_i))[1],
        sites=list(a.sites),
        cols_a=cols_a,
        cols_b=cols_b,
        positions_a=a.positions[pa_i, cols_a].copy(),
        positions_b=b.positions[pb_i, cols_b].copy(),
        align=how,
        deltas=deltas,
        top1_agree=ida[..., 0] == idb[..., 0],
        js=js_arr,
        js_exact=js_exact,
        nonfinite=nonfinite,
        tracked_ids=np.array(shared, dtype=np.int64),
        d_tracked_prob=(tpb[..., jb] - tpa[..., ja]).astype(np.float32),
        d_tracked_logit=(tlb[..., jb] - tla[..., ja]).astype(np.float32),
    )
