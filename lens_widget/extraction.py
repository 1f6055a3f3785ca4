"""Sites, hooks and the activation cache: one forward pass, activations at chosen positions.

Sites are points of the residual stream (and the contributions to it):

* ``embed``: the input of block 0 (embeddings, scaled and position-added as the model does);
* ``resid_out_{i}``: the output of block ``i`` (pre final norm, unlike ``hidden_states[-1]``);
* ``resid_mid_{i}``: the residual between attention and MLP of block ``i`` (sequential blocks);
* ``attn_out_{i}`` / ``mlp_out_{i}``: what attention / MLP of block ``i`` add to the residual.

Hooks slice the chosen positions as they fire, so a cache never holds more than
``sites x positions x d_model`` values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .models import ArchSpec, get_path

__all__ = [
    "ExtractionConfig",
    "ActivationCache",
    "SiteRecorder",
    "parse_site",
    "resolve_positions",
    "SITE_KINDS",
]

SITE_KINDS = ("embed", "resid_out", "resid_mid", "attn_out", "mlp_out")
_SITE_RE = re.compile(r"^(resid_out|resid_mid|attn_out|mlp_out)_(-?\d+)$")
_LAST_RE = re.compile(r"^last(?:-(\d+))?$")


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


def resolve_positions(spec: Any, length: int) -> list[int]:
    """Token indices named by ``spec`` in a prompt of ``length`` tokens, ascending, unique.

    ``spec`` is one item or a list of: ``"all"``, ``"last"``, ``"last-N"`` (the token N before
    the last), an int (negative counts from the end) or a ``slice``.
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
            else:
                raise ValueError(f"unknown position {item!r}: use 'all', 'last', 'last-N', an int or a slice")
        elif isinstance(item, slice):
            out.update(range(length)[item])
        elif isinstance(item, (int,)) or hasattr(item, "__index__"):
            p = int(item)
            if not -length <= p < length:
                raise IndexError(f"position {p} is outside a {length}-token prompt")
            out.add(p % length)
        else:
            raise ValueError(f"unknown position {item!r}")
    if not out:
        raise ValueError(f"positions {spec!r} select no token of a {length}-token prompt")
    return sorted(out)


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


def _first_tensor(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, (tuple, list)) else x


def _input_of(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    for key in ("hidden_states", "input", "x"):
        if key in kwargs:
            return kwargs[key]
    raise RuntimeError("could not find the hidden states among the hooked module's inputs")


class SiteRecorder:
    """Hooks that record the residual stream at ``sites``, sliced to ``select`` positions.

    Use as a context manager around one forward pass; ``select`` is a ``[batch, P]`` long tensor
    of token indices. After the pass, ``recorded[site]`` is ``[batch, P, d]``.
    """

    def __init__(self, model: nn.Module, arch: ArchSpec, sites: Iterable[str], extra_final_norm: bool = False):
        self.model = model
        self.arch = arch
        self.blocks: nn.ModuleList = get_path(model, arch.blocks)
        self.n_layers = len(self.blocks)
        self.sites = list(dict.fromkeys(sites))
        self.extra_final_norm = extra_final_norm
        self.select: torch.Tensor | None = None
        self.raw: dict[str, torch.Tensor] = {}
        self.recorded: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self._plan = self._plan_hooks()

    # -- which raw points each site needs ----------------------------------------------------
    def _plan_hooks(self) -> set[str]:
        parallel = self.arch.is_parallel(self.model.config)
        need: set[str] = set()
        for site in self.sites:
            kind, layer = parse_site(site, self.n_layers)
            if kind == "embed":
                need.add("in_0")
            elif kind == "resid_out":
                need.add(f"out_{layer}")
            elif kind == "resid_mid":
                if parallel or self.arch.mid_norm is None:
                    raise KeyError(f"{site!r}: {self.model.config.model_type} blocks run attention and MLP in parallel; there is no resid_mid")
                need.add(f"mid_{layer}")
            else:
                module = self.arch.attn_out if kind == "attn_out" else self.arch.mlp_out
                if module is not None:
                    need.add(f"{kind}_{layer}")
                elif not parallel and self.arch.mid_norm is not None:
                    need.update({f"mid_{layer}", f"in_{layer}" if kind == "attn_out" else f"out_{layer}"})
                else:
                    raise KeyError(f"{site!r} is not available for {self.model.config.model_type}")
        if self.extra_final_norm:
            need.add("final_norm")
        return need

    def _take(self, name: str, x: torch.Tensor) -> None:
        sel = self.select
        if sel is None:
            raise RuntimeError("SiteRecorder.select must be set before the forward pass")
        if x.dim() == 2:  # some blocks (OPT) flatten [batch * tokens, d] around the MLP
            x = x.view(sel.shape[0], -1, x.shape[-1])
        rows = torch.arange(x.shape[0], device=x.device)[:, None]
        self.raw[name] = x.detach()[rows, sel.to(x.device)]

    def _pre_hook(self, name: str):
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            self._take(name, _input_of(args, kwargs))

        return hook

    def _out_hook(self, name: str):
        def hook(_module: nn.Module, _args: tuple, output: Any) -> None:
            self._take(name, _first_tensor(output))

        return hook

    def __enter__(self) -> "SiteRecorder":
        for name in sorted(self._plan):
            kind, _, idx = name.rpartition("_")
            if name == "final_norm":
                module, pre = get_path(self.model, self.arch.final_norm), False
            elif kind == "in":
                module, pre = self.blocks[int(idx)], True
            elif kind == "out":
                module, pre = self.blocks[int(idx)], False
            elif kind == "mid":
                module, pre = get_path(self.blocks[int(idx)], self.arch.mid_norm), True
            else:
                path = self.arch.attn_out if kind == "attn_out" else self.arch.mlp_out
                module, pre = get_path(self.blocks[int(idx)], path), False
            if pre:
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(name), with_kwargs=True))
            else:
                self._handles.append(module.register_forward_hook(self._out_hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def finish(self) -> dict[str, torch.Tensor]:
        """Sites from the raw captures of the last pass (differences where needed)."""
        raw, out = self.raw, {}
        for site in self.sites:
            kind, layer = parse_site(site, self.n_layers)
            if kind == "embed":
                out[site] = raw["in_0"]
            elif kind == "resid_out":
                out[site] = raw[f"out_{layer}"]
            elif kind == "resid_mid":
                out[site] = raw[f"mid_{layer}"]
            elif f"{kind}_{layer}" in raw:
                out[site] = raw[f"{kind}_{layer}"]
            elif kind == "attn_out":
                out[site] = raw[f"mid_{layer}"] - raw[f"in_{layer}"]
            else:
                out[site] = raw[f"out_{layer}"] - raw[f"mid_{layer}"]
        if "final_norm" in raw:
            out["last_layernorm"] = raw["final_norm"]
        self.recorded = out
        self.raw = {}
        return out
