"""Generation with the lens: the model writes, and every new token adds one column to the grid.

One prefill forward over the prompt (``use_cache=True``) records every site at every prompt
position and returns the KV cache; then each new token is one cached forward step that records
the sites at the new position only. Every column is reduced through the same
:class:`~lens_widget.reduce.ChunkReducer` as ``LogitLens.run`` (eager passes: one column is far
too little work for the compiled kernels), and only **after** the token that follows it is
chosen, so a column's next-token probability and exact rank are final the moment it is reported.
The finished :class:`~lens_widget.result.LensResult` is over prompt + generated tokens, with
``generated_from`` marking where the prompt ends; it equals ``LogitLens.run`` on those ids
(the cached steps' activations agree with a full forward to float rounding).

The next token comes from the model's own logits at the new position: greedy (argmax, as
``transformers``' ``generate(do_sample=False)``) or sampled from ``softmax(logits / temperature)``
restricted by ``top_k`` / ``top_p``, from a ``torch.Generator`` seeded with ``seed``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .inputs import Batch, PromptError
from .progress import Progress, StopLike, is_stopped
from .reduce import ChunkReducer, Lane, reduce_columns, rows_for_budget
from .result import CellStore, LensResult
from .schema import CELL_KEYS
from .sites import next_token_ids

if TYPE_CHECKING:  # the engine delegates here; this module never imports it at run time
    from .engine import LogitLens

__all__ = ["GeneratedColumn", "GenerationProgress", "generate", "clear_next"]


@dataclass
class GeneratedColumn:
    """One new column of the grid, reported the moment it is final.

    ``index``: which new token (0 = the first generated); ``col``/``position``: its column and
    token index in the grid (they are equal: every position is a column); ``token_id``: the
    generated token this column reads; ``next_id``: the token the model wrote after it (``-1``
    for the last one); ``cells``: ``{key: [S, ...]}`` arrays laid out as one column of
    :class:`LensResult` (keys :data:`~lens_widget.schema.CELL_KEYS`); ``acts``: ``{site: [d]}`` the residual vectors
    (on the decoder's device, for exact cell detail); ``token_strings``: decoded text of the ids
    in ``cells``, the token and its next token.
    """

    index: int
    col: int
    position: int
    token_id: int
    next_id: int
    cells: dict[str, np.ndarray]
    acts: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    token_strings: dict[int, str] = field(repr=False, default_factory=dict)


#: What ``generate``'s ``progress`` callable receives after each new token.
GenerationProgress = Progress


class _ColumnReducer:
    """Columns of recorded activations -> per-cell arrays ``[S, n, ...]``, through the engine's
    own chunk loop (:func:`~lens_widget.reduce.reduce_columns`) with buffers no larger than the
    work (one column needs S rows, not the whole budget's)."""

    def __init__(self, lens: "LogitLens", sites: list[str], final_site: str, tracked: torch.Tensor, k: int, n_positions: int):
        self.decoder = lens.decoder
        self.sites, self.final_site, self.tracked = sites, final_site, tracked
        self.max_rows = min(rows_for_budget(self.decoder.vocab, lens.memory_budget), len(sites) * max(1, int(n_positions)))
        self.group = min(len(sites), self.max_rows)
        self.block = max(1, self.max_rows // self.group)
        self.k = min(int(k), self.decoder.vocab)
        # one column is little work: eager passes (the compiled kernels pay off only for large runs)
        self.reducer = ChunkReducer(self.decoder, self.max_rows, self.k, fused=False, certify=lens.certify_for(self.decoder))

    @torch.inference_mode()
    def reduce(self, acts: dict[str, torch.Tensor], next_ids: torch.Tensor) -> dict[str, np.ndarray]:
        """``acts[site]`` ``[n, d]`` of ``n`` positions whose next tokens are ``next_ids [n]``."""
        S, n = len(self.sites), int(next_ids.numel())
        store = CellStore(1, S, n, self.k, int(self.tracked.numel()))
        with self.decoder.loaded():
            lane = Lane(self.reducer, lambda site, c0, c1: acts[site][c0:c1], next_ids, store.putter(0))
            reduce_columns([lane], self.sites, self.final_site, n, self.block, self.group, self.tracked)
        # as LogitLens.run: rounding undone (KL and entropy >= 0, KL(final || final) = 0)
        arrays = store.finish(self.sites.index(self.final_site) if self.final_site in self.sites else None)
        return {key: arr[0] for key, arr in arrays.items()}


def clear_next(cells: dict[str, np.ndarray], col: int | slice = -1) -> None:
    """Forget the next token of column(s) ``col`` of ``[S, P, ...]`` cells (in place): what the
    lens holds at a text's last token, where nothing follows."""
    cells["next_prob"][:, col] = np.nan
    cells["next_logit"][:, col] = np.nan
    cells["next_rank"][:, col] = 0


class _Chooser:
    """The next token from the model's logits: argmax, or a seeded sample."""

    def __init__(self, do_sample: bool, seed: int | None, temperature: float, top_k: int | None, top_p: float | None, device: torch.device):
        self.do_sample = bool(do_sample)
        if self.do_sample:
            if not temperature > 0:
                raise ValueError(f"temperature must be > 0 when sampling, got {temperature!r}")
            if top_p is not None and not 0 < top_p <= 1:
                raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
            if top_k is not None and int(top_k) < 1:
                raise ValueError(f"top_k must be at least 1, got {top_k!r}")
        self.temperature, self.top_k, self.top_p = float(temperature), top_k, top_p
        self.generator = torch.Generator(device=device)
        if seed is not None:
            self.generator.manual_seed(int(seed))
        else:
            self.generator.seed()

    def __call__(self, logits: torch.Tensor) -> int:
        """``logits [V]`` (float32) -> the next token id."""
        if not self.do_sample:
            return int(torch.argmax(logits))
        z = logits.float() / self.temperature
        if self.top_k is not None and int(self.top_k) < z.numel():
            kth = torch.topk(z, int(self.top_k)).values[-1]
            z = z.masked_fill(z < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1:
            order = torch.argsort(z, descending=True)
            p = torch.softmax(z[order], -1)
            # keep the smallest prefix whose mass reaches top_p (always the best token)
            drop = (torch.cumsum(p, -1) - p) >= self.top_p
            z = z.clone()
            z[order[drop]] = float("-inf")
        probs = torch.softmax(z, -1)
        return int(torch.multinomial(probs, 1, generator=self.generator))


def _eos_ids(lens: "LogitLens", eos_token_id: Any) -> set[int]:
    if eos_token_id is None:
        return set()
    if isinstance(eos_token_id, str) and eos_token_id == "auto":
        cfg = getattr(lens.model.model, "generation_config", None)
        value = getattr(cfg, "eos_token_id", None) if cfg is not None else None
        if value is None:
            value = getattr(lens.model.tokenizer, "eos_token_id", None)
    else:
        value = eos_token_id
    if value is None:
        return set()
    return {int(v) for v in (value if isinstance(value, (list, tuple, set)) else [value])}


@torch.inference_mode()
def generate(
    lens: "LogitLens",
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
    callback: Callable[[GeneratedColumn], Any] | None = None,
    progress: bool | Callable[[GenerationProgress], Any] = True,
    stop: StopLike = None,
    on_prompt: Callable[[LensResult, dict[str, torch.Tensor]], Any] | None = None,
    return_activations: bool = False,
) -> LensResult | tuple[LensResult, dict[str, torch.Tensor]]:
    """Generate up to ``max_new_tokens`` tokens after ``prompt`` with the lens on every one.

    See :meth:`LogitLens.generate <lens_widget.engine.LogitLens.generate>` for the arguments.
    ``on_prompt(result, acts)`` (the widget's hook) receives the prompt's grid (its last column's
    next token is the first generated one) and activations ``{site: [P, d]}`` after the prefill,
    before the first new token's column. ``return_activations``: also return ``{site: [T, d]}``
    of every position (what the widget keeps to answer clicks exactly).
    """
    hm = lens.model
    n_new = int(max_new_tokens)
    if n_new < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens!r}")
    if int(k) < 1:
        raise ValueError("k must be at least 1")
    batch = hm.as_batch(prompt, add_generation_prompt=True)
    if batch.input_ids.shape[0] != 1:
        raise PromptError("generate() takes one prompt (text, token ids or one chat)")
    ids: list[int] = batch.rows()[0]
    limit = hm.max_length
    if limit is not None and len(ids) + n_new > limit:
        n_new = max(0, limit - len(ids))
    site_names = hm.site_names(sites)
    lens.decoder.check_sites(site_names)
    final_site = hm.final_site
    record = list(dict.fromkeys(site_names + [final_site]))
    tracked = lens.token_ids(track)
    tracked = torch.tensor(list(dict.fromkeys(tracked.tolist())), dtype=torch.long)
    prompt_cols = _ColumnReducer(lens, site_names, final_site, tracked, k, len(ids))
    cols = _ColumnReducer(lens, site_names, final_site, tracked, k, 1)
    choose = _Chooser(do_sample, seed, temperature, top_k, top_p, lens.decoder.device)
    eos = _eos_ids(lens, eos_token_id)
    n_prompt = len(ids)

    report = progress if callable(progress) else None
    bar = tqdm(total=n_new, desc="Generating", unit="token", disable=not progress or report is not None)
    t0 = time.perf_counter()
    kept: dict[str, list[torch.Tensor]] = {s: [] for s in record}
    try:
        # prefill: every prompt position, and the cache
        select = torch.arange(n_prompt)[None]
        rec = hm.record(batch, record, select, want_logits=True, use_cache=True)
        past = rec.past
        acts = {s: rec.acts[s][0] for s in record}
        pending = choose(rec.logits[0]) if n_new > 0 else -1
        nxt = next_token_ids(torch.tensor(ids + [pending]), range(n_prompt))
        prompt_cells = prompt_cols.reduce(acts, nxt)
        del prompt_cols
        if return_activations:
            for s in record:
                kept[s].append(acts[s])
        cells = {key: [prompt_cells[key]] for key in CELL_KEYS}
        if on_prompt is not None:
            on_prompt(_assemble(lens, ids, n_prompt, site_names, tracked, prompt_cells, pending), acts)
        done = 0
        while pending >= 0:
            if is_stopped(stop):
                break
            token = pending
            ids.append(token)
            step_batch = Batch(torch.tensor([[token]]), torch.ones(1, 1, dtype=torch.long), torch.tensor([1]), [""])
            last = done + 1 == n_new or token in eos
            rec = hm.record(step_batch, record, torch.zeros(1, 1, dtype=torch.long), want_logits=not last, past=past, use_cache=True)
            past = rec.past
            acts = {s: rec.acts[s][0] for s in record}
            pending = -1 if last else choose(rec.logits[0])
            col = cols.reduce(acts, torch.tensor([pending], dtype=torch.long))
            for key in CELL_KEYS:
                cells[key].append(col[key])
            if return_activations:
                for s in record:
                    kept[s].append(acts[s])
            done += 1
            bar.update(1)
            if report is not None:
                report(GenerationProgress(done, n_new, time.perf_counter() - t0))
            if callback is not None:
                one = {key: v[:, 0] for key, v in col.items()}
                used = {token, pending} | set(np.unique(one["topk_ids"]).tolist())
                callback(
                    GeneratedColumn(
                        index=done - 1, col=len(ids) - 1, position=len(ids) - 1, token_id=token, next_id=pending, cells=one,
                        acts={s: acts[s][0] for s in record}, token_strings=hm.tokens.table(i for i in used if i >= 0),
                    )
                )
    finally:
        bar.close()
    full = {key: np.concatenate(v, axis=1) for key, v in cells.items()}
    clear_next(full, -1)  # a stop leaves a token chosen but never read: the text ends before it
    result = _assemble(lens, ids, n_prompt, site_names, tracked, full)
    if return_activations:
        return result, {s: torch.cat(v) for s, v in kept.items()}
    return result


def _assemble(lens: "LogitLens", ids: list[int], n_prompt: int, sites: list[str], tracked: torch.Tensor,
              cells: dict[str, np.ndarray], last_next: int = -1) -> LensResult:
    """A one-prompt :class:`LensResult` over ``ids``, every position a column; ``last_next`` is
    the token after the last one when it is already chosen (``-1``: none)."""
    P = len(ids)
    if cells["entropy"].shape[1] != P:
        raise AssertionError("one column per token")
    ids_np = np.asarray(ids, dtype=np.int64)[None]
    next_np = next_token_ids(torch.tensor(ids + [int(last_next)]), range(P)).numpy()[None]
    used = set(ids) | set(np.unique(cells["topk_ids"]).tolist()) | set(tracked.tolist()) | ({int(last_next)} if last_next >= 0 else set())
    return LensResult(
        prompts=[lens.model.tokenizer.decode(ids)],
        input_ids=ids_np,
        lengths=np.array([P], np.int64),
        sites=list(sites),
        positions=np.arange(P, dtype=np.int64)[None],
        next_ids=next_np,
        tracked_ids=tracked.numpy().astype(np.int64),
        token_strings=lens.model.tokens.table(i for i in used if i >= 0),
        model_name=lens.model.name,
        lens_name=lens.decoder.name,
        generated_from=np.array([n_prompt], np.int64),
        **{key: v[None] for key, v in cells.items()},
    )
