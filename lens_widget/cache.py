"""The reference tutorial's activation cache: ``ExtractionConfig`` says what one forward pass
records, :func:`extract_cache` runs each input once through an activation source and keeps the
configured sites at the target positions in an :class:`ActivationCache`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from .inputs import Batch, PromptEncoder, PromptError
from .sites import position_matrix, resolve_positions, select_matrix
from .sources import ActivationSource, Recording

__all__ = ["ExtractionConfig", "ActivationCache", "extract_cache"]


@dataclass
class ExtractionConfig:
    """What one forward pass records (the reference tutorial's names)."""

    extract_embed: bool = False
    extract_resid_out: bool = True
    extract_resid_mid: bool = False
    extract_attn_out: bool = False
    extract_mlp_out: bool = False
    extract_last_layernorm: bool = False
    extract_logits: bool = True
    layers: Sequence[int] | None = None

    def sites(self, n_layers: int) -> list[str]:
        layers = list(range(n_layers)) if self.layers is None else [int(i) for i in self.layers]
        for i in layers:
            if not 0 <= i < n_layers:
                raise IndexError(f"layer {i} does not exist; this model has layers 0..{n_layers - 1}")
        sites = ["embed"] if self.extract_embed else []
        for i in layers:
            for kind, on in (
                ("resid_mid", self.extract_resid_mid),
                ("attn_out", self.extract_attn_out),
                ("mlp_out", self.extract_mlp_out),
                ("resid_out", self.extract_resid_out),
            ):
                if on:
                    sites.append(f"{kind}_{i}")
        return sites


class ActivationCache(dict):
    """Site name -> tensor ``[examples, positions, d]`` (plus ``logits``, ``last_layernorm``).

    ``positions[n, p]`` is the token index of column ``p`` of example ``n`` (``-1`` = padding),
    ``input_ids`` the examples' tokens (``-1`` padded) and ``lengths`` their real lengths.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.positions: torch.Tensor = torch.empty(0, 0, dtype=torch.long)
        self.input_ids: torch.Tensor = torch.empty(0, 0, dtype=torch.long)
        self.lengths: torch.Tensor = torch.empty(0, dtype=torch.long)

    def __repr__(self) -> str:
        return f"ActivationCache(`{', '.join(self.keys())}`)"

    def __getitem__(self, key: str) -> torch.Tensor:
        try:
            return super().__getitem__(key)
        except KeyError:
            raise KeyError(f"{key!r} is not in the cache; it holds {', '.join(self.keys()) or 'nothing'}") from None

def extract_cache(
    source: ActivationSource,
    encoder: PromptEncoder,
    n_layers: int,
    inputs_list: Iterable[Any],
    target_token_positions: Any = ("all",),
    extraction_config: ExtractionConfig | None = None,
    progress: bool = True,
) -> ActivationCache:
    """Run each input once and keep the configured sites at the target positions.

    ``inputs_list`` holds tokenizer outputs (``{"input_ids": [b, T], "attention_mask": ...}``,
    right-padded if batched) or plain strings. Positions: see
    :func:`~lens_widget.sites.resolve_positions`.
    """
    config = extraction_config or ExtractionConfig()
    sites = config.sites(n_layers)
    items = list(inputs_list)
    if not items:
        raise PromptError("inputs_list is empty")
    parts: list[tuple[Recording, torch.Tensor, Batch]] = []
    for item in tqdm(items, desc="Extracting cache", disable=not progress or len(items) < 2):
        batch = encoder.as_batch(item)
        positions = [resolve_positions(target_token_positions, int(n)) for n in batch.lengths]
        select, _ = select_matrix(positions)
        rec = source.record(batch, sites, select, want_logits=config.extract_logits, final_norm=config.extract_last_layernorm)
        parts.append((rec, position_matrix(positions), batch))
    return _concat_cache(parts)


def _pad_to(x: torch.Tensor, dim: int, size: int, value: float = 0) -> torch.Tensor:
    if x.shape[dim] == size:
        return x
    shape = list(x.shape)
    shape[dim] = size - x.shape[dim]
    return torch.cat([x, torch.full(shape, value, dtype=x.dtype, device=x.device)], dim=dim)


def _concat_cache(parts: list[tuple[Recording, torch.Tensor, Batch]]) -> ActivationCache:
    P = max(pos.shape[1] for _, pos, _ in parts)
    T = max(b.input_ids.shape[1] for *_, b in parts)
    cache = ActivationCache()
    for key in parts[0][0].acts:
        cache[key] = torch.cat([_pad_to(rec.acts[key], 1, P) for rec, *_ in parts])
    for key in ("last_layernorm", "logits"):
        if getattr(parts[0][0], key) is not None:
            cache[key] = torch.cat([_pad_to(getattr(rec, key), 1, P) for rec, *_ in parts])
    cache.positions = torch.cat([_pad_to(pos, 1, P, -1) for _, pos, _ in parts])
    ids = [torch.where(b.attention_mask.bool(), b.input_ids, -1) for *_, b in parts]
    cache.input_ids = torch.cat([_pad_to(i, 1, T, -1) for i in ids])
    cache.lengths = torch.cat([b.lengths for *_, b in parts])
    return cache
