"""`LensResult`: the reduced lens, as small numpy arrays a person (or the widget) can read.

Every array is indexed ``[prompt, site, position, ...]``. Sites are the residual-stream points the
lens decoded (``"embed"``, ``"resid_out_0"`` … ``"resid_out_{L-1}"`` by default); positions are
indices into each prompt's tokens (``positions[b, p]``, ``-1`` where a shorter prompt is padded).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .figure import grid_svg, metric_grid
from .schema import CELL_FIELDS, trailing
from .sites import site_label
from .tokens import TokenLookupError, display_token

__all__ = ["LensResult", "CellStore", "NUMPY_DTYPES"]

#: The numpy dtype of each cell kind of :data:`~lens_widget.schema.CELL_FIELDS` in a result.
NUMPY_DTYPES = {"int": np.int64, "float": np.float32, "bool": np.bool_}


def model_label(name: str) -> str:
    """``"/home/me/.cache/x/gemma-3-270m-q4_k_m.gguf"`` → ``"gemma-3-270m-q4_k_m"``; a hub name
    (``"google/gemma-3-270m"``: no leading ``/``, ``~`` or ``.``, at most one ``/``) is kept."""
    text = str(name).rstrip("/\\")
    local = text.startswith(("/", "~", ".")) or "\\" in text or text.count("/") > 1 or text.lower().endswith(".gguf")
    if not local:
        return text
    last = re.split(r"[/\\]", text)[-1]
    return last[: -len(".gguf")] if last.lower().endswith(".gguf") else last


@dataclass
class LensResult:
    """The logit lens of one or more prompts, reduced per (site, position) cell.

    Attributes (B prompts, S sites, P positions, k top tokens, M tracked tokens):
        prompts: the prompt texts (``""`` when built from ids).
        input_ids: ``[B, T]`` token ids, ``-1`` padded.
        lengths: ``[B]`` real token counts.
        sites: site names, in depth order.
        positions: ``[B, P]`` token index of each lens column, ``-1`` padded.
        topk_ids / topk_probs / topk_logits: ``[B, S, P, k]``, best first.
        entropy: ``[B, S, P]`` in nats.
        next_ids: ``[B, P]`` the actual next token (``-1`` at a prompt's last token).
        next_prob / next_logit: ``[B, S, P]`` (NaN where there is no next token).
        next_rank: ``[B, S, P]`` 1-based rank over the full vocabulary (0 where no next token).
        kl: ``[B, S, P]`` KL(final layer ‖ this site) in nats.
        tracked_ids: ``[M]``; tracked_prob / tracked_logit / tracked_rank: ``[B, S, P, M]``.
        nonfinite: ``[B, S, P]`` True where the activation or its logits held NaN/inf.
        token_strings: decoded text of every id that appears in the arrays above.
        model_name: what the model was loaded from.
        lens_name: the decoder that produced it (``"logit lens"``, ``"tuned lens"``).
        generated_from: ``[B]`` for a generation (``LogitLens.generate``), the index of each
            row's first generated token (its prompt's length); ``None`` when every token was given.
        vocab_size: the decoder's vocabulary size (``0``: unknown, e.g. an older saved result);
            :func:`lens_widget.compare` refuses two results of different vocabularies.
    """

    prompts: list[str]
    input_ids: np.ndarray
    lengths: np.ndarray
    sites: list[str]
    positions: np.ndarray
    topk_ids: np.ndarray
    topk_probs: np.ndarray
    topk_logits: np.ndarray
    entropy: np.ndarray
    next_ids: np.ndarray
    next_prob: np.ndarray
    next_logit: np.ndarray
    next_rank: np.ndarray
    kl: np.ndarray
    tracked_ids: np.ndarray
    tracked_prob: np.ndarray
    tracked_logit: np.ndarray
    tracked_rank: np.ndarray
    nonfinite: np.ndarray
    token_strings: dict[int, str] = field(default_factory=dict)
    model_name: str = ""
    lens_name: str = "logit lens"
    generated_from: np.ndarray | None = None
    vocab_size: int = 0

    # -- shape ----------------------------------------------------------------------------
    @property
    def model_label(self) -> str:
        """The model's short display name (titles, exported pages): a hub name as it is; a local
        path or GGUF file by its last component without ``.gguf``, so no folder of this machine
        reaches a title or a shared page."""
        return model_label(self.model_name)

    @property
    def n_prompts(self) -> int:
        return int(self.topk_ids.shape[0])

    @property
    def n_sites(self) -> int:
        return len(self.sites)

    @property
    def n_positions(self) -> int:
        return int(self.positions.shape[1])

    @property
    def k(self) -> int:
        return int(self.topk_ids.shape[-1])

    @property
    def site_labels(self) -> list[str]:
        return [site_label(s) for s in self.sites]

    def token(self, token_id: int) -> str:
        """Decoded text of an id that appears in this result."""
        if int(token_id) < 0:
            return ""
        try:
            return self.token_strings[int(token_id)]
        except KeyError:
            raise TokenLookupError(f"token id {token_id} does not appear in this result") from None

    def display(self, token_id: int) -> str:
        return display_token(self.token(token_id))

    def prompt(self, b: int) -> "LensResult":
        """The one-prompt result of prompt ``b`` (its columns only; arrays are copies)."""
        b = int(b)
        if not 0 <= b < self.n_prompts:
            raise IndexError(f"prompt {b}: this result has {self.n_prompts} prompt(s)")
        cols = self.columns(b)
        n = int(self.lengths[b])
        cells = {f.name: getattr(self, f.name)[b : b + 1][:, :, cols].copy() for f in CELL_FIELDS}
        return LensResult(
            prompts=[self.prompts[b]] if b < len(self.prompts) else [""],
            input_ids=self.input_ids[b : b + 1, :n].copy(),
            lengths=self.lengths[b : b + 1].copy(),
            sites=list(self.sites),
            positions=self.positions[b : b + 1, cols].copy(),
            next_ids=self.next_ids[b : b + 1, cols].copy(),
            tracked_ids=self.tracked_ids.copy(),
            token_strings=dict(self.token_strings),
            model_name=self.model_name,
            lens_name=self.lens_name,
            generated_from=None if self.generated_from is None else self.generated_from[b : b + 1].copy(),
            vocab_size=self.vocab_size,
            **cells,
        )

    # -- indexing helpers -----------------------------------------------------------------
    def columns(self, prompt: int = 0) -> np.ndarray:
        """Indices of the computed (non-padding) columns of one prompt."""
        return np.nonzero(self.positions[prompt] >= 0)[0]

    def n_columns(self, prompt: int = 0) -> int:
        return int((self.positions[prompt] >= 0).sum())

    def site_index(self, site: int | str) -> int:
        """Index of a site given by name (``"resid_out_3"``), label (``"3"``, ``"emb"``) or index."""
        if isinstance(site, (int, np.integer)):
            i = int(site)
            if not -self.n_sites <= i < self.n_sites:
                raise IndexError(f"site index {i} out of range (0..{self.n_sites - 1})")
            return i % self.n_sites
        if site in self.sites:
            return self.sites.index(site)
        labels = self.site_labels
        if site in labels:
            return labels.index(site)
        raise KeyError(f"unknown site {site!r}; this result has {self.sites[0]} … {self.sites[-1]}")

    def position_index(self, position: int, prompt: int = 0) -> int:
        """Column index of a token position (negative counts from the prompt's last token)."""
        pos = self.positions[prompt]
        length = int(self.lengths[prompt])
        p = int(position)
        if p < 0:
            p += length
        hits = np.nonzero(pos == p)[0]
        if not 0 <= p < length or hits.size == 0:
            have = pos[pos >= 0].tolist()
            raise IndexError(f"position {position} was not computed for prompt {prompt}; have {have}")
        return int(hits[0])

    def tracked_index(self, token_id: int) -> int:
        """Index of a tracked token in ``tracked_ids`` (a clear error when it was not tracked)."""
        hits = np.nonzero(self.tracked_ids == int(token_id))[0]
        if hits.size == 0:
            raise TokenLookupError(
                f"token id {token_id} was not tracked; tracked ids: {self.tracked_ids.tolist()}. "
                "Pass it in `track=` when computing the lens."
            )
        return int(hits[0])

    # -- views ----------------------------------------------------------------------------
    def tracked(self, token_id: int, metric: str = "prob") -> np.ndarray:
        """``[B, S, P]`` probability / logit / rank of a tracked token everywhere."""
        arrays = {"prob": self.tracked_prob, "logit": self.tracked_logit, "rank": self.tracked_rank}
        if metric not in arrays:
            raise ValueError(f"metric must be one of {sorted(arrays)}, got {metric!r}")
        return arrays[metric][..., self.tracked_index(token_id)]

    def logit_diff(self, token_a: int, token_b: int) -> np.ndarray:
        """``[B, S, P]`` logit(a) - logit(b) at every cell (both must be tracked)."""
        return self.tracked(token_a, "logit") - self.tracked(token_b, "logit")

    def top_tokens(
        self, position: int = -1, prompt: int = 0, k: int | None = None, by: str = "site"
    ) -> pd.DataFrame:
        """Top-k table at one position, the reference tutorial's section 5.

        One column per site (``"Layer 3"``) and one row per rank, each entry ``"token (p)"``;
        ``by="rank"`` gives the transpose.
        """
        k = self.k if k is None else min(int(k), self.k)
        col = self.position_index(position, prompt)
        table = {}
        for s, name in enumerate(self.sites):
            label = "Embeddings" if name == "embed" else f"Layer {site_label(name)}"
            table[label] = [
                f"{self.display(i)} ({p:.3f})"
                for i, p in zip(self.topk_ids[prompt, s, col, :k], self.topk_probs[prompt, s, col, :k])
            ]
        df = pd.DataFrame(table, index=pd.RangeIndex(1, k + 1, name="rank"))
        return df.T if by == "rank" else df

    def to_dataframe(self) -> pd.DataFrame:
        """Long table, one row per (prompt, site, position) cell."""
        B, S, P = self.entropy.shape
        b, s, p = np.meshgrid(np.arange(B), np.arange(S), np.arange(P), indexing="ij")
        b, s, p = b.ravel(), s.ravel(), p.ravel()
        pos = self.positions[b, p]
        keep = pos >= 0
        b, s, p, pos = b[keep], s[keep], p[keep], pos[keep]
        tok_ids = self.input_ids[b, pos]
        top1 = self.topk_ids[b, s, p, 0]
        nxt = self.next_ids[b, p]
        frame = {
            "prompt": b,
            "site": [self.sites[i] for i in s],
            "layer": s,
            "position": pos,
            "token_id": tok_ids,
            "token": [self.display(i) for i in tok_ids],
            "top1_id": top1,
            "top1": [self.display(i) for i in top1],
            "top1_prob": self.topk_probs[b, s, p, 0],
            "next_id": nxt,
            "next_token": [self.display(i) if i >= 0 else "" for i in nxt],
            "next_prob": self.next_prob[b, s, p],
            "next_rank": self.next_rank[b, s, p],
            "entropy": self.entropy[b, s, p],
            "kl_to_final": self.kl[b, s, p],
            "nonfinite": self.nonfinite[b, s, p],
        }
        for m, tid in enumerate(self.tracked_ids.tolist()):
            frame[f"prob[{tid}]"] = self.tracked_prob[b, s, p, m]
            frame[f"rank[{tid}]"] = self.tracked_rank[b, s, p, m]
        return pd.DataFrame(frame)

    def first_layer(self, token_id: int | None = None, prompt: int = 0, position: int = -1) -> int | None:
        """Site index from which ``token_id`` (default: the final top-1) stays top-1 to the end.

        A site index, not a block number: with the default sites 0 is the embeddings and
        ``i + 1`` is ``resid_out_i`` (``result.sites[index]`` names it). ``None`` if the token
        is not top-1 at the last site.
        """
        col = self.position_index(position, prompt)
        top1 = self.topk_ids[prompt, :, col, 0]
        target = int(top1[-1]) if token_id is None else int(token_id)
        first = None
        for s in range(len(top1) - 1, -1, -1):
            if int(top1[s]) != target:
                break
            first = s
        return first

    def to_svg(self, path: str | os.PathLike[str] | None = None, *, metric: str = "top1_prob", prompt: int = 0,
               token: int | str | None = None, diff_tokens: Sequence[int | str] = (), title: str | None = None) -> str:
        """The grid of prompt ``prompt`` as an SVG figure, coloured by ``metric`` as the widget
        colours it (one rect per cell, the top-1 tokens, layer and token labels, the legend);
        no browser needed. ``token`` chooses the tracked token of a ``tracked_*`` metric,
        ``diff_tokens`` the two of ``logit_diff``. Writes ``path`` when given; returns the SVG."""
        svg = grid_svg(self, metric_grid(self, metric, prompt, token, diff_tokens), prompt, title)
        if path is not None:
            Path(path).write_text(svg, encoding="utf-8")
        return svg


class CellStore:
    """The per-cell arrays of a :class:`LensResult` (``[B, S, P, ...]``, NaN / -1 / 0 where not
    computed), filled chunk by chunk from a reducer's rows (position-major in groups of sites)."""

    def __init__(self, B: int, S: int, P: int, k: int, M: int):
        self.P = P
        self.a: dict[str, np.ndarray] = {
            f.name: np.full((B, S, P, *trailing(f, k, M)), f.fill, NUMPY_DTYPES[f.kind]) for f in CELL_FIELDS
        }

    def put(self, b: int, sites: slice, pos: slice, stats: dict[str, Any], group: int) -> None:
        """A chunk's statistics (tensors ``[n_pos * group, ...]``, position-major) into prompt
        ``b``'s ``sites`` x ``pos`` cells."""
        n_pos = pos.stop - pos.start
        for key, arr in self.a.items():
            v = stats[key].detach().cpu().numpy()
            v = v.reshape(n_pos, group, *v.shape[1:])  # [pos, site, ...]
            arr[b, sites, pos] = np.swapaxes(v, 0, 1)

    def putter(self, b: int):
        """``put(s0, s1, c0, c1, cells)`` into prompt ``b``'s cells (a chunk loop's lane sink)."""
        return lambda s0, s1, c0, c1, cells: self.put(b, slice(s0, s1), slice(c0, c1), cells, s1 - s0)

    def finish(self, final_index: int | None) -> dict[str, np.ndarray]:
        """The arrays, with rounding undone: KL and entropy are >= 0, and KL(final || final) is 0
        by definition (``final_index``: the final site's index, ``None`` if not among the sites),
        where float32 rounding (~1e-5) says otherwise."""
        arrays = self.a
        for key in ("kl", "entropy"):
            np.maximum(arrays[key], 0, out=arrays[key], where=~np.isnan(arrays[key]))
        if final_index is not None:
            kl_final = arrays["kl"][:, final_index]
            kl_final[~np.isnan(kl_final)] = 0.0
        return arrays
