"""The reference tutorial's ``compute``: decode cached activations to full logits (or
probabilities) per cache key, or to logit differences of token pairs.

This is the tutorial's API over an :class:`~lens_widget.cache.ActivationCache` (full
``[batch, positions, vocab]`` tensors by design, for the keys asked); the grid's
memory-bounded reductions are :meth:`LogitLens.run <lens_widget.engine.LogitLens.run>`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from .cache import ActivationCache
from .decoders import Decoder
from .reduce import DEFAULT_MEMORY_BUDGET, rows_for_budget
from .tokens import TokenTable

__all__ = ["COMPUTE_METRICS", "compute", "expand_key"]

#: ``compute``'s metrics (the reference tutorial's names).
COMPUTE_METRICS = ("logit_lens", "logit_diff")


@torch.inference_mode()
def compute(
    decoder: Decoder,
    tokens: TokenTable,
    activations: ActivationCache | dict[str, torch.Tensor],
    target_key: str,
    apply_norm: bool = True,
    apply_softmax: bool = False,
    token_directions: Sequence[Any] | None = None,
    metric: str | None = None,
    progress: bool = True,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> dict[str, torch.Tensor]:
    """See :meth:`LogitLens.compute <lens_widget.engine.LogitLens.compute>`."""
    if metric is None:
        metric = "logit_diff" if token_directions else "logit_lens"
    if metric not in COMPUTE_METRICS:
        raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(COMPUTE_METRICS)} (or None)")
    if metric == "logit_diff" and not token_directions:
        raise ValueError("metric='logit_diff' needs token_directions=[(token_a, token_b), ...]")
    keys = expand_key(activations, target_key)
    decoder.check_sites([k for k in keys if k not in ("logits", "last_layernorm")])
    pairs = token_pairs(tokens, token_directions) if metric == "logit_diff" else None
    out: dict[str, torch.Tensor] = {}
    with decoder.loaded():
        for key in tqdm(keys, desc=f"Computing Logit Lens of {target_key}", disable=not progress or len(keys) < 2):
            h = activations[key]
            if pairs is not None:
                z = decoder.logits_of(h, pairs.reshape(-1), key, apply_norm).view(*h.shape[:-1], -1, 2)
                value = z[..., 0] - z[..., 1]
                value, name = (value[..., 0] if pairs.shape[0] == 1 else value), f"logit_diff_{key}"
            else:
                value, name = full_logits(decoder, h, key, apply_norm, apply_softmax, memory_budget), f"logit_lens_{key}"
            out[name] = mask_padding(value, getattr(activations, "positions", None), h)
    return out


def full_logits(decoder: Decoder, h: torch.Tensor, site: str, apply_norm: bool, apply_softmax: bool, memory_budget: int) -> torch.Tensor:
    """``[..., V]`` logits (or probabilities) of every row of ``h``, decoded in budget-sized chunks."""
    flat = h.reshape(-1, h.shape[-1])
    out = torch.empty(flat.shape[0], decoder.vocab, dtype=torch.float32, device=decoder.device)
    step = rows_for_budget(decoder.vocab, memory_budget)
    for i in range(0, flat.shape[0], step):
        z = decoder.logits(flat[i : i + step], site, apply_norm)
        out[i : i + step] = torch.softmax(z, -1) if apply_softmax else z
    return out.view(*h.shape[:-1], -1)


def token_pairs(tokens: TokenTable, directions: Sequence[Any]) -> torch.Tensor:
    """``[n, 2]`` ids of token pairs given as ids or single-token strings."""
    pairs = []
    for d in directions:
        if not isinstance(d, (tuple, list)) or len(d) != 2:
            raise ValueError(f"each token direction must be a pair (token_a, token_b), got {d!r}")
        pairs.append([tokens.token_id(d[0]), tokens.token_id(d[1])])
    return torch.tensor(pairs, dtype=torch.long)


def mask_padding(value: torch.Tensor, positions: Any, h: torch.Tensor) -> torch.Tensor:
    """NaN at the padded columns of a cache (``positions < 0``)."""
    if not isinstance(positions, torch.Tensor) or positions.shape != h.shape[:2]:
        return value
    valid = (positions >= 0).view(*positions.shape, *([1] * (value.dim() - 2))).to(value.device)
    return value.masked_fill(~valid, float("nan"))


def expand_key(activations: Any, target_key: str) -> list[str]:
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
