"""Activations from an nnsight trace: a local ``nnsight.LanguageModel``, or one on NDIF.

The lens runs *inside* the trace. With ``remote=False`` the trace runs here and its body calls
the engine's own reduction (the same code as the hook path) on the recorded rows. With
``remote=True`` (NDIF) or ``remote="local"`` (nnsight's simulation of NDIF: the request is
serialised exactly as for the server and run here), the body calls
:func:`lens_widget.sources.intrace.in_trace`, a torch-only function shipped by value, with plain
data; only the reduced arrays are saved and come back. The architecture registry says where the
blocks, norm and head are: the trace reads the same module paths as the hooks.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Sequence

import torch

from ..arch import ArchSpec
from ..inputs import Batch
from ..sites import parse_site
from .base import ActivationRef, ActivationSource, Forward, Intervention, Recording, Work, wanted_refs
from .hooks import SiteRecorder
from .intrace import ORDER

__all__ = ["NNsightSource", "NDIFError", "ndif_api_key", "remote_error", "typing_kept"]

#: Modules whose code must travel by value to NDIF (the server does not have lens_widget).
BY_VALUE = ("lens_widget.schema", "lens_widget.unembed", "lens_widget.certified", "lens_widget.reduce", "lens_widget.contributions", "lens_widget.sources.intrace")


class NDIFError(RuntimeError):
    """A remote (NDIF) request could not be made or was refused."""


def ndif_api_key() -> str | None:
    """The NDIF API key: nnsight's own config (``nnsight.CONFIG.API.APIKEY``, which
    ``nnsight login`` / ``CONFIG.set_default_api_key`` write), else ``$NDIF_API_KEY``."""
    try:
        import nnsight

        key = nnsight.CONFIG.API.APIKEY
    except Exception:  # pragma: no cover - config unreadable
        key = None
    return key or os.environ.get("NDIF_API_KEY") or None


@contextlib.contextmanager
def typing_kept() -> Iterator[None]:
    """Put the ``typing`` module's attributes back after a ``remote="local"`` trace.

    nnsight's local simulation of NDIF hides every module outside the server's list while it
    deserialises a request, ``typing_extensions`` included; a second ``typing_extensions`` is
    then imported and re-patches ``typing`` (``_collect_parameters``) with its own sentinels. Left
    so, the process's next first ``torch.compile`` fails ("Type parameter ~_T without a default
    follows type parameter with a default") and the lens silently loses its compiled kernels."""
    import typing

    saved = dict(vars(typing))
    try:
        yield
    finally:
        for name, value in saved.items():
            if vars(typing).get(name) is not value:
                setattr(typing, name, value)


def _module_name(model: torch.nn.Module, module: torch.nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    raise KeyError(f"{type(module).__name__} is not a submodule of the model")


class NNsightSource(ActivationSource):
    """Runs the model through ``language_model.trace`` (nnsight 0.8).

    ``remote``: ``False`` (trace here), ``True`` (NDIF; needs an API key and a hosted model) or
    ``"local"`` (serialise as for NDIF, run here: what CI uses to test the remote path).
    """

    refs_share_a_forward = False  # token_logits records the refs in a trace of their own, in the job

    def __init__(self, language_model: Any, arch: ArchSpec, remote: bool | str = False, out_device: torch.device | None = None):
        if remote not in (False, True, "local"):
            raise ValueError(f"remote must be False, True or 'local', got {remote!r}")
        self.lm = language_model
        self.model: torch.nn.Module = language_model.__dict__["_module"]
        self.arch = arch
        self.mode: bool | str = remote
        self.remote = remote is not False
        self.out_device = out_device
        head = self.model.get_output_embeddings()
        post = None
        if arch.post_norm:
            from ..arch import get_path

            try:
                post = arch.post_norm if get_path(self.model, arch.post_norm) is not None else None
            except AttributeError:
                post = None
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        norm_dtype = next((p.dtype for p in self._norm_params()), head.weight.dtype)
        #: where the in-trace lens finds the decoder's modules (plain data: it travels)
        self.spec: dict[str, Any] = {
            "norm": arch.final_norm,
            "post": post,
            "head": _module_name(self.model, head),
            "softcap": float(cap) if cap else None,
            "in_dtype": str(norm_dtype).replace("torch.", ""),
        }
        self._registered = False

    def _norm_params(self):
        from ..arch import get_path

        return get_path(self.model, self.arch.final_norm).parameters() if self.arch.final_norm else iter(())

    # -- what the trace reads ------------------------------------------------------------------
    def plan(self, sites: Sequence[str], final_norm: bool = False, interventions: Sequence[Intervention] = (), reads: Sequence[Sequence[Any]] = (),
             refs: dict | None = None) -> tuple[list[tuple[str, str, str]], dict[str, tuple[str, str | None]], dict[str, list[dict[str, Any]]]]:
        """The raw points to read (and to change), in forward order, how each site is made of
        them (the same points and differences as :class:`SiteRecorder`'s hooks), and the
        interventions to apply at each point (plain data). ``reads``: more module values a task
        needs, ``(name, layer, order inside the block, module path, "input" | "output")`` (order
        as :data:`~lens_widget.sources.intrace.ORDER`; a fraction between two of its points):
        each comes back under its name. ``refs``: where the session's earlier traces hold the
        :class:`~lens_widget.sources.ActivationRef` values of interventions (:meth:`_ref_traces`)."""
        rec = SiteRecorder(self.model, self.arch, sites, extra_final_norm=final_norm)
        n = rec.n_layers
        where: dict[str, tuple[tuple[int, int], str, str]] = {}
        for name in rec.points:
            if name == "final_norm":
                where[name] = ((n, 9), self.arch.final_norm, "output")
                continue
            kind, _, idx = name.rpartition("_")
            where[name] = self._point(kind, int(idx))
        patches: dict[str, list[dict[str, Any]]] = {}
        for iv in interventions:
            name = self._patch_point(iv, n)
            if name not in where:
                kind, _, idx = name.rpartition("_")
                where["patch:" + name] = self._point(kind, int(idx))
                name = "patch:" + name
            data = iv.as_data()
            if isinstance(iv.value, ActivationRef):
                ref = iv.value
                data["ref"] = (refs or {})[id(ref.batch), ref.site, int(ref.position)]
            patches.setdefault(name, []).append(data)
        recipe: dict[str, tuple[str, str | None]] = {}
        seen = {(path, io): name for name, (_, path, io) in where.items() if not name.startswith("patch:")}
        for name, layer, order, path, io in reads:
            if (path, io) in seen:  # a point already read: one read, two names
                recipe[name] = (seen[path, io], None)
                continue
            where[name] = ((int(layer), order), path, io)
            seen[path, io] = name
            recipe[name] = (name, None)
        points = sorted((order, name, path, io) for name, (order, path, io) in where.items())
        for site in rec.sites:
            kind, layer = parse_site(site, n)
            if kind == "embed":
                recipe[site] = ("in_0", None)
            elif kind == "resid_out":
                recipe[site] = (f"out_{layer}", None)
            elif kind == "resid_mid":
                recipe[site] = (f"mid_{layer}", None)
            elif f"{kind}_{layer}" in rec.points:
                recipe[site] = (f"{kind}_{layer}", None)
            elif kind == "attn_out":
                recipe[site] = (f"mid_{layer}", f"in_{layer}")
            else:
                recipe[site] = (f"out_{layer}", f"mid_{layer}")
        if final_norm:
            recipe["last_layernorm"] = ("final_norm", None)
        return [(name, path, io) for _, name, path, io in points], recipe, patches

    def _point(self, kind: str, i: int) -> tuple[tuple[int, int], str, str]:
        """(forward order, module path, "input" | "output") of a raw point of block ``i``."""
        blocks = self.arch.blocks
        if kind == "in":
            path, io = f"{blocks}.{i}", "input"
        elif kind == "out":
            path, io = f"{blocks}.{i}", "output"
        elif kind == "mid":
            path, io = f"{blocks}.{i}.{self.arch.mid_norm}", "input"
        else:
            sub = self.arch.attn_out if kind == "attn_out" else self.arch.mlp_out
            path, io = f"{blocks}.{i}.{sub}", "output"
        return (i, ORDER[kind]), path, io

    def _patch_point(self, iv: Intervention, n: int) -> str:
        """The raw point an intervention changes (as the hook source's :class:`Intervener`)."""
        kind, layer = parse_site(iv.site, n)
        if kind == "embed":
            return "in_0"
        if kind == "resid_out":
            return f"out_{layer}"
        if (kind == "attn_out" and self.arch.attn_out) or (kind == "mlp_out" and self.arch.mlp_out):
            return f"{kind}_{layer}"
        raise KeyError(f"cannot intervene on {iv.site!r}: interventions go on 'embed', 'resid_out_i', and 'attn_out_i' / "
                       "'mlp_out_i' where the block has that module")

    # -- running a trace -----------------------------------------------------------------------
    def _check_remote(self) -> None:
        if self.mode is not True:
            return
        if not ndif_api_key():
            raise NDIFError(
                "remote=True runs on NDIF and needs an API key: none in nnsight's config "
                "(nnsight.CONFIG.API.APIKEY; set it with `nnsight login` or "
                "nnsight.CONFIG.set_default_api_key(key)) nor in the NDIF_API_KEY environment variable. "
                "Get a key at https://login.ndif.us; or use remote=False (here) / remote='local' (test the request here)."
            )
        repo = getattr(self.lm, "repo_id", None) or getattr(self.model.config, "_name_or_path", "")
        if not repo or os.path.isdir(str(repo)) or str(repo).count("/") != 1:
            raise NDIFError(
                f"remote=True needs the model's Hugging Face repo id (NDIF hosts models by id), got {repo!r}: "
                "build it as TransformersModel('meta-llama/Llama-3.1-8B', task='text-generation') or set its repo_id"
            )

    def _register(self) -> None:
        if self._registered or self.mode is False:
            return
        import importlib

        import nnsight

        for name in BY_VALUE:
            nnsight.register(importlib.import_module(name))
        self._registered = True

    def _trace_errors(self):
        """Turn what NDIF (or the way to it) answers into an :class:`NDIFError`."""

        @contextlib.contextmanager
        def guard():
            try:
                yield
            except NDIFError:
                raise
            except Exception as exc:
                if self.mode is True:
                    raise remote_error(exc, self.lm) from exc
                raise

        return guard()

    def _trace(self, batch: Batch, sites: Sequence[str], select: torch.Tensor, task: str, job: dict | None = None, final_norm: bool = False,
               interventions: Sequence[Intervention] = (), refs: dict | None = None, back: bool = True) -> dict[str, Any]:
        """One trace of a session as plain data (what :meth:`_session` runs)."""
        points, recipe, patches = self.plan(sites, final_norm, interventions, (job or {}).get("reads", ()), refs)
        return {"inputs": {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}, "points": points, "recipe": recipe,
                "select": select.long(), "task": task, "job": job, "patches": patches, "back": back}

    def _ref_traces(self, interventions: Sequence[Intervention]) -> tuple[list[dict[str, Any]], dict[tuple[int, str, int], tuple[int, str, int]]]:
        """Traces that record the :class:`~lens_widget.sources.ActivationRef` values of
        ``interventions`` (one per distinct prompt batch; kept where the model is, never sent
        back), and where each ref is: ``(id(batch), site, position) -> (trace, site, column)``."""
        traces, refs = [], {}
        for key, (batch, sites) in wanted_refs(interventions).items():
            cols = sorted(set().union(*sites.values()))
            for site, positions in sites.items():
                refs.update({(key, site, p): (len(traces), site, cols.index(p)) for p in positions})
            traces.append(self._trace(batch, list(sites), torch.tensor([cols]), "record", {"keep": True}, back=False))
        return traces, refs

    def _session(self, traces: list[dict[str, Any]]) -> list[Any]:
        """Run traces (see :meth:`_trace`) in order as **one** job (``lm.session``: one request to
        NDIF); a later trace's patches may take their values from an earlier trace's record, which
        stays next to the model. The results of the traces marked ``back`` come back. Each body
        calls :func:`~lens_widget.sources.intrace.in_trace` with plain data and the root envoy
        only, so it serialises for NDIF as it stands."""
        import nnsight

        from .intrace import in_trace

        self._check_remote()
        self._register()
        spec, lm = self.spec, self.lm
        kept = typing_kept() if self.mode == "local" else contextlib.nullcontext()
        with self._trace_errors(), torch.no_grad(), kept:
            with lm.session(remote=self.mode):
                outs: list[Any] = []
                for t in traces:
                    with lm.trace(t["inputs"], use_cache=False):
                        outs.append(in_trace(lm, t["points"], t["recipe"], t["select"], t["task"], t["job"], spec, t["patches"], outs))
                result = nnsight.save([out for out, t in zip(outs, traces) if t["back"]])
        return result

    def _in_trace(self, batch: Batch, sites: Sequence[str], select: torch.Tensor, task: str, job: dict | None = None, final_norm: bool = False,
                  interventions: Sequence[Intervention] = ()) -> dict[str, Any]:
        """One task in one trace (after the traces that record its interventions' refs), one job."""
        before, refs = self._ref_traces(interventions)
        return self._session(before + [self._trace(batch, sites, select, task, job, final_norm, interventions, refs)])[0]

    # -- the seam ------------------------------------------------------------------------------
    def record(self, batch: Batch, sites: Sequence[str], select: torch.Tensor, *, want_logits: bool = False, final_norm: bool = False,
               past: Any = None, use_cache: bool = False, interventions: Sequence[Intervention] = ()) -> Recording:
        if use_cache or past is not None:
            raise NotImplementedError("generate() with an nnsight model is not supported yet: wrap the transformers model itself")
        before, refs = self._ref_traces(interventions)
        traces = before + [self._trace(batch, sites, select, "record", None, final_norm, interventions, refs)]
        if want_logits:  # the model's own logits at the selected positions: a second trace of the same job
            traces.append(self._trace(batch, [], select, "logits", None, False, interventions, refs))
        got = self._session(traces)
        acts, logits = got[0], got[1]["logits"] if want_logits else None
        if self.out_device is not None:
            acts = {k: v.to(self.out_device) for k, v in acts.items()}
            logits = None if logits is None else logits.to(self.out_device)
        return Recording(acts=acts, logits=logits, last_layernorm=acts.pop("last_layernorm", None))

    def token_logits(self, forwards: Sequence[Forward], ids: torch.Tensor, done: Any = None) -> list[torch.Tensor]:
        """Every forward as one trace of **one** session (one request to NDIF), after the traces
        that record their interventions' refs (which never come back); only the logits of
        ``ids`` at each forward's ``select`` come back."""
        ivs = [iv for f in forwards for iv in f.interventions]
        before, refs = self._ref_traces(ivs)
        job = {"ids": torch.as_tensor(ids, dtype=torch.long)}
        got = self._session(before + [self._trace(f.batch, [], f.select, "logits", job, False, f.interventions, refs) for f in forwards])
        out = [g["logits"] if self.out_device is None else g["logits"].to(self.out_device) for g in got]
        for i in range(len(out)):
            if done is not None:
                done(i)
        return out

    def reduce(self, batch: Batch, sites: Sequence[str], select: torch.Tensor, work: Any, interventions: Sequence[Intervention] = ()) -> Any:
        if isinstance(work, Work) and self.remote and work.task is not None:
            result = self._in_trace(batch, sites, select, work.task, work.job, interventions=interventions)
            return work.accept(result) if work.accept is not None else result
        local = work.local if isinstance(work, Work) else work
        if local is None:
            raise TypeError("this work has no local form")
        if self.remote:  # a closure cannot travel: bring the rows back, then work here
            return local(self.record(batch, sites, select, interventions=interventions).acts)
        # remote=False: the engine's own reduction runs inside the trace's body, next to the model
        import nnsight

        from .intrace import record as record_points

        points, recipe, patches = self.plan(sites, interventions=self.resolved(interventions))
        sel, lm, out_device = select.long(), self.lm, self.out_device
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        with torch.no_grad():
            with lm.trace(inputs, use_cache=False):
                acts = record_points(lm, points, recipe, sel, patches)
                if out_device is not None:
                    acts = {k: v.to(out_device) for k, v in acts.items()}
                value = nnsight.save(local(acts))
        return value


def remote_error(exc: Exception, lm: Any) -> NDIFError:
    """A clear message for what NDIF (or the way to it) answered."""
    repo = getattr(lm, "repo_id", None)
    text = f"{type(exc).__name__}: {exc}"
    low = text.lower()
    if "name or service not known" in low or "connection" in low or "websocket" in low or "timed out" in low:
        host = "https://api.ndif.us"
        try:
            import nnsight

            host = nnsight.CONFIG.API.HOST or host
        except Exception:
            pass
        return NDIFError(f"could not reach NDIF at {host} ({text}); check the network, or use remote=False / remote='local'")
    if "not" in low and ("hosted" in low or "running" in low or "found" in low or "deploy" in low):
        return NDIFError(f"NDIF does not host {repo!r} right now ({text}); nnsight.status() lists the hosted models")
    if "key" in low or "401" in low or "403" in low or "unauthor" in low:
        return NDIFError(f"NDIF refused the API key ({text}); check nnsight.CONFIG.API.APIKEY / NDIF_API_KEY")
    return NDIFError(f"the NDIF request for {repo!r} failed: {text}")
