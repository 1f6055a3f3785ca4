"""`LogitLens`, the runner: one forward pass per batch through the model's activation source,
each site's rows through the decoder, reductions per cell, a :class:`LensResult` at the end.

It also answers what the widget asks of one cell or one column (full-vocabulary detail, exact
ranks along the layers) and checks itself (the last block decodes to the model's logits).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .cache import ActivationCache
from .compare import Align, Comparison, ComparisonError, align_columns
from .compare import compare as compare_results
from .decoders import Decoder
from .hooked import HookedModel, as_hooked_model
from .inputs import Batch
from .progress import Progress, ProgressBar
from .reduce import FUSE_MIN_WORK, FUSED, ChunkReducer, js_divergence, rows_for_budget, token_stats
from .result import CellStore, LensResult
from .sites import next_token_ids, resolve_positions, select_matrix
from .sources import ActivationRef, RemoteActivations, Work

__all__ = ["LogitLens", "DEFAULT_MEMORY_BUDGET", "COMPUTE_METRICS"]

#: Bytes of scratch memory the reducer may use for its logits buffers.
DEFAULT_MEMORY_BUDGET = 512 * 2**20
#: ``compute``'s metrics (the reference tutorial's names).
COMPUTE_METRICS = ("logit_lens", "logit_diff")


@dataclass
class _Plan:
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


class LogitLens:
    """The lens over a model: the tutorial's ``compute`` and the grid's ``run``.

    ``model`` is a :class:`HookedModel` or a ``transformers`` causal LM (with ``tokenizer=``,
    or the tokenizer saved beside it); ``decoder`` a :class:`~lens_widget.decoders.Decoder`
    (default: the plain logit lens; e.g. a :class:`~lens_widget.tuned_lens.TunedLens`).
    """

    def __init__(
        self,
        model: Any,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        compile: bool | str = "auto",
        *,
        decoder: Decoder | None = None,
        tokenizer: Any = None,
    ):
        """``memory_budget``: bytes of scratch for logits chunks. ``compile``: ``"auto"`` (or
        ``True``) uses the fused compiled reductions for large runs once they are compiled (in
        the background, so no grid waits for the compiler); ``"always"`` compiles before the
        first run and fuses every run, raising if compiling fails (tests, benchmarks);
        ``"never"`` (or ``False``) stays eager. ``LENS_WIDGET_COMPILE=0`` turns compiling off
        everywhere."""
        self.model: HookedModel = as_hooked_model(model, tokenizer)
        self.decoder = decoder if decoder is not None else Decoder(self.model)
        if self.decoder.model is not self.model and self.decoder.model.model is not self.model.model:
            raise ValueError("the decoder was built for another model")
        self.memory_budget = int(memory_budget)
        modes = {True: "auto", False: "never", "auto": "auto", "always": "always", "never": "never"}
        if compile not in modes:
            raise ValueError(f"compile must be 'auto', 'always' or 'never', got {compile!r}")
        self.compile: str = modes[compile]

    @classmethod
    def from_model(cls, model: Any, **kwargs: Any) -> "LogitLens":
        return cls(model, **kwargs)

    @classmethod
    def from_model_name(cls, name_or_path: str, **hf_kwargs: Any) -> "LogitLens":
        """Load a model (see :meth:`HookedModel.from_pretrained`) and build its lens."""
        return cls(HookedModel.from_pretrained(name_or_path, **hf_kwargs))

    def with_decoder(self, decoder: Decoder | None) -> "LogitLens":
        """The same lens settings over another decoder (``None``: the logit lens)."""
        return LogitLens(self.model, self.memory_budget, self.compile, decoder=decoder)

    def token_ids(self, tokens: Iterable[int | str]) -> torch.Tensor:
        """Ids of tokens given as ids or single-token strings."""
        return torch.tensor([self.model.tokens.token_id(t) for t in tokens], dtype=torch.long)

    # -- the reference tutorial's call -----------------------------------------------------
    @torch.inference_mode()
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
        if metric not in COMPUTE_METRICS:
            raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(COMPUTE_METRICS)} (or None)")
        if metric == "logit_diff" and not token_directions:
            raise ValueError("metric='logit_diff' needs token_directions=[(token_a, token_b), ...]")
        keys = _expand_key(activations, target_key)
        self.decoder.check_sites([k for k in keys if k not in ("logits", "last_layernorm")])
        pairs = self._pairs(token_directions) if metric == "logit_diff" else None
        out: dict[str, torch.Tensor] = {}
        with self.decoder.loaded():
            for key in tqdm(keys, desc=f"Computing Logit Lens of {target_key}", disable=not progress or len(keys) < 2):
                h = activations[key]
                if pairs is not None:
                    z = self.decoder.logits_of(h, pairs.reshape(-1), key, apply_norm).view(*h.shape[:-1], -1, 2)
                    value = z[..., 0] - z[..., 1]
                    value, name = (value[..., 0] if pairs.shape[0] == 1 else value), f"logit_diff_{key}"
                else:
                    value, name = self._full(h, key, apply_norm, apply_softmax), f"logit_lens_{key}"
                out[name] = _mask_padding(value, getattr(activations, "positions", None), h)
        return out

    def _full(self, h: torch.Tensor, site: str, apply_norm: bool, apply_softmax: bool) -> torch.Tensor:
        flat = h.reshape(-1, h.shape[-1])
        out = torch.empty(flat.shape[0], self.decoder.vocab, dtype=torch.float32, device=self.decoder.device)
        step = rows_for_budget(self.decoder.vocab, self.memory_budget)
        for i in range(0, flat.shape[0], step):
            z = self.decoder.logits(flat[i : i + step], site, apply_norm)
            out[i : i + step] = torch.softmax(z, -1) if apply_softmax else z
        return out.view(*h.shape[:-1], -1)

    def _pairs(self, directions: Sequence[Any]) -> torch.Tensor:
        pairs = []
        for d in directions:
            if not isinstance(d, (tuple, list)) or len(d) != 2:
                raise ValueError(f"each token direction must be a pair (token_a, token_b), got {d!r}")
            pairs.append([self.model.tokens.token_id(d[0]), self.model.tokens.token_id(d[1])])
        return torch.tensor(pairs, dtype=torch.long)

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
    ) -> LensResult | tuple[LensResult, list[dict[str, torch.Tensor]]]:
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
        """
        plan = self._plan(prompts, sites, positions, k, track, track_top)
        reducer = ChunkReducer(self.decoder, plan.max_rows, plan.k, fused=self._use_fused(plan), strict=self.compile == "always")
        store = CellStore(len(plan.positions), len(plan.sites), max(len(p) for p in plan.positions), plan.k, int(plan.tracked.numel()))
        kept: list[dict[str, torch.Tensor]] = []
        report = progress if callable(progress) else None
        tq = tqdm(total=plan.n_chunks, desc=f"{self.decoder.name.capitalize()}", unit="chunk", disable=not progress or report is not None)
        bar = ProgressBar(tq, plan.n_chunks, report, stop)
        try:
            for idx in _batches(len(plan.positions), batch_size):
                batch = plan.batch.subset(idx)
                select, _ = select_matrix([plan.positions[i] for i in idx])
                local = lambda acts, idx=idx, batch=batch: self._reduce_batch(plan, reducer, store, idx, batch, acts, bar, kept if return_activations else None)  # noqa: E731
                if self.model.source.remote:
                    # the source runs the lens next to the model; only the cells come back
                    accept = lambda res, idx=idx: self._accept(plan, store, idx, res, bar)  # noqa: E731
                    work = Work(local, "lens", self._lens_job(plan, store, idx, batch), accept)
                    self.model.source.reduce(batch, plan.record, select, work)
                    if return_activations:
                        kept.extend(RemoteActivations(batch.subset([j]), plan.record, plan.positions[b]) for j, b in enumerate(idx))
                else:
                    self.model.source.reduce(batch, plan.record, select, local)
        finally:
            bar.close()
        result = self._assemble(plan, store)
        return (result, kept) if return_activations else result

    def generate(
        self,
        prompt: Any,
        max_new_tokens: int = 20,
        *,
        do_sample: bool = False,
        seed: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_token_id: Any = "auto",
        sites: str | Sequence[str] | None = None,
        k: int = 10,
        track: Iterable[int | str] = (),
        callback: Callable[[Any], Any] | None = None,
        progress: bool | Callable[[Any], Any] = True,
        stop: Any = None,
        return_activations: bool = False,
    ) -> LensResult | tuple[LensResult, dict[str, torch.Tensor]]:
        """Let the model write up to ``max_new_tokens`` tokens after ``prompt``, with the lens on
        every token: a :class:`LensResult` over prompt + generated tokens (``generated_from``
        marks where the prompt ends), equal to :meth:`run` on those ids.

        One prefill forward with the KV cache, then one cached step and one column of
        reductions per new token (see :mod:`lens_widget.generation`).

        Args:
            prompt: text, token ids, or a chat (a list of ``{"role", "content"}`` messages, run
                through the chat template with the generation prompt).
            do_sample: False: greedy (as ``transformers``' ``generate(do_sample=False)``); True:
                sample from ``softmax(logits / temperature)`` restricted by ``top_k`` / ``top_p``,
                reproducibly with ``seed``.
            eos_token_id: stop after this token (or any of a list); ``"auto"``: the model's
                generation config (or tokenizer); ``None``: never.
            sites, k, track: as in :meth:`run`.
            callback: called with each new :class:`~lens_widget.generation.GeneratedColumn` as it
                is final (its next token already chosen).
            progress: a tqdm bar (True), none (False), or a callable receiving
                :class:`~lens_widget.generation.GenerationProgress` after each token.
            stop: a ``threading.Event`` (or a callable returning True) that ends the loop before
                the next step; the result then covers the tokens read so far.
            return_activations: also return ``{site: [T, d]}`` of every position.
        """
        from .generation import generate

        return generate(
            self, prompt, max_new_tokens, do_sample=do_sample, seed=seed, temperature=temperature, top_k=top_k, top_p=top_p,
            eos_token_id=eos_token_id, sites=sites, k=k, track=track, callback=callback, progress=progress, stop=stop,
            return_activations=return_activations,
        )

    def _plan(self, prompts: Any, sites: Any, positions: Any, k: int, track: Iterable[int | str], track_top: int) -> _Plan:
        hm = self.model
        site_names = hm.site_names(sites)
        self.decoder.check_sites(site_names)
        if int(k) < 1:
            raise ValueError("k must be at least 1")
        final_site = f"resid_out_{hm.num_layers - 1}"
        batch = hm.as_batch(prompts)
        pos_lists = [resolve_positions(positions, int(n)) for n in batch.lengths]
        tracked = self.token_ids(track)
        if track_top:
            tracked = torch.cat([tracked, self.final_top(batch, int(track_top))])
        tracked = torch.tensor(list(dict.fromkeys(tracked.tolist())), dtype=torch.long)
        max_rows = rows_for_budget(self.decoder.vocab, self.memory_budget)
        group = min(len(site_names), max_rows)
        return _Plan(
            batch=batch,
            sites=site_names,
            record=list(dict.fromkeys(site_names + [final_site])),
            final_site=final_site,
            positions=pos_lists,
            tracked=tracked,
            k=min(int(k), self.decoder.vocab),
            max_rows=max_rows,
            group=group,
            block=max(1, max_rows // group),
        )

    def _use_fused(self, plan: _Plan) -> bool:
        """Large runs use the compiled reductions once compiled (started now, in the background);
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
    def _reduce_batch(self, plan: _Plan, reducer: ChunkReducer, store: CellStore, idx: list[int], batch: Batch,
                      acts: dict[str, torch.Tensor], bar: Any, kept: list[dict[str, torch.Tensor]] | None) -> None:
        """Every chunk of one forward batch: final distribution per position block, then each
        group of sites, each site's rows prepared by the decoder (its own translator)."""
        S = len(plan.sites)
        with self.decoder.loaded():
            for j, b in enumerate(idx):
                pos = plan.positions[b]
                nxt = next_token_ids(batch.input_ids[j, : int(batch.lengths[j])], pos)
                for p0 in range(0, len(pos), plan.block):
                    p1 = min(len(pos), p0 + plan.block)
                    final = reducer.final_distribution(self.decoder.prepare(acts[plan.final_site][j, p0:p1], plan.final_site))
                    for s0 in range(0, S, plan.group):
                        s1 = min(S, s0 + plan.group)
                        g = s1 - s0
                        x, bad = reducer.prepare_rows([acts[site][j, p0:p1] for site in plan.sites[s0:s1]], plan.sites[s0:s1])
                        stats = reducer.reduce(x, nxt[p0:p1].repeat_interleave(g), plan.tracked, final, group=g, nonfinite=bad)
                        store.put(b, slice(s0, s1), slice(p0, p1), stats, g)
                        bar.update(1)
                if kept is not None:
                    kept.append({site: acts[site][j, : len(pos)] for site in plan.record})

    # -- the lens next to a remote model ------------------------------------------------------
    def _check_portable(self) -> None:
        if type(self.decoder) is not Decoder:
            raise ValueError(
                f"the {self.decoder.name} decodes here, with its own weights; with a remote source "
                "(nnsight remote=True / 'local') only the plain logit lens runs next to the model"
            )

    def _lens_job(self, plan: _Plan, store: CellStore, idx: list[int], batch: Batch) -> dict[str, Any]:
        """Plain data for :func:`lens_widget.sources.intrace.lens_cells`: the same chunks as
        :meth:`_reduce_batch`."""
        self._check_portable()
        P = store.P
        next_ids = torch.full((len(idx), P), -1, dtype=torch.long)
        for j, b in enumerate(idx):
            n = int(batch.lengths[j])
            for c, p in enumerate(plan.positions[b]):
                if p + 1 < n:
                    next_ids[j, c] = batch.input_ids[j, p + 1]
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
        }

    def _accept(self, plan: _Plan, store: CellStore, idx: list[int], res: dict[str, Any], bar: Any) -> None:
        """Cells reduced next to the model, into the result store."""
        for key, arr in store.a.items():
            arr[idx] = res[key].numpy().astype(arr.dtype)
        S = len(plan.sites)
        bar.update(sum(math.ceil(len(plan.positions[b]) / plan.block) * math.ceil(S / plan.group) for b in idx))

    def _remote_detail(self, batch: Batch, sites: Sequence[str], positions: torch.Tensor, n: int, ids: torch.Tensor) -> dict[str, Any]:
        """Full-vocabulary statistics of ``sites`` at one position per prompt, computed next to
        the model (:func:`lens_widget.sources.intrace.detail`)."""
        self._check_portable()
        select = positions.reshape(-1, 1).long()
        job = {"sites": list(sites), "n": int(n), "ids": ids.long()}
        work: Work[dict[str, Any]] = Work(None, "detail", job, lambda res: res)
        return self.model.source.reduce(batch, list(sites), select, work)

    def _assemble(self, plan: _Plan, store: CellStore) -> LensResult:
        """The result's arrays: ids and positions padded with -1, KL and entropy clamped at 0
        against rounding, KL exactly 0 at the final site."""
        batch, B = plan.batch, len(plan.positions)
        input_ids = np.where(batch.attention_mask.numpy().astype(bool), batch.input_ids.numpy(), -1).astype(np.int64)
        positions_np = np.full((B, store.P), -1, dtype=np.int64)
        next_np = np.full((B, store.P), -1, dtype=np.int64)
        for b, pl in enumerate(plan.positions):
            n = int(batch.lengths[b])
            positions_np[b, : len(pl)] = pl
            next_np[b, : len(pl)] = [int(input_ids[b, p + 1]) if p + 1 < n else -1 for p in pl]
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
            lens_name=self.decoder.name,
            vocab_size=int(self.decoder.vocab),
            **arrays,
        )

    def final_top(self, batch: Any, n: int) -> torch.Tensor:
        """Ids of the final layer's top-``n`` tokens at each prompt's last position, ``[B * n]``."""
        batch = self.model.as_batch(batch)
        final_site = f"resid_out_{self.model.num_layers - 1}"
        if self.model.source.remote:
            res = self._remote_detail(batch, [final_site], batch.lengths - 1, n, torch.empty(0, dtype=torch.long))
            return res["top_ids"].reshape(-1).cpu()
        acts = self.model.record(batch, [final_site], (batch.lengths - 1)[:, None]).acts
        z = self.decoder.logits(acts[final_site][:, 0], final_site)
        return torch.topk(z, min(n, z.shape[-1]), dim=-1).indices.reshape(-1).cpu()

    # -- one cell, one column, exactly ---------------------------------------------------------
    @torch.inference_mode()
    def cell_detail(self, h: torch.Tensor, site: str, k: int = 50, token_ids: Sequence[int] = ()) -> dict[str, Any]:
        """Full-vocabulary detail of one residual vector ``h [d]`` of ``site``: top-k, entropy,
        and the logit, probability and exact rank of any tokens. ``h`` may be an
        :class:`~lens_widget.sources.ActivationRef` (a remote model's row): the source then
        computes the same numbers next to the model."""
        if isinstance(h, ActivationRef):
            ids = torch.as_tensor(list(token_ids), dtype=torch.long)
            res = self._remote_detail(h.batch, [site], torch.tensor([h.position]), int(k), ids)
            lse = res["lse"][0]
            return {
                "top_ids": res["top_ids"][0].numpy().astype(np.int32),
                "top_logits": res["top_logits"][0].numpy().astype(np.float32),
                "top_probs": (res["top_logits"][0] - lse).exp().numpy().astype(np.float32),
                "entropy": float(res["entropy"][0]),
                "token_stats": [
                    {"id": int(t), "logit": float(res["logits"][0, j]), "prob": float((res["logits"][0, j] - lse).exp()), "rank": int(res["ranks"][0, j])}
                    for j, t in enumerate(ids.tolist())
                ],
            }
        z = self.decoder.logits(h[None], site)
        top = torch.topk(z[0], min(int(k), z.shape[-1]))
        ids = torch.as_tensor(list(token_ids), dtype=torch.long)
        st = token_stats(z, torch.cat([top.indices.cpu(), ids]))
        n_top = top.indices.numel()
        stats = [
            {"id": int(t), "logit": float(st["logits"][0, n_top + j]), "prob": float(st["probs"][0, n_top + j]), "rank": int(st["ranks"][0, n_top + j])}
            for j, t in enumerate(ids.tolist())
        ]
        return {
            "top_ids": top.indices.cpu().numpy().astype(np.int32),
            "top_logits": top.values.cpu().numpy().astype(np.float32),
            "top_probs": st["probs"][0, :n_top].cpu().numpy().astype(np.float32),
            "entropy": float(st["entropy"][0]),
            "token_stats": stats,
        }

    @torch.inference_mode()
    def trajectory(self, column: dict[str, torch.Tensor], sites: Sequence[str], token_ids: Sequence[int]) -> dict[str, np.ndarray]:
        """Probability, logit and exact rank of ``token_ids`` at every site of one column
        (``column[site]`` is that position's residual vector): ``[S, M]`` arrays."""
        ids = torch.as_tensor(list(token_ids), dtype=torch.long)
        refs = [column[s] for s in sites]
        if refs and isinstance(refs[0], ActivationRef):  # one trace: every site of the column, next to the model
            res = self._remote_detail(refs[0].batch, list(sites), torch.tensor([refs[0].position]), 0, ids)
            return {
                "probs": (res["logits"] - res["lse"][:, None]).exp().numpy().astype(np.float32),
                "logits": res["logits"].numpy().astype(np.float32),
                "ranks": res["ranks"].numpy().astype(np.int32),
            }
        with self.decoder.loaded():
            z = torch.cat([self.decoder.logits(column[s][None], s) for s in sites])
        st = token_stats(z, ids)
        return {
            "probs": st["probs"].cpu().numpy().astype(np.float32),
            "logits": st["logits"].cpu().numpy().astype(np.float32),
            "ranks": st["ranks"].cpu().numpy().astype(np.int32),
        }

    # -- self-check ----------------------------------------------------------------------------
    @torch.inference_mode()
    def check_lens(self, prompt: str = "The capital of France is") -> float:
        """max |lens(last block) - model logits| over the prompt's positions (float32 ≈ 1e-5)."""
        batch = self.model.encode(prompt)
        select, _ = select_matrix([list(range(int(batch.lengths[0])))])
        last = f"resid_out_{self.model.num_layers - 1}"
        rec = self.model.record(batch, [last], select, want_logits=True)
        assert rec.logits is not None
        lens_logits = self.decoder.logits(rec.acts[last][0], last)
        return float((lens_logits - rec.logits[0].to(lens_logits.device)).abs().max())

    # -- two sides in one run: exact Jensen–Shannon divergences ---------------------------------
    @torch.inference_mode()
    def compare(
        self,
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
    ) -> Comparison | tuple[Comparison, list[dict[str, torch.Tensor]]]:
        """Two sides of one engine run, compared cell by cell with **exact** Jensen–Shannon
        divergences (see :mod:`lens_widget.compare`).

        * two lenses on one prompt: ``lens.compare(prompt, decoder_b=tuned)`` (side a is this
          lens's decoder, side b ``decoder_b``);
        * two prompts: ``lens.compare(prompt_a, prompt_b)`` (one forward pass of both, in one
          batch; ``align`` pairs their columns); ``decoder_b`` may be given too.

        Per chunk the reducer decodes both sides' aligned rows, takes the JS divergence of the two
        log-softmaxes over the whole vocabulary, then reduces each side's rows as :meth:`run`
        does, and drops the logits: no full-vocabulary tensor outlives its chunk, and the two
        reducers share ``memory_budget`` (each side's chunks are half the size of :meth:`run`'s). Columns of the
        longer prompt that have no partner are reduced alone. ``return_activations`` also returns
        ``[acts_a, acts_b]`` (``{site: [P, d]}``, as :meth:`run`).
        """
        if prompt_b is None and decoder_b is None:
            raise ValueError("compare needs a second prompt (prompt_b) or a second decoder (decoder_b=)")
        if self.model.source.remote:
            raise ValueError("a one-run compare decodes both sides here; with a remote source compare two runs' "
                             "results instead: lens_widget.compare(lens.run(a), lens.run(b)) (top-k-approximate JS)")
        other = self if decoder_b is None else self.with_decoder(decoder_b)
        if other.decoder.vocab != self.decoder.vocab:
            raise ComparisonError(f"the decoders have different vocabularies ({self.decoder.vocab} vs {other.decoder.vocab} tokens)")
        prompts = [prompt_a] if prompt_b is None else [prompt_a, prompt_b]
        for p in prompts:
            if not isinstance(p, str) and not (isinstance(p, (list, tuple)) and all(isinstance(t, int) for t in p)):
                raise ValueError(f"compare takes one prompt per side (a string or a list of token ids), got {type(p).__name__}")
        plan = self._plan(prompts, sites, positions, k, track, track_top)
        # two reducers share the memory budget: each side's chunk is half of run()'s
        half = max(1, plan.max_rows // 2)
        group = min(len(plan.sites), half)
        plan = dataclasses.replace(plan, max_rows=half, group=group, block=max(1, half // group))
        other.decoder.check_sites(plan.sites)
        ib = len(plan.positions) - 1  # side b's prompt in the batch
        lengths = [int(n) for n in plan.batch.lengths]
        ia_cols, ib_cols, how = align_columns(plan.positions[0], lengths[0], plan.positions[ib], lengths[ib], align)
        S, M = len(plan.sites), int(plan.tracked.numel())
        fused = self._use_fused(plan)
        if fused:  # the JS kernel too: compiled in the background ("auto") or now ("always")
            FUSED.warm("js", self.decoder.vocab, self.decoder.device, block=self.compile == "always")
            if self.compile == "always" and FUSED.failure("js"):
                raise RuntimeError(f"compile='always': torch.compile of the JS divergence failed: {FUSED.failure('js')}")
        sides = [
            _Side(self, 0, ChunkReducer(self.decoder, plan.max_rows, plan.k, fused=fused, strict=self.compile == "always"),
                  CellStore(1, S, len(plan.positions[0]), plan.k, M), int(ia_cols[0])),
            _Side(other, ib, ChunkReducer(other.decoder, plan.max_rows, plan.k, fused=fused, strict=self.compile == "always"),
                  CellStore(1, S, len(plan.positions[ib]), plan.k, M), int(ib_cols[0])),
        ]
        js = np.full((S, ia_cols.size), np.nan, dtype=np.float32)
        kept: list[dict[str, torch.Tensor]] = []
        select, _ = select_matrix(plan.positions)
        bar = tqdm(total=plan.n_chunks * (2 if len(plan.positions) == 1 else 1), desc="Compare", unit="chunk", disable=not progress)
        try:
            local = lambda acts: self._compare_batch(plan, sides, int(ia_cols.size), js, acts, bar, kept if return_activations else None)  # noqa: E731
            self.model.source.reduce(plan.batch, plan.record, select, local)
        finally:
            bar.close()
        results = []
        for side in sides:
            one = dataclasses.replace(plan, batch=plan.batch.subset([side.b]), positions=[plan.positions[side.b]])
            results.append(side.runner._assemble(one, side.store))
        comparison = compare_results(results[0], results[1], align=(int(plan.positions[0][ia_cols[0]]), int(plan.positions[ib][ib_cols[0]])), labels=labels, js=js)
        comparison.align = how
        comparison.meta.update({"fused_chunks": sum(s.reducer.fused_chunks for s in sides), "fused_js_chunks": sides[0].reducer.fused_js_chunks})
        return (comparison, kept) if return_activations else comparison

    @torch.inference_mode()
    def js_between(self, acts_a: dict[str, torch.Tensor], acts_b: dict[str, torch.Tensor], sites: Sequence[str],
                   cols_a: Sequence[int], cols_b: Sequence[int], decoder_b: Decoder | None = None) -> np.ndarray:
        """Exact Jensen–Shannon divergences ``[S, P]`` (nats, full vocabulary) between recorded
        activations: column ``cols_a[j]`` of ``acts_a`` (``{site: [P_a, d]}``, as :meth:`run`
        returns with ``return_activations``) decoded by this lens, against column ``cols_b[j]`` of
        ``acts_b`` decoded by ``decoder_b`` (default: this lens's decoder). Chunked like
        :meth:`run` (each side half the memory budget); no forward pass."""
        dec_b = self.decoder if decoder_b is None else decoder_b
        ia, ib = torch.as_tensor(list(cols_a), dtype=torch.long), torch.as_tensor(list(cols_b), dtype=torch.long)
        if ia.numel() != ib.numel():
            raise ValueError("cols_a and cols_b must pair up (the same length)")
        step = max(1, rows_for_budget(self.decoder.vocab, self.memory_budget) // 2)
        out = np.full((len(sites), ia.numel()), np.nan, dtype=np.float32)
        with self.decoder.loaded(), dec_b.loaded():
            for s, site in enumerate(sites):
                ha, hb = acts_a[site], acts_b[site]
                for j0 in range(0, ia.numel(), step):
                    ja, jb = ia[j0 : j0 + step], ib[j0 : j0 + step]
                    za = self.decoder.logits(ha[ja.to(ha.device)], site)
                    zb = dec_b.logits(hb[jb.to(hb.device)], site)
                    out[s, j0 : j0 + ja.numel()] = js_divergence(za, zb).cpu().numpy()
        return out

    def _compare_batch(self, plan: _Plan, sides: list["_Side"], n: int, js: np.ndarray, acts: dict[str, torch.Tensor], bar: Any,
                       kept: list[dict[str, torch.Tensor]] | None) -> None:
        """Both sides of a comparison: the paired columns chunk by chunk with JS, then each
        side's unpaired columns alone."""
        S = len(plan.sites)
        for side in sides:
            side.nxt = next_token_ids(plan.batch.input_ids[side.b, : int(plan.batch.lengths[side.b])], plan.positions[side.b])
        a, b = sides
        with a.runner.decoder.loaded(), b.runner.decoder.loaded():
            for c0 in range(0, n, plan.block):
                c1 = min(n, c0 + plan.block)
                finals = [s.final(plan, acts, s.off + c0, s.off + c1) for s in sides]
                for s0 in range(0, S, plan.group):
                    s1 = min(S, s0 + plan.group)
                    g = s1 - s0
                    rows = [s.rows(plan, acts, s.off + c0, s.off + c1, s0, s1) for s in sides]
                    za, zb = a.reducer.logits(rows[0][0]), b.reducer.logits(rows[1][0])
                    js[s0:s1, c0:c1] = a.reducer.js(za, zb).view(c1 - c0, g).T.cpu().numpy()
                    for side, z, (x, nxt, bad), final in zip(sides, (za, zb), rows, finals):
                        stats = side.reducer.reduce_logits(z, x, nxt, plan.tracked, final, group=g, nonfinite=bad)
                        side.store.put(0, slice(s0, s1), slice(side.off + c0, side.off + c1), stats, g)
                    bar.update(2)
            for side in sides:  # columns without a partner
                P = len(plan.positions[side.b])
                for lo, hi in ((0, side.off), (side.off + n, P)):
                    for p0 in range(lo, hi, plan.block):
                        p1 = min(hi, p0 + plan.block)
                        final = side.final(plan, acts, p0, p1)
                        for s0 in range(0, S, plan.group):
                            s1 = min(S, s0 + plan.group)
                            x, nxt, bad = side.rows(plan, acts, p0, p1, s0, s1)
                            stats = side.reducer.reduce(x, nxt, plan.tracked, final, group=s1 - s0, nonfinite=bad)
                            side.store.put(0, slice(s0, s1), slice(p0, p1), stats, s1 - s0)
                            bar.update(1)
        if kept is not None:
            for side in sides:
                kept.append({site: acts[site][side.b, : len(plan.positions[side.b])] for site in plan.record})


def _batches(n: int, size: int) -> list[list[int]]:
    step = max(1, int(size))
    return [list(range(s, min(n, s + step))) for s in range(0, n, step)]


def _mask_padding(value: torch.Tensor, positions: Any, h: torch.Tensor) -> torch.Tensor:
    """NaN at the padded columns of a cache (``positions < 0``)."""
    if not isinstance(positions, torch.Tensor) or positions.shape != h.shape[:2]:
        return value
    valid = (positions >= 0).view(*positions.shape, *([1] * (value.dim() - 2))).to(value.device)
    return value.masked_fill(~valid, float("nan"))


def _expand_key(activations: Any, target_key: str) -> list[str]:
    """Cache keys named by ``target_key`` (``{i}`` expands over every layer in the cache)."""
    if "{i}" in target_key:
        prefix, suffix = target_key.split("{i}", 1)

        def layer(key: str) -> str:
            return key[len(prefix) : len(key) - len(suffix) or None]

        keys = [k for k in activations.keys() if k.startswith(prefix) and k.endswith(suffix) and layer(k).isdigit()]
        keys.sort(key=lambda k: int(layer(k)))
        if not keys:
            raise KeyError(f"no cache key matches {target_key!r}; the cache holds {', '.join(activations.keys())}")
        return keys
    if target_key not in activations:
        raise KeyError(f"{target_key!r} is not in the cache; it holds {', '.join(activations.keys())}")
    return [target_key]


@dataclass
class _Side:
    """One side of :meth:`LogitLens.compare`: its runner, its prompt's row in the batch, its reducer
    and store, and its first paired column."""

    runner: LogitLens
    b: int
    reducer: ChunkReducer
    store: CellStore
    off: int
    nxt: torch.Tensor = dataclasses.field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def rows(self, plan: _Plan, acts: dict[str, torch.Tensor], p0: int, p1: int, s0: int, s1: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This side's prepared rows of sites ``s0:s1`` at columns ``p0:p1`` (position-major),
        their next-token ids and non-finite flags."""
        sites = plan.sites[s0:s1]
        x, bad = self.reducer.prepare_rows([acts[site][self.b, p0:p1] for site in sites], sites)
        return x, self.nxt[p0:p1].repeat_interleave(s1 - s0), bad

    def final(self, plan: _Plan, acts: dict[str, torch.Tensor], p0: int, p1: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This side's final-layer distribution at columns ``p0:p1`` (its own decoder's)."""
        dec = self.runner.decoder
        return self.reducer.final_distribution(dec.prepare(acts[plan.final_site][self.b, p0:p1], plan.final_site))
