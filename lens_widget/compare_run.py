"""Two sides of one engine run, compared cell by cell with exact Jensen–Shannon divergences.

Two lenses on one prompt, two prompts, or both: one forward pass records what both sides need;
per chunk the two sides' aligned rows are decoded, the JS divergence of their softmaxes is taken
over the whole vocabulary, and each side's rows are reduced as ``LogitLens.run`` reduces them,
in the same chunk loop (:func:`~lens_widget.reduce.reduce_columns`, two lanes). Columns of the
longer prompt that have no partner are reduced alone (one lane). The result is a
:class:`~lens_widget.compare.Comparison` (the data; this module only computes it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch

from .compare import Align, Comparison, ComparisonError, align_columns
from .compare import compare as compare_results
from .decoders import Decoder
from .reduce import FUSED, ChunkReducer, Lane, js_divergence, reduce_columns, rows_for_budget
from .progress import progress_bar
from .result import CellStore
from .sites import select_matrix
from .sources import Intervention, Work

if TYPE_CHECKING:  # the engine delegates here; this module never imports it at run time
    from .engine import LogitLens, Plan

__all__ = ["compare_in_one_run", "js_between"]


@torch.inference_mode()
def compare_in_one_run(
    lens: "LogitLens",
    prompt_a: Any,
    prompt_b: Any = None,
    *,
    decoder_b: Decoder | None = None,
    align: Align = "last",
    sites: str | Sequence[str] | None = None,
    positions: Any = "all",
    k: int = 10,
    track: Iterable[int | str] = (),
    track_top: int = 0,
    labels: tuple[str, str] | None = None,
    progress: bool = True,
    return_activations: bool = False,
    interventions: Sequence[Intervention] = (),
) -> Comparison | tuple[Comparison, list[dict[str, torch.Tensor]]]:
    """Two sides of one engine run, compared cell by cell with **exact** Jensen–Shannon
    divergences (see :mod:`lens_widget.compare`).

    * two lenses on one prompt: ``lens.compare(prompt, decoder_b=tuned)`` (side a is this
      lens's decoder, side b ``decoder_b``);
    * two prompts: ``lens.compare(prompt_a, prompt_b)`` (one forward pass of both, in one
      batch; ``align`` pairs their columns); ``decoder_b`` may be given too.

    No full-vocabulary tensor outlives its chunk, and the two sides share ``memory_budget``
    (each side's chunks are half the size of :meth:`run`'s). ``return_activations`` also
    returns ``[acts_a, acts_b]`` (``{site: [P, d]}``, as :meth:`run`). ``interventions`` apply
    during the one forward pass (``rows=[1]``: side b only — how :func:`lens_widget.patching.patch`
    gets a clean and a patched grid and their exact JS from one pass). With a remote model
    (nnsight ``remote=``) the same chunk loop runs next to the model, inside the trace (the
    plain logit lens only), and only the cells and the JS grid come back.
    """
    if prompt_b is None and decoder_b is None:
        raise ValueError("compare needs a second prompt (prompt_b) or a second decoder (decoder_b=)")
    dec_a = lens.decoder
    dec_b = dec_a if decoder_b is None else decoder_b
    if dec_b.vocab != dec_a.vocab:
        raise ComparisonError(f"the decoders have different vocabularies ({dec_a.vocab} vs {dec_b.vocab} tokens)")
    prompts = [prompt_a] if prompt_b is None else [prompt_a, prompt_b]
    for p in prompts:
        if not isinstance(p, str) and not (isinstance(p, (list, tuple)) and all(isinstance(t, int) for t in p)):
            raise ValueError(f"compare takes one prompt per side (a string or a list of token ids), got {type(p).__name__}")
    plan = lens.plan(prompts, sites, positions, k, track, track_top)
    plan = plan.rechunked(max(1, plan.max_rows // 2))  # two sides share the memory budget
    dec_b.check_sites(plan.sites)
    ib = len(plan.positions) - 1  # side b's prompt in the batch
    lengths = [int(n) for n in plan.batch.lengths]
    ia_cols, ib_cols, how = align_columns(plan.positions[0], lengths[0], plan.positions[ib], lengths[ib], align)
    fused = lens.use_fused(plan)
    if fused:  # the JS kernel too: compiled in the background ("auto") or now ("always")
        FUSED.warm("js", dec_a.vocab, dec_a.device, block=lens.compile == "always")
        if lens.compile == "always" and FUSED.failure("js"):
            raise RuntimeError(f"compile='always': torch.compile of the JS divergence failed: {FUSED.failure('js')}")
    S, M = len(plan.sites), int(plan.tracked.numel())
    strict = lens.compile == "always"
    sides = [
        _Side(0, ChunkReducer(dec_a, plan.max_rows, plan.k, fused=fused, strict=strict), CellStore(1, S, len(plan.positions[0]), plan.k, M), int(ia_cols[0])),
        _Side(ib, ChunkReducer(dec_b, plan.max_rows, plan.k, fused=fused, strict=strict), CellStore(1, S, len(plan.positions[ib]), plan.k, M), int(ib_cols[0])),
    ]
    js = np.full((S, ia_cols.size), np.nan, dtype=np.float32)
    kept: list[dict[str, torch.Tensor]] = []
    select, _ = select_matrix(plan.positions)
    bar = progress_bar(plan.n_chunks * (2 if len(plan.positions) == 1 else 1), "Compare", "chunk", disable=not progress)
    try:
        local = lambda acts: _compare_batch(plan, sides, int(ia_cols.size), js, acts, bar, kept if return_activations else None)  # noqa: E731
        work: Any = local
        if lens.model.source.remote:  # both sides decoded and compared next to the model: only the cells and JS come back
            if return_activations:
                raise ValueError("return_activations: a remote model's activations stay where it is")
            work = _remote_work(lens, plan, sides, (int(ia_cols[0]), int(ib_cols[0]), int(ia_cols.size)), js, local, bar)
        lens.model.source.reduce(plan.batch, plan.record, select, work, interventions=interventions)
    finally:
        bar.close()
    results = []
    for side, decoder in zip(sides, (dec_a, dec_b)):
        one = plan.one_prompt(side.b)
        results.append(lens.assemble(one, side.store, decoder))
    comparison = compare_results(results[0], results[1], align=(int(plan.positions[0][ia_cols[0]]), int(plan.positions[ib][ib_cols[0]])), labels=labels, js=js)
    comparison.align = how
    comparison.meta.update({"fused_chunks": sum(s.reducer.fused_chunks for s in sides), "fused_js_chunks": sides[0].reducer.fused_js_chunks})
    return (comparison, kept) if return_activations else comparison


class _Side:
    """One side of a comparison: its prompt's row in the batch, its reducer and store, and its
    first paired column."""

    def __init__(self, b: int, reducer: ChunkReducer, store: CellStore, off: int):
        self.b, self.reducer, self.store, self.off = b, reducer, store, off

    def lane(self, plan: "Plan", acts: dict[str, torch.Tensor], lo: int) -> Lane:
        """This side's lane over its columns from ``lo`` on (lane column ``c`` is column ``lo + c``)."""
        b, put = self.b, self.store.putter(0)
        return Lane(self.reducer, lambda site, c0, c1: acts[site][b, lo + c0 : lo + c1], plan.next_ids(b)[lo:],
                    lambda s0, s1, c0, c1, cells: put(s0, s1, lo + c0, lo + c1, cells))


def _remote_work(lens: "LogitLens", plan: "Plan", sides: list[_Side], pair: tuple[int, int, int], js: np.ndarray, local: Any, bar: Any) -> Work:
    """The comparison as the in-trace ``compare`` task (:func:`lens_widget.sources.intrace.compare_cells`:
    the same chunk loop, lanes and JS next to a remote model); its cells go into the sides' stores."""
    decoders = {"a": sides[0].reducer.decoder, "b": sides[1].reducer.decoder}
    idx = list(range(len(plan.positions)))
    P = max(len(p) for p in plan.positions)
    job = lens.lens_job(plan, decoders, P, idx, plan.batch)  # type: ignore[arg-type]
    job["pair"] = {"a": sides[0].b, "b": sides[1].b, "off_a": pair[0], "off_b": pair[1], "n": pair[2]}

    def accept(res: dict[str, Any]) -> None:
        for side in sides:
            for key, arr in side.store.a.items():
                arr[0] = res[key][side.b, :, : arr.shape[2]].numpy().astype(arr.dtype)
        js[:] = res["js"].numpy()
        bar.update(bar.total - bar.n)

    return Work(local, "compare", job, accept)


def _compare_batch(plan: "Plan", sides: list[_Side], n: int, js: np.ndarray, acts: dict[str, torch.Tensor], bar: Any,
                   kept: list[dict[str, torch.Tensor]] | None) -> None:
    """Both sides of a comparison: the paired columns chunk by chunk with JS, then each side's
    unpaired columns alone."""
    a, b = sides

    def between(s0: int, s1: int, c0: int, c1: int, z: list[torch.Tensor]) -> None:
        js[s0:s1, c0:c1] = a.reducer.js(z[0], z[1]).view(c1 - c0, s1 - s0).T.cpu().numpy()

    with a.reducer.decoder.loaded(), b.reducer.decoder.loaded():  # type: ignore[attr-defined]
        lanes = [side.lane(plan, acts, side.off) for side in sides]
        reduce_columns(lanes, plan.sites, plan.final_site, n, plan.block, plan.group, plan.tracked, between=between, done=bar.update)
        for side in sides:  # columns without a partner
            P = len(plan.positions[side.b])
            for lo, hi in ((0, side.off), (side.off + n, P)):
                if hi > lo:
                    reduce_columns([side.lane(plan, acts, lo)], plan.sites, plan.final_site, hi - lo, plan.block, plan.group, plan.tracked,
                                   done=bar.update)
    if kept is not None:
        for side in sides:
            kept.append({site: acts[site][side.b, : len(plan.positions[side.b])] for site in plan.record})


@torch.inference_mode()
def js_between(decoder_a: Decoder, memory_budget: int, acts_a: dict[str, torch.Tensor], acts_b: dict[str, torch.Tensor],
               sites: Sequence[str], cols_a: Sequence[int], cols_b: Sequence[int], decoder_b: Decoder | None = None) -> np.ndarray:
    """Exact Jensen–Shannon divergences ``[S, P]`` (nats, full vocabulary) between recorded
    activations: column ``cols_a[j]`` of ``acts_a`` (``{site: [P_a, d]}``, as ``run`` returns
    with ``return_activations``) decoded by ``decoder_a``, against column ``cols_b[j]`` of
    ``acts_b`` decoded by ``decoder_b`` (default: ``decoder_a``). Chunked like ``run`` (each
    side half the memory budget); no forward pass."""
    dec_b = decoder_a if decoder_b is None else decoder_b
    ia, ib = torch.as_tensor(list(cols_a), dtype=torch.long), torch.as_tensor(list(cols_b), dtype=torch.long)
    if ia.numel() != ib.numel():
        raise ValueError("cols_a and cols_b must pair up (the same length)")
    step = max(1, rows_for_budget(decoder_a.vocab, memory_budget) // 2)
    out = np.full((len(sites), ia.numel()), np.nan, dtype=np.float32)
    with decoder_a.loaded(), dec_b.loaded():
        for s, site in enumerate(sites):
            ha, hb = acts_a[site], acts_b[site]
            for j0 in range(0, ia.numel(), step):
                ja, jb = ia[j0 : j0 + step], ib[j0 : j0 + step]
                za = decoder_a.logits(ha[ja.to(ha.device)], site)
                zb = dec_b.logits(hb[jb.to(hb.device)], site)
                out[s, j0 : j0 + ja.numel()] = js_divergence(za, zb).cpu().numpy()
    return out
