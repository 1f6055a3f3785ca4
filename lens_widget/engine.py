"""`LogitLens`, the runner: one forward pass per batch through the model's activation source,
each site's rows through one or several decoders (the same recording), reductions per cell, a
:class:`LensResult` per decoder at the end.

It plans the chunks and stores the cells; the reducer (:mod:`lens_widget.reduce`) owns the
decoding of every chunk, in the one chunk loop :func:`~lens_widget.reduce.reduce_columns`. The
tutorial's ``compute`` (:mod:`lens_widget.tutorial`), per-cell queries (:mod:`lens_widget.cells`),
the one-run compare (:mod:`lens_widget.compare_run`) and generation (:mod:`lens_widget.generation`)
live in their own modules; ``LogitLens`` keeps a thin method for each.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from . import cells
from .certified import Certify, check_precision, resolve_precision
from .attribution import attribute
from .cache import ActivationCache
from .compare import Align
from .compare_run import compare_in_one_run, js_between
from .decoders import Decoder
from .generation import generate
from .patching import Patch, Sweep, patch, patch_sweep
from .hooked import HookedModel, as_hooked_model
from .inputs import Batch
from .progress import Progress, ProgressBar, progress_bar
from .reduce import DEFAULT_MEMORY_BUDGET, FUSE_MIN_WORK, FUSED, ChunkReducer, Lane, reduce_columns, rows_for_budget
from .result import CellStore, LensResult
from .sites import next_token_ids, resolve_positions, select_matrix
from .sources import Intervention, RemoteActivations, Work
from .tutorial import COMPUTE_METRICS, compute

__all__ = ["LogitLens", "DEFAULT_MEMORY_BUDGET", "default_memory_budget", "COMPUTE_METRICS", "Plan"]

#: On a GPU: this share of the device's free memory, at most ``GPU_BUDGET_CAP`` bytes (small
#: chunks starve a GPU: an 8B-shaped grid on an H200 took 4.56 s with 4 GB, 3.60 s with 16 GB).
GPU_BUDGET_SHARE = 0.25
GPU_BUDGET_CAP = 16 * 2**30


def default_memory_budget(device: torch.device) -> int:
    """The reducer's scratch budget for ``device``: :data:`DEFAULT_MEMORY_BUDGET` on the CPU; on
    CUDA a quarter of the free memory, capped at :data:`GPU_BUDGET_CAP` (never below the CPU's)."""
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(max(DEFAULT_MEMORY_BUDGET, min(GPU_BUDGET_CAP, GPU_BUDGET_SHARE * free)))
    return DEFAULT_MEMORY_BUDGET


@dataclass
class Plan:
    """What one ``run`` computes and how it is chunked."""

    batch: Batch
    sites: list[str]
    record: list[str]
    final_site: str
    positions: list[list[int]]
    tracked: torch.Tensor
    k: int
    max_rows: int
    group: int  # sites per chunk
    block: int  # positions per chunk

    @property
    def n_chunks(self) -> int:
        S = len(self.sites)
        return sum(math.ceil(len(p) / self.block) * math.ceil(S / self.group) for p in self.positions)

    def next_ids(self, b: int, batch: Batch | None = None, row: int | None = None) -> torch.Tensor:
        """The token after each column of prompt ``b`` (``-1``: none); ``batch``/``row``: where
        that prompt sits in a sub-batch (default: the plan's own batch, row ``b``)."""
        batch, row = (self.batch, b) if batch is None else (batch, row)
        return next_token_ids(batch.input_ids[row, : int(batch.lengths[row])], self.positions[b])

    def one_prompt(self, b: int) -> "Plan":
        """The plan of prompt ``b`` alone (what its result is assembled from)."""
        return Plan(self.batch.subset([b]), self.sites, self.record, self.final_site, [self.positions[b]], self.tracked, self.k,
                    self.max_rows, self.group, self.block)

    def rechunked(self, max_rows: int) -> "Plan":
        """The same plan with chunks of at most ``max_rows`` rows."""
        group = min(len(self.sites), max_rows)
        return Plan(self.batch, self.sites, self.record, self.final_site, self.positions, self.tracked, self.k, max_rows, group,
                    max(1, max_rows // group))


class LogitLens:
    """The lens over a model: the tutorial's ``compute`` and the grid's ``run``.

    ``model`` is a :class:`HookedModel` or a ``transformers`` causal LM (with ``tokenizer=``,
    or the tokenizer saved beside it); ``decoder`` a :class:`~lens_widget.decoders.Decoder`
    (default: the plain logit lens; e.g. a :class:`~lens_widget.tuned_lens.TunedLens`).
    """

    def __init__(
        self,
        model: Any,
        memory_budget: int | None = None,
        compile: bool | str = "auto",
        *,
        decoder: Decoder | None = None,
        tokenizer: Any = None,
        precision: str | Certify = "auto",
    ):
        """``memory_budget``: bytes of scratch for logits chunks (``None``: 512 MB on the CPU, a
        quarter of a GPU's free memory up to 16 GB; :func:`default_memory_budget`). ``compile``: ``"auto"`` (or
        ``True``) uses the fused compiled reductions for large runs once they are compiled (in
        the background, so no grid waits for the compiler); ``"always"`` compiles before the
        first run and fuses every run, raising if compiling fails (tests, benchmarks);
        ``"never"`` (or ``False``) stays eager. ``LENS_WIDGET_COMPILE=0`` turns compiling off
        everywhere.

        ``precision``: how a half-precision unembedding is decoded (:func:`~lens_widget.certified.resolve_precision`).
        ``"float32"``: weights upcast block by block, float32 products: the reference.
        ``"auto"`` (default): the fastest path whose ranks, top-k and target logits are identical
        to the float32 path's, and whose entropy, KL and log-sum-exp are within 1e-4 of it:
        today the float32 path (see :func:`~lens_widget.certified.resolve_precision` for why).
        ``"certified"``: the certified unembedding wherever the weights are half precision
        (bf16/fp16 tensor cores with float32 out on CUDA, an emulated product elsewhere; a
        proven error bound, exact recounts of what the bound cannot decide, rows whose sums
        the bound cannot hold recomputed; :mod:`lens_widget.certified`): the same grid. A
        float32 model always takes the float32 path. Cell detail, trajectories, the final layer's
        distribution and compare's Jensen–Shannon divergences read every logit and always take
        the float32 path."""
        self.model: HookedModel = as_hooked_model(model, tokenizer)
        self.decoder = decoder if decoder is not None else Decoder(self.model)
        self._check_decoder(self.decoder)
        self.memory_budget = int(memory_budget) if memory_budget is not None else default_memory_budget(self.decoder.device)
        modes = {True: "auto", False: "never", "auto": "auto", "always": "always", "never": "never"}
        if compile not in modes:
            raise ValueError(f"compile must be 'auto', 'always' or 'never', got {compile!r}")
        self.compile: str = modes[compile]
        check_precision(precision)
        self.precision = precision
        #: what the certified path did in the last run (``None``: it took the float32 path)
        self.last_certified: dict[str, Any] | None = None

    def certify_for(self, decoder: Decoder) -> Certify | None:
        """The certified unembedding ``decoder``'s reducers use under :attr:`precision`, or ``None``
        (the float32 path)."""
        return resolve_precision(self.precision, decoder.head.weight.dtype, decoder.device)

    def _check_decoder(self, decoder: Decoder) -> None:
        if decoder.model is not self.model and decoder.model.model is not self.model.model:
            raise ValueError("the decoder was built for another model")

    @classmethod
    def from_model(cls, model: Any, **kwargs: Any) -> "LogitLens":
        return cls(model, **kwargs)

    @classmethod
    def from_model_name(cls, name_or_path: str, **hf_kwargs: Any) -> "LogitLens":
        """Load a model (see :meth:`HookedModel.from_pretrained`) and build its lens."""
        return cls(HookedModel.from_pretrained(name_or_path, **hf_kwargs))

    def with_decoder(self, decoder: Decoder | None) -> "LogitLens":
        """The same lens settings over another decoder (``None``: the logit lens)."""
        return LogitLens(self.model, self.memory_budget, self.compile, decoder=decoder, precision=self.precision)

    def token_ids(self, tokens: Iterable[int | str]) -> torch.Tensor:
        """Ids of tokens given as ids or single-token strings."""
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
        return compute(self.decoder, self.model.tokens, activations, target_key, apply_norm, apply_softmax, token_directions, metric,
                       progress, self.memory_budget)

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
        progress: bool | Callable[[Progress], Any] = True,
        return_activations: bool = False,
        stop: Any = None,
        decoders: Mapping[str, Decoder | None] | None = None,
        interventions: Sequence[Intervention] = (),
    ) -> Any:
        """The lens of every (site, position) cell of one or more prompts, reduced.

        Args:
            prompts: one prompt or a list (different lengths are fine), or token ids / a
                tokenizer output (see :meth:`HookedModel.as_batch`).
            sites: ``None``/``"resid"`` (embeddings + every block output), ``"all"``, or names.
            positions: see :func:`~lens_widget.sites.resolve_positions`.
            k: top tokens kept per cell.
            track: token ids or single-token strings whose probability, logit and exact rank
                are kept at every cell.
            track_top: also track the final layer's top-N tokens at each prompt's last position.
            batch_size: prompts per forward pass.
            return_activations: also return, per prompt, ``{site: [P, d]}`` on the decoder's
                device (what the widget keeps to answer clicks exactly).
            progress: a tqdm bar (True), none (False), or a callable receiving a
                :class:`~lens_widget.progress.Progress` (chunks done of total) after each chunk.
            stop: a ``threading.Event`` or a callable; when set, the run raises
                :class:`~lens_widget.progress.Stopped` after the chunk in progress.
            decoders: several lenses from **one** recorded pass: ``{label: decoder}`` (``None``:
                the logit lens); the run then returns ``{label: LensResult}`` (with
                ``return_activations``: ``({label: LensResult}, activations)``). The model runs
                once per batch whatever the number of lenses.
            interventions: :class:`~lens_widget.sources.Intervention` s applied during the
                forward (a site's value replaced or added to at some positions): the grid of the
                intervened model.

        Returns:
            a :class:`LensResult` (a dict of them with ``decoders=``), and the activations with
            ``return_activations``.
        """
        lenses = self._lenses(decoders)
        plan = self.plan(prompts, sites, positions, k, track, track_top, lanes=len(lenses))
        for decoder in lenses.values():
            decoder.check_sites(plan.sites)
        fused = self.use_fused(plan)
        reducers: dict[str, ChunkReducer] = {}
        for label, decoder in lenses.items():  # one set of [rows, V] buffers, shared by every lens
            reducers[label] = ChunkReducer(decoder, plan.max_rows, plan.k, fused=fused, strict=self.compile == "always",
                                           share=next(iter(reducers.values()), None), certify=self.certify_for(decoder))
        P = max(len(p) for p in plan.positions)
        stores = {label: CellStore(len(plan.positions), len(plan.sites), P, plan.k, int(plan.tracked.numel())) for label in lenses}
        kept: list[Any] = []
        report = progress if callable(progress) else None
        total = plan.n_chunks * len(lenses)
        desc = next(iter(lenses.values())).name.capitalize() if len(lenses) == 1 else f"{len(lenses)} lenses"
        bar = ProgressBar(progress_bar(total, desc, "chunk", disable=not progress or report is not None), total, report, stop)
        try:
            for idx in _batches(len(plan.positions), batch_size):
                batch = plan.batch.subset(idx)
                select, _ = select_matrix([plan.positions[i] for i in idx])
                keep = kept if return_activations else None
                local = lambda acts, idx=idx, batch=batch: self._reduce_batch(plan, reducers, stores, idx, batch, acts, bar, keep)  # noqa: E731
                if self.model.source.remote:
                    # the source runs the lens next to the model; only the cells come back
                    accept = lambda res, idx=idx: self._accept(plan, stores, idx, res, bar)  # noqa: E731
                    work = Work(local, "lens", self.lens_job(plan, lenses, P, idx, batch), accept)
                    self.model.source.reduce(batch, plan.record, select, work, interventions=interventions)
                    if return_activations:
                        kept.extend(RemoteActivations(batch.subset([j]), plan.record, plan.positions[b]) for j, b in enumerate(idx))
                else:
                    self.model.source.reduce(batch, plan.record, select, local, interventions=interventions)
        finally:
            bar.close()
        self.last_certified = {label: r.tally.report() for label, r in reducers.items() if r.certify is not None} or None
        results = {label: self.assemble(plan, stores[label], decoder) for label, decoder in lenses.items()}
        out: Any = results if decoders is not None else results[next(iter(results))]
        return (out, kept) if return_activations else out

    def _lenses(self, decoders: Mapping[str, Decoder | None] | None) -> dict[str, Decoder]:
        """``{label: decoder}`` of a run (``None`` entries: this lens's logit lens)."""
        if decoders is None:
            return {self.decoder.name: self.decoder}
        if not isinstance(decoders, Mapping) or not decoders:
            raise ValueError("decoders must be a non-empty dict {label: decoder or None}")
        out: dict[str, Decoder] = {}
        base: Decoder | None = None
        for label, decoder in decoders.items():
            if decoder is None:
                if base is None:
                    base = self.decoder if type(self.decoder) is Decoder else Decoder(self.model)
                decoder = base
            if not isinstance(decoder, Decoder):
                raise TypeError(f"decoders[{label!r}] must be a lens_widget Decoder or None (the logit lens), got {type(decoder).__name__}")
            self._check_decoder(decoder)
            out[str(label)] = decoder
        return out

    def generate(self, prompt: Any, max_new_tokens: int = 20, **options: Any) -> Any:
        """Let the model write up to ``max_new_tokens`` tokens after ``prompt``, with the lens on
        every token: a :class:`LensResult` over prompt + generated tokens (``generated_from``
        marks where the prompt ends), equal to :meth:`run` on those ids. The options (sampling,
        sites, tracking, callbacks, progress, stop) are :func:`lens_widget.generation.generate`'s."""
        return generate(self, prompt, max_new_tokens, **options)

    def plan(self, prompts: Any, sites: Any, positions: Any, k: int, track: Iterable[int | str], track_top: int, lanes: int = 1) -> Plan:
        """What a run over ``prompts`` computes and its chunks (``lanes`` decoders share them)."""
        hm = self.model
        site_names = hm.site_names(sites)
        self.decoder.check_sites(site_names)
        if int(k) < 1:
            raise ValueError("k must be at least 1")
        batch = hm.as_batch(prompts)
        pos_lists = [resolve_positions(positions, int(n)) for n in batch.lengths]
        tracked = self.token_ids(track)
        if track_top:
            tracked = torch.cat([tracked, self.final_top(batch, int(track_top))])
        tracked = torch.tensor(list(dict.fromkeys(tracked.tolist())), dtype=torch.long)
        max_rows = rows_for_budget(self.decoder.vocab, self.memory_budget, lanes)
        group = min(len(site_names), max_rows)
        return Plan(
            batch=batch,
            sites=site_names,
            record=list(dict.fromkeys(site_names + [hm.final_site])),
            final_site=hm.final_site,
            positions=pos_lists,
            tracked=tracked,
            k=min(int(k), self.decoder.vocab),
            max_rows=max_rows,
            group=group,
            block=max(1, max_rows // group),
        )

    def use_fused(self, plan: Plan) -> bool:
        """Whether a run of ``plan`` uses the compiled reductions. Large runs use the compiled reductions once compiled (started now, in the background);
        small runs stay eager, where compiling would cost more than it saves."""
        if self.compile == "never" or not FUSED.enabled():
            return False
        kernel = ChunkReducer.kernel_for(self.decoder.vocab, plan.k)
        if self.compile == "always":
            FUSED.warm(kernel, self.decoder.vocab, self.decoder.device, block=True)
            failure = FUSED.failure(kernel)
            if failure:
                raise RuntimeError(f"compile='always': torch.compile of the reductions failed: {failure}")
            return True
        work = len(plan.sites) * sum(len(p) for p in plan.positions) * self.decoder.vocab
        if work < FUSE_MIN_WORK:
            return False
        FUSED.warm(kernel, self.decoder.vocab, self.decoder.device)
        return True

    @torch.inference_mode()
    def _reduce_batch(self, plan: Plan, reducers: dict[str, ChunkReducer], stores: dict[str, CellStore], idx: list[int], batch: Batch,
                      acts: dict[str, torch.Tensor], bar: Any, kept: list[dict[str, torch.Tensor]] | None) -> None:
        """Every chunk of one forward batch, for every lens: one lane per lens over each prompt."""
        with contextlib.ExitStack() as held:
            for reducer in reducers.values():
                held.enter_context(reducer.decoder.loaded())  # type: ignore[attr-defined]
            for j, b in enumerate(idx):
                nxt = plan.next_ids(b, batch, j)
                lanes = [
                    Lane(reducer, lambda site, c0, c1, j=j: acts[site][j, c0:c1], nxt, stores[label].putter(b))
                    for label, reducer in reducers.items()
                ]
                reduce_columns(lanes, plan.sites, plan.final_site, len(plan.positions[b]), plan.block, plan.group, plan.tracked, done=bar.update)
                if kept is not None:
                    kept.append({site: acts[site][j, : len(plan.positions[b])] for site in plan.record})

    # -- the lens next to a remote model ------------------------------------------------------
    def lens_job(self, plan: Plan, lenses: dict[str, Decoder], P: int, idx: list[int], batch: Batch) -> dict[str, Any]:
        """Plain data for :func:`lens_widget.sources.intrace.lens_cells`: the same chunks as
        :meth:`_reduce_batch`."""
        for decoder in lenses.values():
            cells.check_portable(decoder)
        maps = [decoder.in_trace_maps(plan.sites) for decoder in lenses.values()]
        if any(m for m in maps) and len(lenses) > 1:
            raise ValueError(
                f"with a remote source one trace decodes one lens, and {', '.join(map(repr, lenses))} differ: run the "
                "Jacobian lens on its own (decoder=...) next to a remote model"
            )
        next_ids = torch.full((len(idx), P), -1, dtype=torch.long)
        for j, b in enumerate(idx):
            next_ids[j, : len(plan.positions[b])] = plan.next_ids(b, batch, j)
        return {
            "sites": plan.sites,
            "final_site": plan.final_site,
            "next_ids": next_ids,
            "n_pos": [len(plan.positions[b]) for b in idx],
            "P": P,
            "tracked": plan.tracked,
            "k": plan.k,
            "block": plan.block,
            "group": plan.group,
            "maps": maps[0],  # a Jacobian lens's J per site, by value (cells.remote_detail too)
            # resolved next to the model (its device and dtype): a Certify object cannot travel
            "precision": self.precision if isinstance(self.precision, str) else "certified",
        }

    def _accept(self, plan: Plan, stores: dict[str, CellStore], idx: list[int], res: dict[str, Any], bar: Any) -> None:
        """Cells reduced next to the model, into the result store (of every lens: several lenses
        travel together only when all are the plain logit lens, :meth:`_lens_job`)."""
        for store in stores.values():
            for key, arr in store.a.items():
                arr[idx] = res[key].numpy().astype(arr.dtype)
        S = len(plan.sites)
        bar.update(len(stores) * sum(math.ceil(len(plan.positions[b]) / plan.block) * math.ceil(S / plan.group) for b in idx))

    def assemble(self, plan: Plan, store: CellStore, decoder: Decoder | None = None) -> LensResult:
        """The result's arrays: ids and positions padded with -1, KL and entropy clamped at 0
        against rounding, KL exactly 0 at the final site."""
        decoder = self.decoder if decoder is None else decoder
        batch, B = plan.batch, len(plan.positions)
        input_ids = np.where(batch.attention_mask.numpy().astype(bool), batch.input_ids.numpy(), -1).astype(np.int64)
        positions_np = np.full((B, store.P), -1, dtype=np.int64)
        next_np = np.full((B, store.P), -1, dtype=np.int64)
        for b, pl in enumerate(plan.positions):
            positions_np[b, : len(pl)] = pl
            next_np[b, : len(pl)] = plan.next_ids(b).numpy()
        arrays = store.finish(plan.sites.index(plan.final_site) if plan.final_site in plan.sites else None)
        used = set(input_ids[input_ids >= 0].tolist()) | set(np.unique(arrays["topk_ids"]).tolist()) | set(plan.tracked.tolist())
        return LensResult(
            prompts=list(batch.prompts),
            input_ids=input_ids,
            lengths=batch.lengths.numpy().astype(np.int64),
            sites=plan.sites,
            positions=positions_np,
            next_ids=next_np,
            tracked_ids=plan.tracked.numpy().astype(np.int64),
            token_strings=self.model.tokens.table(used),
            model_name=self.model.name,
            lens_name=decoder.name,
            vocab_size=int(decoder.vocab),
            **arrays,
        )

    # -- one cell, one column, exactly (lens_widget.cells) -------------------------------------
    def final_top(self, batch: Any, n: int) -> torch.Tensor:
        """Ids of the final layer's top-``n`` tokens at each prompt's last position, ``[B * n]``."""
        return cells.final_top(self.model, self.decoder, batch, n)

    def cell_detail(self, h: Any, site: str, k: int = 50, token_ids: Sequence[int] = ()) -> dict[str, Any]:
        """Full-vocabulary detail of one residual vector (see :func:`lens_widget.cells.cell_detail`)."""
        return cells.cell_detail(self.model, self.decoder, h, site, k, token_ids)

    def trajectory(self, column: dict[str, Any], sites: Sequence[str], token_ids: Sequence[int]) -> dict[str, np.ndarray]:
        """Tokens along the layers of one column (see :func:`lens_widget.cells.trajectory`)."""
        return cells.trajectory(self.model, self.decoder, column, sites, token_ids)

    def check_lens(self, prompt: str = "The capital of France is") -> float:
        """max |lens(last block) - model logits| over the prompt's positions (float32 ≈ 1e-5)."""
        return cells.check_lens(self.model, self.decoder, prompt)

    # -- two sides in one run (lens_widget.compare_run) ----------------------------------------
    def compare(self, prompt_a: Any, prompt_b: Any = None, *, decoder_b: Decoder | None = None, align: Align = "last", **options: Any) -> Any:
        """Two sides of one engine run compared cell by cell with **exact** Jensen–Shannon
        divergences: two lenses on one prompt (``decoder_b=``), two prompts, or both (see
        :func:`lens_widget.compare_run.compare_in_one_run` for the options)."""
        return compare_in_one_run(self, prompt_a, prompt_b, decoder_b=decoder_b, align=align, **options)

    def js_between(self, acts_a: dict[str, torch.Tensor], acts_b: dict[str, torch.Tensor], sites: Sequence[str],
                   cols_a: Sequence[int], cols_b: Sequence[int], decoder_b: Decoder | None = None) -> np.ndarray:
        """Exact Jensen–Shannon divergences ``[S, P]`` between recorded activations (see
        :func:`lens_widget.compare_run.js_between`)."""
        return js_between(self.decoder, self.memory_budget, acts_a, acts_b, sites, cols_a, cols_b, decoder_b)

    # -- attribution (lens_widget.attribution) -------------------------------------------------
    def attribute(self, prompt: Any, site: Any, position: Any, token: Any = None) -> Any:
        """Exact attribution of one cell to the embedding, each attention head, each attention
        bias and each MLP, through this lens with the final norm's scale frozen: a DataFrame
        whose ``contribution`` column sums to the cell's logit (or logit difference for a pair
        ``token=(a, b)``); remainders are rows of their own (see
        :func:`lens_widget.attribution.attribute`)."""
        return attribute(self.model, self.decoder, prompt, site, position, token)

    # -- interventions (lens_widget.patching) ---------------------------------------------------
    def patch(self, source_prompt: Any, target_prompt: Any, site: str | int, position: int, target_position: int | None = None,
              **options: Any) -> Patch:
        """The target's grid with the residual at (``site``, ``target_position``) replaced by the
        source's at (``site``, ``position``), the clean grid and their exact comparison (see
        :func:`lens_widget.patching.patch`: also ``value=``, ``ablation="zero" | "mean"``)."""
        return patch(self, source_prompt, target_prompt, site, position, target_position, **options)

    def patch_sweep(self, clean: Any, corrupt: Any, tokens: tuple[int | str, int | str], **options: Any) -> Sweep:
        """Activation patching over the residual stream: the recovery of ``logit(a) − logit(b)``
        for each (site, position) patched from ``clean`` into ``corrupt`` (see
        :func:`lens_widget.patching.patch_sweep`)."""
        return patch_sweep(self, clean, corrupt, tokens, **options)


def _batches(n: int, size: int) -> list[list[int]]:
    step = max(1, int(size))
    return [list(range(s, min(n, s + step))) for s in range(0, n, step)]
