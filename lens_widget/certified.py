"""Certified unembedding: approximate float32 logits on tensor cores, exact reductions.

One job: for a half-precision unembedding ``W [V, d]`` (bf16 or fp16, never copied to float32
whole) and float32 rows ``x [r, d]``, compute approximate logits ``z~`` fast and a per-row bound
``eps`` with ``|z~_v - z32_v| <= eps`` for every column ``v``, where ``z32`` is what the float32
path (``Decoder.unembed``: W upcast block by block, float32 ``mm``, then ``finish``) computes;
then reduce ``z~`` to exactly the statistics the float32 path gives (ranks, top-k, target
logits), recomputing in float32 only the few columns the bound cannot decide.

Derivation of ``eps`` (per row; ``u = 2^-24``, ``gamma(n) = n u / (1 - n u)``)
-------------------------------------------------------------------------------
Let ``s_v = sum_i x_i W_vi`` (real arithmetic), ``M = max_v ||W_v||_2`` (computed once per
weight, in float64, rounded up), ``A = ||x||_2``.

1. **Split.** ``hi = rn(x)``, ``lo = rn(x - hi)`` in the weight's dtype, ``res = x - hi - lo``.
   The residual is computed exactly (float64: each subtraction is exact by Sterbenz), so
   ``|res . W_v| <= ||res|| M`` is measured, not assumed (for bf16 it is ``<= 2^-16 A M``).
2. **Products.** ``hi_i W_vi`` and ``lo_i W_vi`` are exact in float32 (8+8 or 11+11 significant
   bits). Each product passes through at most ``d`` accumulation steps, in any association order
   (split-K, tensor-core blocks, cuBLAS's choice). On an IEEE float32 adder a step perturbs each
   partial sum by ``<= u``; a tensor core's block adder is modelled conservatively as truncating
   (round toward zero, ``2u``) both the alignment of each addend and the normalised result, with
   no guard bits: ``<= 6u`` per step charged to the magnitudes involved (see ``TC_UNITS``). So
   ``|P~_hi - hi.W_v| <= gamma(TC_UNITS d) ||hi|| M`` and the same for ``lo``.
   Subnormal products flushed to zero add at most ``d 2^-126 M``-sized terms: ``ETA``.
3. **Sum.** ``z~ = fl(P~_hi + P~_lo)`` (one float32 addition, separate from the products):
   ``<= u (1 + gamma) (||hi|| + ||lo||) M``.
   => ``|z~_v - s_v| <= e_tc = M [(gamma(TC_UNITS d) + u(1+gamma)) (||hi|| + ||lo||) + ||res||] + ETA``.
4. **The float32 path** is itself a float32 dot product over ``d`` terms, any order:
   ``|z32_v - s_v| <= e_32 = gamma(d) A M + ETA``. So before the bias
   ``|z~_v - z32_v| <= eps_0 = e_tc + e_32`` and both lie in ``[-Y, Y]``, ``Y = A M + eps_0``.
5. **Bias** (float32 add on both sides): ``eps_1 = eps_0 + 2u (Y + B)``, ``B = max |b|``,
   magnitudes ``<= Y_1 = (Y + B)(1 + u)``.
6. **Soft-cap** ``f(y) = c tanh(y / c)`` is 1-Lipschitz and monotone; computed as
   ``fl(c * tanh(fl(y / c)))`` with a ``tanh`` within ``TANH_ULPS`` ulps (SLEEF/glibc on CPU
   <= 1-2, CUDA ``tanhf`` <= 2): ``|f^(y) - f(y)| <= KAPPA |y|``, ``KAPPA = (2 + 2 TANH_ULPS) u``
   plus second order, so ``eps_2 = eps_1 + 2 KAPPA Y_1``.

``eps`` is then rounded up to float32. Rows whose ``x`` is not finite get ``eps = inf`` (they go
to the exact path). The bound is deliberately per row (the product must not know ``v``), so it
uses ``max_v ||W_v||``; it is dominated by step 4 and the tensor-core model, not by the split.

Exact reductions under the bound
--------------------------------
With ``|z~ - z32| <= eps`` elementwise:

* **rank** of target ``t`` (the float32 path: ``1 + #{v: z32_v > z32_t}``): every ``v`` with
  ``z~_v > z~_t + 2 eps`` has ``z32_v > z32_t`` and every ``v`` with ``z~_v < z~_t - 2 eps`` has
  ``z32_v < z32_t``; the columns in between (the *window*, ``t`` included) are recomputed in
  float32, so the rank is exact. Thresholds are rounded outward to float32.
* **top-k**: if ``tau~`` is the k-th largest of ``z~`` then the k-th largest of ``z32`` lies
  within ``eps`` of it, so every float32 top-k column has ``z~_v >= tau~ - 2 eps``: recomputing
  those candidates and selecting among them gives the float32 top-k (ties aside, where top-k is
  arbitrary in the float32 path too).
* all recomputed columns (the union ``U`` over the chunk's rows) are written back into the
  logits buffer (the *hybrid* logits ``z_h``: exact on ``U``, within ``eps`` elsewhere);
  log-sum-exp, entropy and the KL cross term are computed from ``z_h``, with rigorous bounds
  from the probability mass ``q`` that lies off ``U`` (see :func:`certified_stats`). Rows whose
  bound exceeds ``sum_tol`` (or whose window is too wide, or non-finite rows) are recomputed in
  full in float32 (``eps = 0`` for them: then every statistic is the float32 path's).

What "exact" depends on
-----------------------
The recount is a float32 ``mm`` of the chunk's rows against the gathered columns (padded to a
multiple of ``PAD_COLS``), i.e. the same kernel family, rows and ``K`` as the float32 path.
BLAS results can depend on the shape (measured on this CPU with MKL/oneDNN: an output element
is bit-identical to the full product's when the product has >= 4 rows and >= 16 columns, and
differs in the last bit otherwise — with one thread; with two threads a product of a subset of
a chunk's rows can be split differently from the whole chunk's, again one ulp apart; cuBLAS
picks kernels per shape: on an H200, a gathered
recount matched the full product's bits in only ~8 % of elements, 99 % for 16k columns x 1024
rows, and two float32 evaluations of the same grid chunked differently disagreed on 0.04-0.18 %
of next-token ranks). Where the recount and the full product differ by an ulp, a rank can differ
only if a window column ties the target to within that ulp: the float32 path's own answer then
depends on its chunking. (On SmolLM2 rows here, an unpadded per-row recount changed 0.23 % of
ranks; computing the target's logit in a separate product from its window changed 47 %.) The fallback pads
its rows to >= ``MIN_ROWS`` for the same reason. ``exact=`` lets a caller inject the float32
product it wants reproduced.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = [
    "PRECISIONS",
    "Certify",
    "check_precision",
    "resolve_precision",
    "emulated_product",
    "U32",
    "TC_UNITS",
    "TANH_ULPS",
    "gamma",
    "weight_norm_max",
    "split_rows",
    "cuda_product",
    "cuda_product_available",
    "split_logits",
    "error_bound",
    "exact_logits",
    "certified_stats",
    "bound_holds",
    "finish",
]

#: float32 unit roundoff.
U32 = 2.0**-24
#: Error per accumulation step of the approximate product, in units of ``U32`` (6: truncating
#: block adder without guard bits; 1 would be an IEEE round-to-nearest float32 adder).
TC_UNITS = 6
#: Accuracy assumed of float32 ``tanh`` (ulps), for the soft-cap.
TANH_ULPS = 4
#: Absolute slack per unit of ``d (1 + A M)`` for flushed subnormals.
ETA = 2.0**-120
#: Recounted columns are padded to a multiple of this (BLAS tails compute differently).
PAD_COLS = 64
#: The final distribution's mass left off a chunk's recounted columns (the KL's bound is
#: ``eps q_f + ...``) when no ``sum_tol`` sets it (``q_f <= sum_tol / (2 eps)``): the columns
#: holding the rest are recounted where they are few.
QF_TARGET = 1e-6
#: A row stays on the certified path while it needs at most ``ROW_SHARE * V / r`` recounted
#: columns (of a chunk of ``r`` rows); past that, recomputing it alone is cheaper.
ROW_SHARE = 2.0
#: Fewest rows in a fallback product (MKL computes 1-3 row products in another order).
MIN_ROWS = 4
#: float32 scratch of one block of upcast weight rows (as ``Decoder.UPCAST_BYTES``).
UPCAST_BYTES = 32 * 2**20

Product = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: What ``LogitLens(..., precision=)`` accepts (or a :class:`Certify`).
PRECISIONS = ("auto", "float32", "certified")


def gamma(n: float, u: float = U32) -> float:
    """``n u / (1 - n u)``: the classical bound on ``n`` rounding errors of unit ``u``."""
    if n * u >= 1:
        return math.inf
    return n * u / (1 - n * u)


def round_up(x: torch.Tensor) -> torch.Tensor:
    """float64 -> float32 rounded toward +inf."""
    y = x.float()
    return torch.where(y.double() < x, torch.nextafter(y, torch.full_like(y, math.inf)), y)


def _down(x: torch.Tensor) -> torch.Tensor:
    """float64 -> float32 rounded toward -inf."""
    y = x.float()
    return torch.where(y.double() > x, torch.nextafter(y, torch.full_like(y, -math.inf)), y)


@torch.no_grad()
def weight_norm_max(weight: torch.Tensor, block: int = 8192) -> float:
    """``max_v ||W_v||_2`` (float64 sums, rounded up): computed once per weight, in blocks."""
    best = 0.0
    for v0 in range(0, weight.shape[0], block):
        n = weight[v0 : v0 + block].double().pow(2).sum(-1).max().item()
        best = max(best, n)
    return math.sqrt(best) * (1 + 2.0**-40)


def split_rows(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``hi = rn(x)``, ``lo = rn(x - hi)`` in ``dtype`` and the exact residual norms.

    Returns ``(hi, lo, norms)`` with ``norms [r, 4]`` float64: ``||x||, ||hi||, ||lo||, ||res||``.
    """
    hi = x.to(dtype)
    xd = x.double()
    rest = xd - hi.double()  # exact (Sterbenz): hi is x rounded
    lo = rest.to(dtype) if dtype != torch.float32 else torch.zeros_like(hi)
    res = rest - lo.double()  # exact again
    grow = 1 + 2.0**-40  # float64 norms of <= 2^20 terms: relative error far below this
    norms = torch.stack([xd.norm(dim=-1), hi.double().norm(dim=-1), lo.double().norm(dim=-1), res.norm(dim=-1)], -1) * grow
    # an overflowing hi (fp16 weights, |x| > 65504) leaves no bound: flag the row
    bad = ~torch.isfinite(hi).all(-1) | ~torch.isfinite(lo).all(-1)
    norms[bad] = math.inf
    return hi, lo, norms


def cuda_product(a: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ weight.T`` on tensor cores with float32 output (CUDA, torch >= 2.8), into ``out``
    when given."""
    if a.device.type != "cuda":
        raise RuntimeError(
            "the split product needs CUDA (torch.mm(..., out_dtype=torch.float32) has no CPU kernel); "
            "inject product= (tests use an emulation) or use the float32 path"
        )
    if out is None:
        return torch.mm(a, weight.T, out_dtype=torch.float32)
    try:
        return torch.mm(a, weight.T, out_dtype=torch.float32, out=out)
    except (TypeError, RuntimeError):  # no dtype_out overload in this torch
        return out.copy_(torch.mm(a, weight.T, out_dtype=torch.float32))


def _product_into(product: Product, a: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``product(a, weight, out=out)``, or ``product(a, weight)`` copied into ``out``."""
    if out is None:
        return product(a, weight)
    try:
        return product(a, weight, out=out)  # type: ignore[call-arg]
    except TypeError:
        return out.copy_(product(a, weight))


def finish(z: torch.Tensor, bias: torch.Tensor | None, softcap: float | None, ids: torch.Tensor | None = None) -> torch.Tensor:
    """``Decoder.finish``'s arithmetic, in place: float32 bias add, then ``c tanh(z / c)``."""
    if bias is not None:
        z.add_(bias if ids is None else bias[ids])
    if softcap is not None:
        z.div_(softcap).tanh_().mul_(softcap)
    return z


def error_bound(
    norms: torch.Tensor,
    d: int,
    wmax: float,
    bias_max: float = 0.0,
    softcap: float | None = None,
    tc_units: float = TC_UNITS,
    split: bool = True,
) -> torch.Tensor:
    """The per-row bound ``eps [r]`` (float32, rounded up) on ``|z~ - z32|`` after ``finish``.

    ``norms`` from :func:`split_rows`; ``wmax`` from :func:`weight_norm_max`. ``split=False``
    bounds a single approximate product of ``hi`` alone (no ``lo`` term: ``res`` is then
    ``x - hi``, which the caller must have put in ``norms[:, 3]``).
    """
    A, nhi, nlo, nres = norms.unbind(-1)
    g_tc, g_32 = gamma(tc_units * d), gamma(d)
    eta = ETA * d * (1 + A * wmax)
    parts = nhi + nlo if split else nhi
    e_tc = wmax * ((g_tc + U32 * (1 + g_tc)) * parts + nres) + eta
    e_32 = g_32 * A * wmax + eta
    eps = e_tc + e_32
    Y = A * wmax + eps
    if bias_max:
        eps = eps + 2 * U32 * (Y + bias_max)
        Y = (Y + bias_max) * (1 + U32)
    if softcap is not None:
        kappa = (2 + 2 * TANH_ULPS) * U32 * (1 + 1e-6)
        eps = eps + 2 * kappa * Y
    eps = torch.where(torch.isfinite(eps), eps, torch.full_like(eps, math.inf))
    return round_up(eps * (1 + 2.0**-40))


@torch.no_grad()
def split_logits(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
    *,
    out: torch.Tensor | None = None,
    product: Product | None = None,
    wmax: float | None = None,
    tc_units: float = TC_UNITS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate float32 logits ``z~ [r, V]`` (after bias and soft-cap) and ``eps [r]``.

    ``x [r, d]`` float32 prepared rows; ``weight [V, d]`` half precision (stays so); ``bias [V]``
    float32. ``product(a, weight[, out=]) -> float32 [r, V]`` computes ``a @ weight.T`` for ``a``
    in the weight's dtype (exact products, any float32-output accumulation: step 2 of the bound) (default :func:`cuda_product`; the CPU has no float32-out half ``mm``, so CPU
    callers inject one). When every row is exactly representable in the weight's dtype (a bf16
    model's final norm runs in bf16: measured so on the H200 check) ``lo = 0`` and the second
    product is skipped: one tensor-core product, same bound. ``wmax``: :func:`weight_norm_max` of
    ``weight`` (pass it: it reads the whole weight). ``out``: a float32 ``[r, V]`` buffer. Memory: ``z~`` plus one ``[r, V]``
    temporary (the ``lo`` product).
    """
    if weight.dtype == torch.float32:
        raise ValueError("split_logits is for half-precision weights; the float32 path is exact already")
    product = product or cuda_product
    x = x.detach().reshape(-1, x.shape[-1]).float()
    if wmax is None:
        wmax = weight_norm_max(weight)
    hi, lo, norms = split_rows(x, weight.dtype)
    z = _product_into(product, hi, weight, out)
    if bool((norms[:, 2] > 0).any()):  # rows prepared in bf16 (a bf16 model's norm) have lo = 0
        z.add_(product(lo, weight))  # a separate product, then one float32 add (step 3 of the bound)
    bmax = float(bias.abs().max()) if bias is not None and bias.numel() else 0.0
    finish(z, bias, softcap)
    eps = error_bound(norms, x.shape[-1], wmax, bmax, softcap, tc_units).to(z.device)
    return z, eps


@torch.no_grad()
def exact_logits(
    x: torch.Tensor,
    weight: torch.Tensor,
    ids: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The float32 path's logits ``[r, n]`` of columns ``ids`` (all ``V`` when ``None``): weight
    rows upcast to float32 in blocks of ``UPCAST_BYTES``, float32 ``mm``, then :func:`finish`.

    For bit-faithful recounts pass ``ids`` padded to a multiple of ``PAD_COLS`` (see the module
    docstring); :func:`certified_stats` does.
    """
    x = x.detach().float()
    V, d = weight.shape
    n = V if ids is None else int(ids.numel())
    z = out if out is not None else torch.empty(x.shape[0], n, dtype=torch.float32, device=x.device)
    if weight.dtype == torch.float32 and ids is None:
        torch.mm(x, weight.T, out=z)
        return finish(z, bias, softcap)
    rows = max(1, UPCAST_BYTES // (4 * d))
    block = torch.empty(min(rows, n), d, dtype=torch.float32, device=weight.device)
    for v0 in range(0, n, block.shape[0]):
        m = min(block.shape[0], n - v0)
        block[:m].copy_(weight[v0 : v0 + m] if ids is None else weight[ids[v0 : v0 + m]])
        torch.mm(x, block[:m].T, out=z[:, v0 : v0 + m])
    return finish(z, bias, softcap, ids)


def bound_holds(z_approx: torch.Tensor, eps: torch.Tensor, z32: torch.Tensor) -> torch.Tensor:
    """Per row: whether ``|z~ - z32| <= eps`` in every column (float64 comparison)."""
    err = (z_approx.double() - z32.double()).abs().amax(-1)
    return err <= eps.double()


def pad_ids(ids: torch.Tensor, V: int, multiple: int = PAD_COLS) -> torch.Tensor:
    """``ids`` padded (with other columns) to a multiple of ``multiple`` (capped at ``V``)."""
    n = int(ids.numel())
    want = min(V, max(multiple, -(-n // multiple) * multiple))
    if want <= n:
        return ids
    mask = torch.ones(V, dtype=torch.bool, device=ids.device)
    mask[ids] = False
    extra = mask.nonzero()[: want - n, 0]
    return torch.cat([ids, extra]).sort().values


def _union_within(need: torch.Tensor, fallback: torch.Tensor, limit: int) -> torch.Tensor:
    """The columns ``need`` marks for the rows not in ``fallback``, at most ``limit`` of them:
    when they are more, the rows needing the most columns join ``fallback`` (in place) until the
    union of the others fits (the longest prefix of rows by need, found by bisection)."""
    live = (~fallback).nonzero()[:, 0]
    empty = torch.zeros(0, dtype=torch.long, device=need.device)
    if not live.numel():
        return empty
    union = need[live].any(0)
    if int(union.sum()) <= limit:
        return union.nonzero()[:, 0]
    order = live[torch.argsort(need[live].sum(-1), stable=True)]  # fewest columns first
    lo, hi = 0, int(order.numel())  # the prefix of lo rows fits; of hi rows it does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if int(need[order[:mid]].any(0).sum()) <= limit:
            lo = mid
        else:
            hi = mid
    fallback[order[lo:]] = True
    return need[order[:lo]].any(0).nonzero()[:, 0] if lo else empty


def _full_rows(z: torch.Tensor, rows: torch.Tensor, x: torch.Tensor, weight, bias, softcap) -> None:
    """Exact float32 rows ``rows`` of ``z`` (padded to ``MIN_ROWS`` rows for the product)."""
    r = x.shape[0]
    use = rows
    if rows.numel() < min(MIN_ROWS, r):
        others = torch.ones(r, dtype=torch.bool, device=rows.device)
        others[rows] = False
        use = torch.cat([rows, others.nonzero()[: MIN_ROWS - rows.numel(), 0]])
    zz = exact_logits(x[use], weight, None, bias, softcap)
    z[rows] = zz[: rows.numel()]


@torch.no_grad()
def certified_stats(
    z: torch.Tensor,
    eps: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    softcap: float | None,
    targets: torch.Tensor,
    k: int,
    p_final: torch.Tensor | None = None,
    group: int = 1,
    *,
    sum_tol: float | None = 1e-4,
    mass_nats: float = 12.0,
    max_window: float = 1 / 16,
    max_union: float = 0.25,
    row_share: float | None = ROW_SHARE,
) -> dict[str, torch.Tensor]:
    """What ``ChunkReducer.reduce_logits`` needs, from approximate logits ``z [r, V]`` (from
    :func:`split_logits`, overwritten here: it ends as the hybrid logits) and ``eps [r]``.

    ``x [r, d]`` the prepared float32 rows; ``targets [r, T]`` ids (>= 0) whose logits and ranks
    are wanted (next token first); ``p_final [n, V]`` the final layer's probabilities per position
    (row ``i`` belongs to position ``i // group``), or ``None``.

    Returns (``[r]`` unless said):

    * ``target_logits [r, T]``, ``ranks [r, T]`` (int32, 1-based), ``topk_logits``/``topk_ids
      [r, k]``: **identical** to the float32 path (exact float32 recounts; see the module
      docstring for the one caveat, BLAS shape-dependence);
    * ``lse``, ``neg_entropy``, ``cross`` (``sum_v p_final log p``): from the hybrid logits, with
      rigorous bounds against the same sums of the float32 path's logits, ``lse_err``,
      ``entropy_err``, ``cross_err`` (the KL's error is ``cross_err``). With ``q`` the softmax
      mass off the recomputed columns, ``q_f`` the final distribution's, ``R`` the logit range:
      ``|d lse| <= b / (1 - b)``, ``b = q (e^eps - 1)``; ``|d neg_entropy| <= eps e^(2 eps) q
      (R + 2 eps)``; ``|d cross| <= eps q_f + |d lse|``. Rows whose bound exceeds ``sum_tol``
      are recomputed in full (bounds 0); ``sum_tol=None`` keeps them and reports the bounds.
      (Summation order still differs from the reducer's by float64-sum rounding, ~1e-7.)
    * ``fallback`` (bool): rows recomputed in full; ``window`` (int32): columns recounted per row;
      ``union`` (scalar): the chunk's recomputed columns.

    Cost: passes over ``z`` (per target two, top-k, max/sums twice), one float32 ``mm`` of the
    rows against the union of windows and candidates, and full float32 rows for the fallback.
    ``mass_nats``: columns within this of a row's maximum are recomputed too (so the sums' bounds
    are small for peaked rows). A row is recomputed in full instead when it needs more than
    ``min(max_window V, row_share V / r + PAD_COLS)`` columns (then that is cheaper), and when
    the union passes ``max_union V`` columns the rows needing the most join them until it fits.
    """
    r, V = z.shape
    dev = z.device
    f64 = torch.float64
    k = min(k, V)
    targets = targets.to(dev).long()
    T = targets.shape[1]
    eps = eps.to(dev).float()
    eps2 = eps.double() * 2
    fallback = ~torch.isfinite(eps) | ~torch.isfinite(z).all(-1)
    eps = torch.where(fallback, torch.zeros_like(eps), eps)
    eps2 = torch.where(fallback, torch.zeros_like(eps2), eps2)

    # -- phase 1, on z~: windows, candidates, mass columns ------------------------------------
    need = torch.zeros(r, V, dtype=torch.bool, device=dev)
    tz_approx = z.gather(1, targets)
    thr_hi = round_up(tz_approx.double() + eps2[:, None])  # [r, T]: certified above when z~ > thr_hi
    thr_lo = _down(tz_approx.double() - eps2[:, None])
    for j in range(T):
        need |= (z >= thr_lo[:, j : j + 1]) & (z <= thr_hi[:, j : j + 1])
    kth = torch.topk(z, k, dim=-1).values[:, -1]
    need |= z >= _down(kth.double() - eps2)[:, None]
    need.scatter_(1, targets, True)
    window = need.sum(-1, dtype=torch.int32)
    # a row recounted through the union costs r x (its new columns); recomputed alone it costs V
    # columns: rows needing more than ~ROW_SHARE V / r columns are cheaper recomputed alone
    cap = int(max_window * V)
    if row_share is not None:
        cap = min(cap, int(row_share * V / max(1, r)) + PAD_COLS)
    cap = max(k + T, cap)
    fallback |= window > cap
    zmax = z.amax(-1)
    if mass_nats > 0:  # the columns that carry a peaked row's mass, where they are few
        heavy = z >= _down(zmax.double() - mass_nats - eps2)[:, None]
        few = heavy.sum(-1) <= cap
        need |= heavy & few[:, None]
    if p_final is not None and mass_nats > 0:
        # the KL's bound grows with the final distribution's mass off the recounted columns:
        # recount the columns that hold all but QF_TARGET of it, where they are few
        n_pos = r // group
        pf = p_final[:n_pos].to(dev)
        top = torch.sort(pf, dim=-1, descending=True)
        emax = float(eps[~fallback].max()) if bool((~fallback).any()) else 0.0
        target = min(0.5, 0.5 * sum_tol / emax) if sum_tol is not None and emax > 0 else QF_TARGET
        keep = (top.values.cumsum(-1) - top.values) < (1 - target)
        cols = torch.zeros_like(keep).scatter_(1, top.indices, keep)
        cols &= (keep.sum(-1) <= cap)[:, None]
        need |= cols.repeat_interleave(group, 0)

    # -- the sums' bounds (decided before any recount, from z~) --------------------------------
    U = _union_within(need, fallback, int(max_union * V))
    Upad = pad_ids(U, V) if U.numel() else U
    lse_err = torch.zeros(r, dtype=f64, device=dev)
    ent_err = torch.zeros_like(lse_err)
    cross_err = torch.zeros_like(lse_err)
    if Upad.numel():
        zd = zmax.double()
        lse_a = (zd + torch.exp(z - zmax[:, None]).sum(-1, dtype=f64).log())  # approx lse of z~
        in_u = torch.exp(z[:, Upad].double() - lse_a[:, None]).sum(-1)
        slack = V * 2.0**-45
        # mass off U under softmax(z~); under softmax(z_h) it is at most e^(2 eps) times that
        q = ((1 - in_u).clamp(min=0) + slack) * torch.exp(eps2)
        e = eps.double()
        b = q * torch.expm1(e)
        lse_err = torch.where(b < 1, b / (1 - b).clamp(min=1e-300), torch.full_like(b, math.inf))
        R = zd - z.amin(-1).double() + 2 * eps2
        ent_err = e * torch.exp(eps2) * q * (R + 2 * e)
        if p_final is not None:
            n_pos = r // group
            pf = p_final[:n_pos].to(dev)
            pf_all = pf.sum(-1, dtype=f64)
            qf = ((pf_all - pf[:, Upad].sum(-1, dtype=f64)).clamp(min=0) + slack).repeat_interleave(group)
            cross_err = e * qf + lse_err * pf_all.repeat_interleave(group)
        if sum_tol is not None:
            worst = torch.maximum(torch.maximum(lse_err, ent_err), cross_err)
            fallback |= worst > sum_tol
        lse_err, ent_err, cross_err = (torch.where(fallback, torch.zeros_like(t), t) for t in (lse_err, ent_err, cross_err))

    # -- phase 2: exact columns U for every row, exact rows for the fallback --------------------
    thr = thr_hi
    zu = None
    if Upad.numel() and 2 * int(fallback.sum()) <= r:
        zu = exact_logits(x, weight, Upad, bias, softcap)  # [r, |U|]: same rows as the float32 path
        z.index_copy_(1, Upad, zu)
    if 2 * int(fallback.sum()) > r:  # most rows: the float32 path's own product of the chunk
        fallback[:] = True
        lse_err.zero_(), ent_err.zero_(), cross_err.zero_()
    fb = fallback.nonzero()[:, 0]
    if bool(fallback.all()):
        exact_logits(x, weight, None, bias, softcap, out=z)
        zu = None
    elif fb.numel():
        _full_rows(z, fb, x, weight, bias, softcap)
        if zu is not None:
            zu[fb] = z[fb][:, Upad]
    tz = z.gather(1, targets)  # exact: targets are in U, or the row is exact
    thr = torch.where(fallback[:, None], tz, thr_hi)
    ranks = torch.empty(r, T, dtype=torch.int32, device=dev)
    mask = torch.empty(r, V, dtype=torch.bool, device=dev)
    for j in range(T):
        c = torch.gt(z, thr[:, j : j + 1], out=mask).view(torch.uint8).sum(-1, dtype=torch.int32)
        if zu is not None:
            c = c - (zu > thr[:, j : j + 1]).sum(-1, dtype=torch.int32) + (zu > tz[:, j : j + 1]).sum(-1, dtype=torch.int32)
        ranks[:, j] = c + 1
    top_logits, top_ids = torch.topk(z, k, dim=-1)
    m = z.amax(-1, keepdim=True)
    ez = torch.exp(z - m)
    s = ez.sum(-1, dtype=f64)
    lse = m[:, 0].double() + torch.log(s)
    neg_entropy = (ez * z).sum(-1, dtype=f64) / s - lse
    if p_final is not None:
        n_pos = r // group
        pf = p_final[:n_pos].to(dev)
        pz = (z.view(n_pos, group, V) * pf[:, None, :]).sum(-1, dtype=f64).view(-1)
        cross = pz - lse * pf.sum(-1, dtype=f64).repeat_interleave(group)
    else:
        cross = torch.zeros_like(lse)
    return {
        "target_logits": tz,
        "ranks": ranks,
        "topk_logits": top_logits,
        "topk_ids": top_ids,
        "lse": lse.float(),
        "neg_entropy": neg_entropy.float(),
        "cross": cross.float(),
        "lse_err": lse_err.float(),
        "entropy_err": ent_err.float(),
        "cross_err": cross_err.float(),
        "fallback": fallback,
        "window": window,
        "union": torch.tensor(int(Upad.numel()), device=dev),
    }


@torch.no_grad()
def emulated_product(a: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ weight.T`` as a tensor core computes it at best, on any device: exact products
    (``a`` and ``weight`` half precision, each product exact in float32) accumulated in float32
    (weight rows upcast in blocks, float32 ``mm``). A valid instance of step 2 of the bound (an
    IEEE float32 adder), for running the certified path where no float32-out half ``mm`` exists
    (the CPU): it checks the path, it is not faster than the float32 path."""
    z = out if out is not None else torch.empty(a.shape[0], weight.shape[0], dtype=torch.float32, device=a.device)
    return exact_logits(a.float(), weight, None, None, None, out=z)


def cuda_product_available(device: torch.device) -> bool:
    """Whether ``torch.mm(..., out_dtype=torch.float32)`` runs on ``device`` (CUDA, torch >= 2.8;
    probed once per device)."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return False
    key = str(torch.device(device))
    if key not in _CUDA_PRODUCT:
        _CUDA_PRODUCT[key] = _probe_cuda_product(device)
    return _CUDA_PRODUCT[key]


_CUDA_PRODUCT: dict[str, bool] = {}


def _probe_cuda_product(device: torch.device) -> bool:
    try:
        a = torch.ones(4, 8, dtype=torch.bfloat16, device=device)
        return torch.mm(a, a.T, out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError, NotImplementedError):
        return False


#: ``max_v ||W_v||`` of the weights seen (see :meth:`Certify.wmax`).
WMAX_CACHE: dict[tuple, float] = {}


class Certify:
    """How a :class:`~lens_widget.reduce.ChunkReducer` certifies: the approximate product (default
    :func:`cuda_product`), the accumulation model of its bound (``tc_units``), the sums'
    tolerance (``sum_tol``: rows whose entropy / KL / log-sum-exp bound exceeds it are recomputed
    in float32) and ``give_up``: once more than this share of a run's rows went back to the
    float32 path (after ``GIVE_UP_AFTER`` chunks), the reducer stops certifying for the rest of
    the run (results are the same either way; only the time differs).

    ``max_v ||W_v||`` is computed once per weight (it reads the whole weight) and remembered
    for the process (:data:`WMAX_CACHE`, keyed by the tensor's storage, shape and version)."""

    GIVE_UP_AFTER = 2

    def __init__(self, product: Product | None = None, tc_units: float = TC_UNITS, sum_tol: float | None = 1e-4, give_up: float = 0.5,
                 name: str = "certified", **windows: float):
        """``windows``: :func:`certified_stats`'s ``mass_nats``, ``max_window``, ``max_union``,
        ``row_share``."""
        unknown = set(windows) - {"mass_nats", "max_window", "max_union", "row_share"}
        if unknown:
            raise TypeError(f"Certify() got unexpected options {sorted(unknown)}")
        self.product = product or cuda_product
        self.tc_units, self.sum_tol, self.give_up, self.name = float(tc_units), sum_tol, float(give_up), name
        self.windows = windows

    def __repr__(self) -> str:
        return f"Certify({getattr(self.product, '__name__', 'product')}, tc_units={self.tc_units:g}, sum_tol={self.sum_tol})"

    def wmax(self, weight: torch.Tensor) -> float:
        """:func:`weight_norm_max` of ``weight``, computed once per weight."""
        key = (weight.data_ptr(), tuple(weight.shape), weight.dtype, str(weight.device), weight._version)
        if key not in WMAX_CACHE:
            if len(WMAX_CACHE) > 64:
                WMAX_CACHE.clear()
            WMAX_CACHE[key] = weight_norm_max(weight)
        return WMAX_CACHE[key]

    def logits(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, softcap: float | None,
               out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`split_logits` with this product and model: ``(z~, eps)``."""
        return split_logits(x, weight, bias, softcap, out=out, product=self.product, wmax=self.wmax(weight), tc_units=self.tc_units)

    def stats(self, z: torch.Tensor, eps: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
              softcap: float | None, targets: torch.Tensor, k: int, p_final: torch.Tensor | None, group: int) -> dict[str, torch.Tensor]:
        """:func:`certified_stats` with this tolerance."""
        return certified_stats(z, eps, x, weight, bias, softcap, targets, k, p_final, group, sum_tol=self.sum_tol, **self.windows)


def check_precision(precision: "str | Certify") -> None:
    """Raise ``ValueError`` unless ``precision`` is one of :data:`PRECISIONS` or a :class:`Certify`."""
    if not isinstance(precision, Certify) and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))} or a certified.Certify, got {precision!r}")


def resolve_precision(precision: "str | Certify", weight_dtype: torch.dtype, device: torch.device) -> Certify | None:
    """The certified unembedding a lens uses, or ``None`` for the float32 path.

    * ``"float32"``: the float32 path (weights upcast in blocks, float32 ``mm``): the reference.
    * ``"auto"``: the fastest path that is exact. Today that is the float32 path everywhere:
      under the proven bound the entropy / KL of most rows of a real model cannot be held to
      1e-4 without recomputing the row in float32 (on SmolLM2 in bf16 every residual row of a
      grid went back; ranks and top-k alone were certified for ~80 %), so the certified path
      costs more than it saves. (See the README's "What exact means".)
    * ``"certified"``: certified wherever the weights are half precision, on CUDA with
      :func:`cuda_product`, elsewhere with :func:`emulated_product` (for checking; not faster).
    * a :class:`Certify`: that one (tests inject emulated products with errors up to the bound).

    A float32 unembedding is always the float32 path (its product is the reference itself)."""
    check_precision(precision)
    if isinstance(precision, Certify):
        return precision if weight_dtype != torch.float32 else None
    if precision != "certified" or weight_dtype not in (torch.bfloat16, torch.float16):
        return None
    if cuda_product_available(device):
        return Certify(cuda_product, name="certified (tensor cores)")
    return Certify(emulated_product, name="certified (emulated product)")
