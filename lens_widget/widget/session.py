"""The widget's kernel state, without traits: the lenses over the model, the results of the
prompts shown, the activations kept to answer clicks exactly, and the exact queries.

A :class:`LensSession` can be driven and tested without a comm; :class:`LensWidget
<lens_widget.widget.widget.LensWidget>` holds one (``None`` when built from saved results) and
turns its answers into traits and replies. New per-cell requests (attribution, patching) go
here, one method each, calling their analysis module.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..attribution import as_data as attribution_data
from ..compare import Comparison
from ..decoders import Decoder
from ..engine import LogitLens
from ..patching import Patch, Sweep
from ..hooked import HookedModel
from ..result import LensResult
from .requests import RequestError

__all__ = ["LensSession", "every_position"]


def every_position(positions: Any) -> bool:
    """``positions=`` names every token (the default)."""
    return isinstance(positions, str) and positions == "all"


class LensSession:
    """Several lenses over one model: ``decoders`` is ``{label: decoder}`` (``None``: the logit
    lens), every lens computed from one recorded pass per batch."""

    def __init__(self, model: Any, decoders: Mapping[str, Decoder | None], *, tokenizer: Any = None, memory_budget: int | None = None,
                 sites: str | Sequence[str] | None = None, positions: Any = "all", k: int = 10, precision: Any = "auto"):
        base = LogitLens(model, memory_budget or None, tokenizer=tokenizer, precision=precision)
        #: one runner per lens label (they share the model and the settings)
        self.runners: dict[str, LogitLens] = {label: base if d is None else base.with_decoder(d) for label, d in decoders.items()}
        self.base = base
        self.sites, self.k = sites, int(k)
        #: which token positions of each prompt the grids hold (:func:`lens_widget.sites.resolve_positions`)
        self.positions = positions
        #: ``{site: [P, d]}`` per prompt: what clicks are answered from, exactly
        self.acts: list[dict[str, torch.Tensor]] = []

    @property
    def model(self) -> HookedModel:
        return self.base.model

    @property
    def labels(self) -> list[str]:
        return list(self.runners)

    def token_id(self, token: Any) -> int:
        """The id of a token given as an id or a single-token string."""
        return self.model.tokens.token_id(token)

    # -- computing --------------------------------------------------------------------------
    def compute(self, prompts: list[str], tracked: list[int], progress: Any = True, stop: Any = None) -> dict[str, LensResult]:
        """Every lens of ``prompts`` from one recorded pass; kept (with the activations) only when
        the run succeeds."""
        decoders = {label: runner.decoder for label, runner in self.runners.items()}
        results, acts = self.base.run(prompts, sites=self.sites, positions=self.positions, k=self.k, track=tracked, progress=progress, return_activations=True,
                                      stop=stop, decoders=decoders)
        self.acts = acts
        return results

    def keep(self, acts: list[dict[str, torch.Tensor]]) -> None:
        """The activations of results computed elsewhere (a generation)."""
        self.acts = acts

    def forget(self) -> None:
        """Drop the kept activations (a closed widget)."""
        self.acts = []

    # -- exact queries ----------------------------------------------------------------------
    def _acts_of(self, label: str, pi: int) -> tuple[LogitLens, dict[str, torch.Tensor]]:
        runner = self.runners.get(label)
        acts = self.acts[pi] if pi < len(self.acts) else {}
        if runner is None or not acts:
            raise RequestError("no model attached (widget built from a LensResult, or an exported page)")
        return runner, acts

    def detail(self, r: LensResult, label: str, pi: int, site: int, col: int, k: int, token_ids: Sequence[int | str]) -> dict[str, Any]:
        """Full-vocabulary detail of cell (``site``, ``col``) of lens ``label``'s result ``r``,
        prompt ``pi`` (indices checked by the caller): top-k, entropy, the next token's
        probability and exact rank, and any tokens' logit, probability and rank."""
        ids = [self.token_id(i) for i in token_ids]
        runner, acts = self._acts_of(label, pi)
        next_id = int(r.next_ids[pi, col])
        # one decode of the row answers the top-k, the asked tokens and the next token
        detail = runner.cell_detail(acts[r.sites[site]][col], r.sites[site], k, ids + ([next_id] if next_id >= 0 else []))
        next_stats = detail["token_stats"].pop() if next_id >= 0 else None
        return {
            "site": site,
            "col": col,
            "position": int(r.positions[pi, col]),
            "lens": label,
            "lens_name": runner.decoder.name,
            "prompt_index": pi,
            "top_ids": detail["top_ids"],
            "top_probs": detail["top_probs"],
            "top_logits": detail["top_logits"],
            "entropy": detail["entropy"],
            "next_id": next_id,
            "next_prob": None if next_stats is None else next_stats["prob"],
            "next_rank": 0 if next_stats is None else next_stats["rank"],
            "tokens": {str(i): self.model.tokens.decode(i) for i in set(detail["top_ids"].tolist()) | set(ids)},
            "token_stats": detail["token_stats"],
            "vocab_size": runner.decoder.vocab,
        }

    def trajectory(self, r: LensResult, label: str, pi: int, col: int, token_ids: Sequence[int | str]) -> dict[str, Any]:
        """Probability, logit and exact rank of tokens at every site of one column of ``r``."""
        ids = [self.token_id(i) for i in token_ids]
        runner, acts = self._acts_of(label, pi)
        sites = r.sites
        return {"token_ids": ids, "lens": label, **runner.trajectory({s: acts[s][col] for s in sites}, sites, ids)}

    def exact_js(self, a: tuple[str, int], b: tuple[str, int], c: Comparison) -> np.ndarray | None:
        """Exact JS divergences of comparison ``c`` of sides ``a`` and ``b`` (``(label, prompt)``)
        from the kept activations (``None`` when they are not kept)."""
        (la, pa), (lb, pb) = a, b
        if len(self.acts) <= max(pa, pb):
            return None
        return self.runners[la].js_between(self.acts[pa], self.acts[pb], c.sites, c.cols_a, c.cols_b, self.runners[lb].decoder)

    def search(self, query: str, limit: int = 20) -> dict[str, Any]:
        """Vocabulary entries matching ``query`` (exact forms first, multi-token queries flagged)."""
        matches, pieces = self.model.tokens.search(query, limit)
        return {
            "matches": [{"id": m.id, "text": m.text, "display": m.display, "exact": m.exact} for m in matches],
            "pieces": None if pieces is None else [[i, s] for i, s in pieces],
        }

    def attribution(self, r: LensResult, label: str, pi: int, site: int, col: int, token: Any = None, top: int = 20) -> dict[str, Any]:
        """Exact attribution of cell (``site``, ``col``) of lens ``label``'s result ``r``, prompt
        ``pi`` (indices checked by the caller) to ``token`` (an id, a string, a pair ``[a, b]``
        for a logit difference; default: the cell's top-1), as plain data (see
        :func:`lens_widget.attribution.as_data`). One forward pass of the prompt's tokens, hooks
        at the one position (:mod:`lens_widget.attribution`)."""
        runner = self.runners.get(label)
        if runner is None:
            raise RequestError("no model attached (widget built from a LensResult, or an exported page)")
        ids = [int(i) for i in r.input_ids[pi, : int(r.lengths[pi])]]
        if token is None:
            token = int(r.topk_ids[pi, site, col, 0])
        elif isinstance(token, list):
            token = tuple(token)
        df = runner.attribute(ids, r.sites[site], int(r.positions[pi, col]), token)
        data = attribution_data(df, top)
        return {
            "site": site,
            "col": col,
            "prompt_index": pi,
            "lens": label,
            **data,
            "tokens": {str(i): self.model.tokens.decode(i) for i in data["token_ids"]},
        }

    def patch(self, r: LensResult, label: str, source: tuple[int, int, int], target: tuple[int, int]) -> Patch:
        """Patch cell ``source = (prompt, site, col)`` of lens ``label``'s result ``r`` into
        ``target = (prompt, col)`` (the same site; indices checked by the caller): the clean and
        patched target grids and their exact comparison (:func:`lens_widget.patching.patch`,
        two forward passes: the source's cell, then clean + patched target in one batch)."""
        runner = self.runners.get(label)
        if runner is None:
            raise RequestError("no model attached (widget built from a LensResult, or an exported page)")
        (sp, site, scol), (tp, tcol) = source, target

        def ids(pi: int) -> list[int]:
            return [int(i) for i in r.input_ids[pi, : int(r.lengths[pi])]]

        return runner.patch(ids(sp), ids(tp), r.sites[site], int(r.positions[sp, scol]), int(r.positions[tp, tcol]),
                            sites=list(r.sites), k=r.k, track=[int(i) for i in r.tracked_ids])

    def sweep(self, clean: Sequence[int], corrupt: Sequence[int], pair: tuple[int, int], *, batch_size: int = 32, progress: Any = True,
              stop: Any = None) -> Sweep:
        """Activation patching of every (site, position) of the residual stream from ``clean`` into
        ``corrupt`` (token ids, the same length), recording the recovery of ``logit(a) − logit(b)``
        at the last position (:func:`lens_widget.patching.patch_sweep`; the grid's residual sites,
        ``batch_size`` patches a forward, ``progress`` and ``stop`` as there)."""
        return self.base.patch_sweep(list(clean), list(corrupt), pair, sites=self.sites, batch_size=batch_size, progress=progress, stop=stop)

    def runner(self, label: str) -> LogitLens:
        """The runner of lens ``label`` (generation runs one lens)."""
        return self.runners[label]

