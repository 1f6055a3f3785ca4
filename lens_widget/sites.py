"""Site names and token positions: what a lens row is made of.

Sites are points of the residual stream (and the contributions to it):

* ``embed``: the input of block 0 (embeddings, scaled and position-added as the model does);
* ``resid_out_{i}``: the output of block ``i`` (pre final norm, unlike ``hidden_states[-1]``);
* ``resid_mid_{i}``: the residual between attention and MLP of block ``i`` (sequential blocks);
* ``attn_out_{i}`` / ``mlp_out_{i}``: what attention / MLP of block ``i`` add to the residual.

Positions are token indices in a prompt, named by ``"all"``, ``"last"``, ``"last-N"`` (one token),
``"last:N"`` (the last N tokens), slice strings ``"2:10"``, ints or slices (:func:`resolve_positions`).
"""

from __future__ import annotations

import numbers
import re
from typing import Any, Sequence

import torch

__all__ = [
    "SITE_KINDS",
    "parse_site",
    "site_label",
    "resolve_site",
    "expand_sites",
    "default_sites",
    "hidden_state_index",
    "resolve_positions",
    "select_matrix",
    "position_matrix",
    "next_token_ids",
]

SITE_KINDS = ("embed", "resid_out", "resid_mid", "attn_out", "mlp_out")
_SITE_RE = re.compile(r"^(resid_out|resid_mid|attn_out|mlp_out)_(-?\d+)$")
_LABEL_RE = re.compile(r"^([maf]?)(-?\d+)$")
_LAST_RE = re.compile(r"^last(?:-(\d+))?$")
_LAST_RANGE_RE = re.compile(r"^last:(\d+)$")
_SLICE_RE = re.compile(r"^(-?\d+)?:(-?\d+)?(?::(-?\d+))?$")


def parse_site(site: str, n_layers: int) -> tuple[str, int | None]:
    """``"resid_out_3"`` -> ``("resid_out", 3)``; ``"embed"`` -> ``("embed", None)``.

    Raises ``KeyError`` for an unknown name and ``IndexError`` for a layer that does not exist.
    """
    if site == "embed":
        return "embed", None
    m = _SITE_RE.match(site) if isinstance(site, str) else None
    if not m:
        raise KeyError(
            f"unknown site {site!r}: use 'embed' or one of {', '.join(k + '_<layer>' for k in SITE_KINDS[1:])}"
        )
    layer = int(m.group(2))
    if not 0 <= layer < n_layers:
        raise IndexError(f"site {site!r}: layer {layer} does not exist; this model has layers 0..{n_layers - 1}")
    return m.group(1), layer


def site_label(site: str) -> str:
    """Short axis label: ``embed`` -> ``emb``, ``resid_out_3`` -> ``3``, ``attn_out_3`` -> ``a3``."""
    if site == "embed":
        return "emb"
    for prefix, tag in (("resid_out_", ""), ("resid_mid_", "m"), ("attn_out_", "a"), ("mlp_out_", "f")):
        if site.startswith(prefix):
            return f"{tag}{site[len(prefix):]}"
    return site


def resolve_site(site: Any, n_layers: int, parallel: bool) -> str:
    """A site name from a name (``"resid_out_12"``, ``"embed"``), a grid label (``"12"``,
    ``"emb"``, ``"m3"``, ``"a3"``, ``"f3"``) or a block index (``12``: its output; negative
    counts from the end)."""
    if isinstance(site, numbers.Integral) and not isinstance(site, bool):
        site = str(int(site))
    if not isinstance(site, str):
        raise KeyError(f"site must be a site name ('resid_out_3', 'embed') or a grid label ('3', 'emb'), got {site!r}")
    if site in ("emb", "embed"):
        return "embed"
    m = _LABEL_RE.match(site)
    if m:
        layer = int(m.group(2))
        if not -n_layers <= layer < n_layers:
            raise IndexError(f"site {site!r}: layer {layer} does not exist; this model has layers 0..{n_layers - 1}")
        kind = {"": "resid_out", "m": "resid_mid", "a": "attn_out", "f": "mlp_out"}[m.group(1)]
        site = f"{kind}_{layer % n_layers}"
    kind, _ = parse_site(site, n_layers)
    if kind == "resid_mid" and parallel:
        raise KeyError(f"{site!r}: this model's blocks run attention and MLP in parallel; there is no resid_mid")
    return site


def hidden_state_index(site: str, n_layers: int) -> int | None:
    """Index of ``site`` in Hugging Face's ``hidden_states`` numbering (0 = embeddings, ``i + 1`` =
    block ``i``'s output); ``None`` for sites that are not a block boundary."""
    kind, layer = parse_site(site, n_layers)
    if kind == "embed":
        return 0
    if kind == "resid_out":
        assert layer is not None
        return layer + 1
    return None


def default_sites(n_layers: int) -> list[str]:
    """``embed`` then every block's output: the classic lens rows."""
    return ["embed"] + [f"resid_out_{i}" for i in range(n_layers)]


def expand_sites(sites: str | Sequence[str] | None, n_layers: int, parallel: bool) -> list[str]:
    """``None`` / ``"resid"`` / ``"all"`` / a list -> checked site names in depth order."""
    if sites is None or sites == "resid":
        return default_sites(n_layers)
    if sites == "all":
        kinds = ["resid_out", "attn_out", "mlp_out"]
        if not parallel:
            kinds.insert(0, "resid_mid")
        return ["embed"] + [f"{k}_{i}" for i in range(n_layers) for k in kinds]
    names = [sites] if isinstance(sites, str) else list(sites)
    if not names:
        raise ValueError("no sites given")
    for s in names:
        parse_site(s, n_layers)
    return names


def resolve_positions(spec: Any, length: int) -> list[int]:
    """Token indices named by ``spec`` in a prompt of ``length`` tokens, ascending, unique.

    ``spec`` is one item or a list of:

    * ``"all"``: every token;
    * ``"last"``: the last token; ``"last-N"``: **one** token, N before the last (``"last-2"``
      is the third from the end, as in the seed library);
    * ``"last:N"``: the **range** of the last N tokens (``"last:8"``: 8 columns; like the slice
      ``-N:``, a prompt shorter than N gives all its tokens);
    * a slice string ``"start:stop[:step]"`` (``"2:10"``, ``"-5:"``, ``"::2"``), read as Python's
      ``range(length)[start:stop:step]``;
    * an int (negative counts from the end) or a ``slice``.
    """
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    out: set[int] = set()
    for item in items:
        if isinstance(item, str):
            m = _LAST_RE.match(item)
            if item == "all":
                out.update(range(length))
            elif m:
                p = length - 1 - int(m.group(1) or 0)
                if p < 0:
                    raise IndexError(f"position {item!r} is before the start of a {length}-token prompt")
                out.add(p)
            elif (rm := _LAST_RANGE_RE.match(item)) is not None:
                n = int(rm.group(1))
                if n < 1:
                    raise ValueError(f"position range {item!r} names no token: use 'last:N' with N >= 1")
                out.update(range(max(0, length - n), length))
            elif (sm := _SLICE_RE.match(item)) is not None:
                start, stop, step = (None if g is None else int(g) for g in sm.groups())
                if step == 0:
                    raise ValueError(f"position slice {item!r}: the step cannot be 0")
                out.update(range(length)[slice(start, stop, step)])
            else:
                raise ValueError(
                    f"unknown position {item!r}: use 'all', 'last', 'last-N' (one token), 'last:N' (the last N tokens), "
                    "a slice string like '2:10', an int or a slice"
                )
        elif isinstance(item, slice):
            out.update(range(length)[item])
        elif isinstance(item, int) or hasattr(item, "__index__"):
            p = int(item)
            if not -length <= p < length:
                raise IndexError(f"position {p} is outside a {length}-token prompt")
            out.add(p % length)
        else:
            raise ValueError(f"unknown position {item!r}")
    if not out:
        raise ValueError(f"positions {spec!r} select no token of a {length}-token prompt")
    return sorted(out)


def select_matrix(positions: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, P]`` gather indices (pads point at token 0) and the valid mask."""
    P = max(len(p) for p in positions)
    select = torch.zeros(len(positions), P, dtype=torch.long)
    valid = torch.zeros(len(positions), P, dtype=torch.bool)
    for i, pos in enumerate(positions):
        select[i, : len(pos)] = torch.as_tensor(pos, dtype=torch.long)
        valid[i, : len(pos)] = True
    return select, valid


def position_matrix(positions: list[list[int]]) -> torch.Tensor:
    """``[B, P]`` token index of each column, ``-1`` where a shorter list is padded."""
    select, valid = select_matrix(positions)
    return torch.where(valid, select, torch.full_like(select, -1))


def next_token_ids(ids: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """The token after each of ``positions`` in ``ids`` (one prompt's real tokens), ``-1`` at the
    last token, where nothing follows."""
    pos = torch.as_tensor(list(positions), dtype=torch.long)
    return torch.where(pos + 1 < ids.numel(), ids[(pos + 1).clamp(max=ids.numel() - 1)], -1)
