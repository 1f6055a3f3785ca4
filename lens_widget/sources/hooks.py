"""Local activations: forward hooks on the model's own modules, sliced to the chosen positions
as they fire (a recording never holds more than ``sites x positions x d_model`` values), moved
to the decoder's device. Works with any accelerate ``device_map`` and CPU/disk offload."""

from __future__ import annotations

import inspect
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ..arch import ArchSpec, get_path
from ..devices import execution_device
from ..inputs import Batch
from ..sites import parse_site
from .base import ActivationSource, Intervention, Recording

__all__ = ["HookSource", "SiteRecorder", "Intervener"]


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

    def __init__(
        self,
        model: nn.Module,
        arch: ArchSpec,
        sites: Iterable[str],
        extra_final_norm: bool = False,
        out_device: torch.device | None = None,
    ):
        self.model = model
        self.out_device = out_device
        self.arch = arch
        self.blocks: nn.ModuleList = get_path(model, arch.blocks)
        self.n_layers = len(self.blocks)
        self.sites = list(dict.fromkeys(sites))
        self.extra_final_norm = extra_final_norm
        self.select: torch.Tensor | None = None
        self.raw: dict[str, torch.Tensor] = {}
        self.recorded: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        #: the raw points (hook names) the sites are made of
        self.points = self._plan_hooks()

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
        taken = x.detach()[rows, sel.to(x.device)]
        self.raw[name] = taken if self.out_device is None else taken.to(self.out_device)

    def _pre_hook(self, name: str):
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            self._take(name, _input_of(args, kwargs))

        return hook

    def _out_hook(self, name: str):
        def hook(_module: nn.Module, _args: tuple, output: Any) -> None:
            self._take(name, _first_tensor(output))

        return hook

    def __enter__(self) -> "SiteRecorder":
        for name in sorted(self.points):
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


class Intervener:
    """Hooks that apply :class:`Intervention` s during one forward pass (a context manager;
    enter it before a :class:`SiteRecorder`, so that a recording of an intervened site records
    the new value)."""

    def __init__(self, model: nn.Module, arch: ArchSpec, interventions: Sequence[Intervention]):
        self.model, self.arch = model, arch
        self.blocks: nn.ModuleList = get_path(model, arch.blocks)
        self.interventions = list(interventions)
        self.batch = 1  # prompts in the pass (set before it: some blocks flatten [batch * tokens, d])
        self._handles: list[Any] = []
        self._where = [self._module_of(iv) for iv in self.interventions]  # errors before the pass

    def _module_of(self, iv: Intervention) -> tuple[nn.Module, bool]:
        """``(module, pre)``: the hook point whose input (``pre``) or output is the site."""
        kind, layer = parse_site(iv.site, len(self.blocks))
        if kind == "embed":
            return self.blocks[0], True
        if kind == "resid_out":
            return self.blocks[int(layer)], False  # type: ignore[arg-type]
        path = self.arch.attn_out if kind == "attn_out" else self.arch.mlp_out if kind == "mlp_out" else None
        if path is None:
            raise KeyError(
                f"cannot intervene on {iv.site!r} of {self.model.config.model_type}: interventions go on 'embed', "
                "'resid_out_i', and 'attn_out_i' / 'mlp_out_i' where the block has that module"
            )
        return get_path(self.blocks[int(layer)], path), False  # type: ignore[arg-type]

    def __enter__(self) -> "Intervener":
        for iv, (module, pre) in zip(self.interventions, self._where):
            if pre:
                def pre_hook(_m: nn.Module, args: tuple, kwargs: dict, iv: Intervention = iv) -> Any:
                    if args:
                        return (iv.apply(args[0]), *args[1:]), kwargs
                    key = next(k for k in ("hidden_states", "input", "x") if k in kwargs)
                    return args, {**kwargs, key: iv.apply(kwargs[key])}

                self._handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
            else:
                def out_hook(_m: nn.Module, args: tuple, output: Any, iv: Intervention = iv) -> Any:
                    new = iv.apply(_first_tensor(output), self.batch)  # [batch * tokens, d] around OPT's MLP
                    return (new, *output[1:]) if isinstance(output, tuple) else new

                self._handles.append(module.register_forward_hook(out_hook))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class HookSource(ActivationSource):
    """Activations from forward hooks during one ordinary forward pass of the model.

    Inputs go to the embedding's execution device (accelerate's, under a ``device_map``); each
    recorded slice moves to ``out_device`` (the decoder's) as it is taken. The model is never
    moved or copied.
    """

    def __init__(self, model: nn.Module, arch: ArchSpec, out_device: torch.device | None = None):
        self.model = model
        self.arch = arch
        self.out_device = out_device
        params = inspect.signature(model.forward).parameters
        self._logits_to_keep = "logits_to_keep" in params
        # transformers >= 5.2x names the KV cache `cache`; earlier versions `past_key_values`
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @property
    def input_device(self) -> torch.device:
        return execution_device(self.model.get_input_embeddings())

    @torch.inference_mode()
    def record(
        self,
        batch: Batch,
        sites: Sequence[str],
        select: torch.Tensor,
        *,
        want_logits: bool = False,
        final_norm: bool = False,
        past: Any = None,
        use_cache: bool = False,
        interventions: Sequence[Intervention] = (),
    ) -> Recording:
        intervener = Intervener(self.model, self.arch, self.resolved(interventions))
        intervener.batch = int(batch.input_ids.shape[0])
        recorder = SiteRecorder(self.model, self.arch, sites, extra_final_norm=final_norm, out_device=self.out_device)
        recorder.select = select
        kwargs: dict[str, Any] = {"use_cache": bool(use_cache or past is not None)}
        T = int(batch.input_ids.shape[1])
        # only the last token's logits asked for (patch sweeps): the head runs on one row per prompt
        last_only = want_logits and select.shape[1] == 1 and bool((select == T - 1).all()) and bool((batch.lengths == T).all())
        if (not want_logits or kwargs["use_cache"] or last_only) and self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        dev = self.input_device
        mask = batch.attention_mask.to(dev)
        if past is not None:  # the cached tokens are attended to as well
            seen = int(past.get_seq_length())
            mask = torch.cat([torch.ones(mask.shape[0], seen, dtype=mask.dtype, device=dev), mask], 1)
            kwargs[self._cache_arg] = past
        with intervener, recorder:
            out = self.model(input_ids=batch.input_ids.to(dev), attention_mask=mask, **kwargs)
        acts = recorder.finish()
        logits = None
        if kwargs["use_cache"]:  # generation: the logits of the last new token, and the cache
            if want_logits:
                logits = out.logits[:, -1].float()
                logits = logits if self.out_device is None else logits.to(self.out_device)
            return Recording(acts=acts, logits=logits, last_layernorm=acts.pop("last_layernorm", None), past=out.get("cache", out.get("past_key_values")))
        if want_logits:
            rows = torch.arange(select.shape[0], device=out.logits.device)[:, None]
            kept = select if out.logits.shape[1] == T else select - (T - out.logits.shape[1])
            logits = out.logits[rows, kept.to(out.logits.device)].float()
            if self.out_device is not None:
                logits = logits.to(self.out_device)
        return Recording(acts=acts, logits=logits, last_layernorm=acts.pop("last_layernorm", None))
