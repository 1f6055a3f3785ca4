"""The Jacobian lens (J-lens; Gurnee et al., "Verbalizable Representations Form a Global Workspace
in Language Models", Transformer Circuits, July 2026): one fixed ``d x d`` matrix per layer,

    J_l = E_prompts [ 1/n · Σ_{s ≤ t, s, t valid} ∂h_final,t / ∂h_l,s ],

applied before the model's own final norm and unembedding: ``lens_l(h) = unembed(norm(J_l h))``.
It reads what a layer is disposed to make the model say (at this and later positions), not only
the next token. How it is fitted here: :mod:`lens_widget.jacobian_training`.

**Which residual a published ``J[layer]`` reads.** The reference package (anthropics/jacobian-lens,
``jlens/hooks.py`` ``ActivationRecorder``: a forward hook on ``model.layers[layer]`` storing the
block's output; ``jlens/fitting.py``: target = block ``n_layers - 1``, sources default to
``range(target)``), and so Neuronpedia's files (``neuronpedia/jacobian-lens``) built with it,
index by the residual stream **after** block ``layer``. Here that is the site
``resid_out_{layer}``:

====================  =========================================================
site                  decoded as
====================  =========================================================
``embed``             ``J_embed h`` — only in files fitted here (our extra key
                      ``"J_embed"``; published files have no embedding matrix)
``resid_out_l``       ``J[l] h`` for ``l = 0 … L-2`` present in the file
``resid_out_{L-1}``   ``h``: the last block is the plain unembedding (= the
                      model's logits); ``J`` there is the identity by definition
anything else         :class:`~lens_widget.decoders.UnsupportedSiteError`
====================  =========================================================

**Files.** The published schema, read with ``torch.load(weights_only=True)`` (no pickle code
runs): ``{"J": {layer: [d, d] tensor}, "n_prompts": int, "d_model": int, "source_layers":
[int]}``. :meth:`JacobianLens.save` writes the same schema (readable by the reference package)
plus ``"J_embed"`` when fitted and ``"lens_widget"``: our metadata (model, layers, unembedding
fingerprint, transformers / torch versions, the fit's command, seed, tokens and estimator).
Loading a file whose recorded transformers or torch version differs from the running one warns:
Neuronpedia found published lenses mismatched after a library fix.

**The shipped lens** (:meth:`JacobianLens.default`): ``lens_widget/lenses/smollm2-135m-instruct/
jacobian_lens.safetensors``, the full fit stored by :func:`lens_widget.lowrank.save_matrices`
(factored at a rank measured to keep quality, float16) with the fit's and the conversion's
records as metadata (:meth:`JacobianLens.save_shipped`, made by ``scripts/ship_jlens.py``).
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from .decoders import Decoder, UnsupportedSiteError, refused_sites
from .hooked import HookedModel, as_hooked_model
from .jacobian_training import fit_jacobian
from .lens_files import LensFileError, hidden_size, lens_environment, save_atomic, unembed_hash
from .lowrank import load_matrices, save_matrices
from .sites import parse_site
from .tuned_lens import SHIPPED_LENS_DIR

__all__ = ["JacobianLens", "LensFileError", "JLENS_REPO_ID", "SHIPPED_JLENS_FILE", "MAX_TRAVEL_BYTES", "lens_filename", "fit_jacobian_lens"]

#: Where Neuronpedia publishes fitted lenses (a Hugging Face *model* repo).
JLENS_REPO_ID = "neuronpedia/jacobian-lens"
JLENS_REPO_TYPE = "model"
#: The lens shipped for the embedded SmolLM2-135M-Instruct (beside the tuned lens; its README says how it was made).
SHIPPED_JLENS_FILE = SHIPPED_LENS_DIR / "jacobian_lens.safetensors"
#: The most bytes of J matrices one remote (NDIF) request may carry (:meth:`JacobianLens.in_trace_maps`).
MAX_TRAVEL_BYTES = 512 * 2**20
#: The ``format`` of a shipped (safetensors) Jacobian-lens file.
SHIPPED_FORMAT = "lens_widget Jacobian lens v1"
#: Our metadata key inside a lens file (ignored by other readers of the schema).
META_KEY = "lens_widget"
EMBED_KEY = "J_embed"


def lens_filename(model_name: str) -> str:
    """``<model>_jacobian_lens.pt``: the published file name for a Hub model id (its last part)."""
    return f"{str(model_name).rstrip('/').rsplit('/', 1)[-1]}_jacobian_lens.pt"


class JacobianLens(Decoder):
    """A :class:`~lens_widget.decoders.Decoder` that applies ``J_l`` before the final norm.

    ``JacobianLens(model, jacobians)`` with ``jacobians = {layer: [d, d]}`` (``layer`` as in the
    published files: the output of block ``layer``; ``"embed"`` for the embeddings);
    :meth:`identity` gives the logit lens through this code path, :meth:`from_pretrained` reads
    a published or saved file and :meth:`fit` fits one here.

    The matrices are kept in ``dtype`` (default float32) on the decoder's device; a
    half-precision ``dtype`` (e.g. a float16 file kept as is with ``dtype=None``) is upcast per
    call, so ``J h`` is always computed in float32.
    """

    name = "jacobian lens"

    def __init__(
        self,
        model: Any,
        jacobians: Mapping[int | str, torch.Tensor] | None = None,
        *,
        n_prompts: int = 0,
        metadata: dict[str, Any] | None = None,
        dtype: torch.dtype | None = torch.float32,
        tokenizer: Any = None,
    ):
        super().__init__(as_hooked_model(model, tokenizer))
        self.n_layers = self.model.num_layers
        self.d_model = hidden_size(self.model)
        self.n_prompts = int(n_prompts)
        self.metadata: dict[str, Any] = dict(metadata or {})
        #: ``{layer: J}`` for block outputs (``0 … L-2``); ``J_embed`` for the embeddings or None.
        self.jacobians: dict[int, torch.Tensor] = {}
        self.J_embed: torch.Tensor | None = None
        for key, J in (jacobians or {}).items():
            self.put_matrix(key, J, dtype, "jacobians")

    def put_matrix(self, key: int | str, J: torch.Tensor, dtype: torch.dtype | None, source: str) -> None:
        """Set the matrix of ``key`` (a block index or ``"embed"``), checked against the model; ``source`` names it in errors."""
        d = self.d_model
        if not isinstance(J, torch.Tensor) or not J.is_floating_point():
            raise LensFileError(f"{source}: J[{key!r}] is not a floating-point tensor")
        if tuple(J.shape) != (d, d):
            raise LensFileError(
                f"{source}: J[{key!r}] has shape {list(J.shape)}, but {self.model.name} needs [{d}, {d}] "
                f"(d_model {d}): this lens was made for another model"
            )
        J = J.detach().to(device=self.device, dtype=dtype or J.dtype)
        if key == "embed":
            self.J_embed = J
            return
        if isinstance(key, bool) or not isinstance(key, int):
            raise LensFileError(f"{source}: layer keys of J must be ints (block indices), got {key!r}")
        if not 0 <= key < self.n_layers - 1:
            raise LensFileError(
                f"{source}: J has layer {key}, but {self.model.name} has {self.n_layers} layers, so J exists only "
                f"for layers 0 … {self.n_layers - 2} (the last block decodes as the model does): "
                "this lens was made for another model"
            )
        self.jacobians[key] = J

    @classmethod
    def identity(cls, model: Any, *, embed: bool = True) -> "JacobianLens":
        """``J = I`` at every layer (and the embeddings): exactly the logit lens."""
        hm = as_hooked_model(model)
        d = hidden_size(hm)
        eye = torch.eye(d)
        jac: dict[int | str, torch.Tensor] = {i: eye for i in range(hm.num_layers - 1)}
        if embed:
            jac["embed"] = eye
        return cls(hm, jac)

    # -- which sites ---------------------------------------------------------------------------
    @property
    def source_layers(self) -> list[int]:
        return sorted(self.jacobians)

    @property
    def supported_sites(self) -> list[str]:
        """The sites this lens decodes, in depth order (the last block's output always)."""
        sites = ["embed"] if self.J_embed is not None else []
        sites += [f"resid_out_{i}" for i in self.source_layers]
        return sites + [f"resid_out_{self.n_layers - 1}"]

    def coverage(self) -> str:
        """Which sites have a J (what errors about sites say)."""
        layers = self.source_layers
        if not layers:
            have = "no fitted layers"
        elif layers == list(range(layers[0], layers[-1] + 1)):
            have = f"'resid_out_{layers[0]}' … 'resid_out_{layers[-1]}'"
        else:
            have = ", ".join(f"'resid_out_{i}'" for i in layers)
        embed = "'embed', " if self.J_embed is not None else ""
        return (f"it has J for {embed}{have}, and decodes 'resid_out_{self.n_layers - 1}' as the model does"
                + ("" if self.J_embed is not None else "; published files have no J for 'embed'"))

    def describe(self) -> str:
        """What this lens is and where it came from: the model, its sites, how it is stored, the
        fit (command, seed, prompts, tokens, estimator, seconds) and the library versions it was
        fitted under, as far as its file recorded them."""
        lines = [f"Jacobian lens for {self.metadata.get('model') or self.model.name} "
                 f"({self.n_layers} layers, d_model {self.d_model}): {self.coverage()}"]
        shipped = self.metadata.get("shipped")
        if isinstance(shipped, dict):
            lines.append(f"stored: rank {shipped.get('rank')} ({shipped.get('dtype')}), from {shipped.get('source')} "
                         f"(sha256 {str(shipped.get('source_sha256', ''))[:12]}…) by `{shipped.get('command')}`")
        fit = self.metadata.get("fit")
        if isinstance(fit, dict):
            lines.append(f"fit: {fit.get('n_prompts', self.n_prompts)} prompts, {fit.get('n_tokens')} tokens, seed {fit.get('seed')}, "
                         f"{fit.get('estimator')}, {fit.get('seconds')} s")
            lines.append(f"command: {fit.get('command')}")
        else:
            lines.append(f"fit: {self.n_prompts} prompts (no record of the fit in its file)")
        env = self.metadata.get("environment")
        if isinstance(env, dict):
            lines.append("fitted under " + ", ".join(f"{k} {v}" for k, v in sorted(env.items())))
        checked = shipped.get("checked") if isinstance(shipped, dict) else None
        if isinstance(checked, dict):
            kl = checked.get("mean_kl", {})
            lines.append(f"checked on {checked.get('tokens')} held-out tokens under "
                         + ", ".join(f"{k} {v}" for k, v in sorted((checked.get("environment") or {}).items()))
                         + f": mean KL(final ‖ lens) {kl.get('J lens')} (logit lens {kl.get('logit lens')})")
        return "\n".join(lines)

    def matrix(self, site: str | None) -> torch.Tensor | None:
        """``J`` for ``site`` (``None`` for the last block: the identity); raises
        :class:`UnsupportedSiteError` for sites without one."""
        kind, layer = None, None
        if site is not None:
            try:
                kind, layer = parse_site(site, self.n_layers)
            except (KeyError, IndexError):
                kind = None
        if kind == "resid_out" and layer == self.n_layers - 1:
            return None
        J = None
        if kind == "embed":
            J = self.J_embed
        elif kind == "resid_out":
            J = self.jacobians.get(int(layer))  # type: ignore[arg-type]
        if J is None:
            raise UnsupportedSiteError(
                f"the jacobian lens cannot decode site {site!r}: {self.coverage()}; resid_mid / attn_out / "
                "mlp_out sites have no J (use the logit lens for them)"
            )
        return J

    def check_sites(self, sites: Sequence[str]) -> None:
        bad = refused_sites(sites, self.matrix)
        if bad:
            raise UnsupportedSiteError(
                f"the jacobian lens has no J for {', '.join(map(repr, bad))}: {self.coverage()} "
                f"(pass sites=lens.supported_sites)"
            )

    # -- decoding ------------------------------------------------------------------------------
    def translate(self, h: torch.Tensor, site: str | None) -> torch.Tensor:
        """``J_l h`` in float32, returned in ``h``'s dtype (what ``prepare`` expects)."""
        J = self.matrix(site)
        if J is None:
            return h
        J = J.to(device=h.device, dtype=torch.float32)  # a no-op for float32 J on h's device
        y = h.float() @ J.T
        return y if h.dtype == torch.float32 else y.to(h.dtype)

    def in_trace_maps(self, sites: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{site: J}`` (float32, CPU) for the sites with a J: what travels *by value* with a
        remote (nnsight / NDIF) request, so the lens runs next to the model exactly as
        :meth:`translate` runs here — ``d² × 4`` bytes a site (SmolLM2: 1.33 MB; all 30: 40 MB).
        Refused past :data:`MAX_TRAVEL_BYTES`, saying why."""
        self.check_sites(sites)
        maps = {}
        for s in sites:
            J = self.matrix(s)
            if J is not None:
                maps[s] = J.detach().to("cpu", torch.float32)
        size = sum(J.numel() * 4 for J in maps.values())
        if size > MAX_TRAVEL_BYTES:
            raise ValueError(
                f"the jacobian lens would send {len(maps)} d x d matrices ({size / 1e6:.0f} MB, float32) with every "
                f"remote request, over the {MAX_TRAVEL_BYTES / 1e6:.0f} MB it may (MAX_TRAVEL_BYTES): ask for fewer sites, "
                "or record the activations (remote record) and decode them here"
            )
        return maps

    # -- files -----------------------------------------------------------------------------------
    def state_dict(self, dtype: torch.dtype | None = torch.float32) -> dict[str, Any]:
        """The published schema (plus ``J_embed`` and our metadata): what :meth:`save` writes."""
        def cast(J: torch.Tensor) -> torch.Tensor:
            return J.detach().to("cpu", dtype=dtype or J.dtype).contiguous()

        state: dict[str, Any] = {
            "J": {i: cast(self.jacobians[i]) for i in self.source_layers},
            "n_prompts": int(self.n_prompts),
            "d_model": int(self.d_model),
            "source_layers": self.source_layers,
        }
        if self.J_embed is not None:
            state[EMBED_KEY] = cast(self.J_embed)
        with self.loaded():
            fingerprint = unembed_hash(self.head.weight)
        meta = dict(self.metadata)
        meta.update(model=self.model.name, n_layers=self.n_layers, d_model=self.d_model, unembed_hash=fingerprint,
                    target="resid_out_%d" % (self.n_layers - 1), layer_index="output of block `layer` (resid_out_<layer>)")
        meta.setdefault("environment", lens_environment())
        state[META_KEY] = _plain(meta)
        return state

    def save(self, path: str | os.PathLike, *, dtype: torch.dtype | None = torch.float32) -> Path:
        """Write the published schema (``dtype``: float32 by default, float16 halves the file; None
        keeps each matrix's own) plus ``J_embed`` and our metadata. Atomic (temp file + rename)."""
        return save_atomic(self.state_dict(dtype), path)

    @classmethod
    def from_state(
        cls,
        state: Any,
        model: Any,
        *,
        source: str = "the state",
        layers: Iterable[int | str] | None = None,
        dtype: torch.dtype | None = torch.float32,
    ) -> "JacobianLens":
        """Build a lens from a loaded file's dict, checking everything (see :meth:`from_pretrained`)."""
        hm = as_hooked_model(model)
        if not isinstance(state, dict):
            raise LensFileError(f"{source} holds a {type(state).__name__}, not a Jacobian-lens dict ({{'J': …}})")
        if "J" not in state:
            hint = "; is it a fit checkpoint? (it has 'sum')" if "sum" in state or "jacobian_sum" in state else ""
            raise LensFileError(f"{source} is not a Jacobian-lens file: no 'J' (keys: {sorted(map(str, state))[:8]}){hint}")
        jac = state["J"]
        if not isinstance(jac, dict):
            raise LensFileError(f"{source}: 'J' holds a {type(jac).__name__}, not a dict {{layer: [d, d] tensor}}")
        meta = state.get(META_KEY) if isinstance(state.get(META_KEY), dict) else {}
        d = hidden_size(hm)
        L = hm.num_layers
        if "d_model" in state and int(state["d_model"]) != d:
            raise LensFileError(
                f"{source} is a lens for d_model {int(state['d_model'])}, but {hm.name} has d_model {d}: "
                "this lens was made for another model"
            )
        if meta.get("n_layers") is not None and int(meta["n_layers"]) != L:
            raise LensFileError(
                f"{source} was fitted on {meta.get('model', 'a model')} with {meta['n_layers']} layers, but {hm.name} "
                f"has {L} layers: this lens was made for another model"
            )
        keys = []
        for k in jac:
            if isinstance(k, str) and k.lstrip("-").isdigit():
                k = int(k)
            keys.append(k)
        bad = [k for k in keys if isinstance(k, int) and not isinstance(k, bool) and not 0 <= k < L - 1]
        if bad:
            raise LensFileError(
                f"{source}: J has layer(s) {sorted(bad)}, but {hm.name} has {L} layers, so J exists only for layers "
                f"0 … {L - 2} (the last block decodes as the model does): this lens was made for another model"
            )
        target = state.get("target_layer")
        if isinstance(target, int) and target not in (L - 1, -1):
            raise LensFileError(f"{source} was fitted toward block {target}, not the last block ({L - 1}) of {hm.name}")
        lens = cls(hm, n_prompts=int(state.get("n_prompts", 0) or 0), metadata=meta)
        for k, J in zip(keys, jac.values()):
            lens.put_matrix(k, J, dtype, source)
        if state.get(EMBED_KEY) is not None:
            lens.put_matrix("embed", state[EMBED_KEY], dtype, source)
        if meta.get("unembed_hash"):
            with lens.loaded():
                mine = unembed_hash(lens.head.weight)
            if mine != meta["unembed_hash"]:
                raise LensFileError(
                    f"{source} was fitted on {meta.get('model', 'another model')}, whose unembedding differs from "
                    f"{hm.name}'s: this lens was made for another model"
                )
        if layers is not None:
            want = []
            for item in layers:
                if isinstance(item, str):
                    kind, layer = parse_site(item, L)
                    want.append("embed" if kind == "embed" else layer)
                else:
                    want.append(int(item))
            missing = [w for w in want if w != L - 1 and (lens.J_embed is None if w == "embed" else w not in lens.jacobians)]
            if missing:
                raise LensFileError(
                    f"{source} has no J for layer(s) {', '.join(map(str, missing))} that were asked for: {lens.coverage()}"
                )
        elif lens.jacobians and not meta:
            have = lens.source_layers
            if have == list(range(len(have))) and len(have) < L - 1:
                warnings.warn(
                    f"{source} has J for layers 0 … {have[-1]} only, as a fit of a {len(have) + 1}-layer model would; "
                    f"{hm.name} has {L} layers: is this lens for another model?",
                    stacklevel=3,
                )
        _warn_versions(meta, source)
        return lens

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        model: Any,
        *,
        filename: str | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
        layers: Iterable[int | str] | None = None,
        dtype: torch.dtype | None = torch.float32,
    ) -> "JacobianLens":
        """Load a Jacobian lens for ``model``.

        ``source`` is a ``.pt`` file, a folder holding one (``filename`` or the single
        ``*_jacobian_lens.pt`` / ``lens.pt`` in it), or a Hub repo id — e.g.
        ``"neuronpedia/jacobian-lens"`` with ``filename`` the path inside it (default
        ``<model>_jacobian_lens.pt``, :func:`lens_filename`). Without a network (or with
        ``HF_HUB_OFFLINE=1``) a Hub file not in the local cache fails at once, saying so.

        ``layers``: layers (ints, or site names) that must be in the file. ``dtype``: what the
        matrices are kept in (float32; ``None`` keeps the file's own, upcast per call).

        Raises :class:`~lens_widget.lens_files.LensFileError` for a file that is missing,
        corrupt, code-carrying (``weights_only=True`` refuses it), not a dict, of the wrong
        shapes, or for another model; warns when the file records other library versions.
        """
        path = _resolve(source, model, filename, revision, cache_dir)
        state = load_file(path)
        return cls.from_state(state, model, source=str(path), layers=layers, dtype=dtype)

    @classmethod
    def default(cls, model: Any = None) -> "JacobianLens":
        """The lens shipped for the embedded SmolLM2-135M-Instruct (``HookedModel.default()``);
        :meth:`describe` says how it was fitted and stored. Refuses any other model."""
        model = HookedModel.default() if model is None else as_hooked_model(model)
        return cls.from_shipped(SHIPPED_JLENS_FILE, model)

    # -- the shipped (safetensors) form -------------------------------------------------------------
    def save_shipped(self, path: str | os.PathLike, rank: int | None, *, record: dict[str, Any] | None = None) -> Path:
        """Write the compact shipped form: every J factored at ``rank`` (``None``: whole) in
        float16 (:func:`lens_widget.lowrank.save_matrices`), with metadata: the model (name,
        layers, width, unembedding fingerprint), the fit's record and environment, and ``record``
        (how this file was made: source, command, ...). Deterministic."""
        mats = {str(i): self.jacobians[i] for i in self.source_layers}
        if self.J_embed is not None:
            mats["embed"] = self.J_embed
        with self.loaded():
            fingerprint = unembed_hash(self.head.weight)
        shipped = dict(record or {}, rank="full" if rank is None else int(rank), dtype="float16")
        meta = {
            "format": SHIPPED_FORMAT,
            "model": str(self.metadata.get("model") or self.model.name),
            "n_layers": str(self.n_layers),
            "d_model": str(self.d_model),
            "unembed_hash": fingerprint,
            "n_prompts": str(self.n_prompts),
            "fit": json.dumps(_plain(self.metadata.get("fit") or {}), sort_keys=True),
            "environment": json.dumps(_plain(self.metadata.get("environment") or {}), sort_keys=True),
            "shipped": json.dumps(_plain(shipped), sort_keys=True),
        }
        return save_matrices(mats, path, rank, meta)

    @classmethod
    def from_shipped(cls, path: str | os.PathLike, model: Any) -> "JacobianLens":
        """Load :meth:`save_shipped`'s file for ``model``, refusing another model (layers, width,
        unembedding fingerprint) with a :class:`LensFileError` that says which."""
        hm = as_hooked_model(model)
        meta, mats = load_matrices(path)
        if meta.get("format") != SHIPPED_FORMAT:
            raise LensFileError(f"{path} is not a shipped Jacobian lens (format {meta.get('format')!r})")
        L, d = hm.num_layers, hidden_size(hm)
        want = (int(meta.get("n_layers", -1)), int(meta.get("d_model", -1)))
        if want != (L, d):
            raise LensFileError(
                f"{path} is a Jacobian lens for {meta.get('model')} ({want[0]} layers, d_model {want[1]}); {hm.name} has "
                f"{L} layers, d_model {d}: this lens was made for another model (use it with HookedModel.default())"
            )
        lens = cls(hm, n_prompts=int(meta.get("n_prompts", 0)), metadata={
            "model": meta.get("model"), **{k: json.loads(meta[k]) for k in ("fit", "environment", "shipped") if k in meta}})
        with lens.loaded():
            mine = unembed_hash(lens.head.weight)
        if mine != meta.get("unembed_hash"):
            raise LensFileError(
                f"{path} was fitted on {meta.get('model')}, whose unembedding differs from {hm.name}'s: this lens was "
                "made for another model (use it with HookedModel.default())"
            )
        for name, J in mats.items():
            lens.put_matrix(name if name == "embed" else int(name), J, torch.float32, str(path))
        _warn_versions(lens.metadata, str(path))
        return lens

    # -- fitting -----------------------------------------------------------------------------------
    @classmethod
    def fit(cls, model: Any, texts: Any, **kwargs: Any) -> "JacobianLens":
        """Fit a lens on ``texts`` here (see :func:`lens_widget.jacobian_training.fit_jacobian`)."""
        return fit_jacobian_lens(model, texts, **kwargs)

    def __repr__(self) -> str:
        layers = self.source_layers
        span = f"{layers[0]}..{layers[-1]}" if layers else "none"
        return (f"JacobianLens({self.model.name!r}, layers={span} of {self.n_layers}, d_model={self.d_model}, "
                f"embed={self.J_embed is not None}, n_prompts={self.n_prompts})")


# -- helpers -----------------------------------------------------------------------------------------
def _plain(x: Any) -> Any:
    """Metadata as plain Python values (what ``weights_only=True`` loads)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if x is None or type(x) in (bool, int, float, str):
        return x
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return float(x)
    return str(x)  # str subclasses (torch.__version__ is a TorchVersion) and the rest


def checked_here(meta: dict[str, Any]) -> bool:
    """Whether a shipped lens's file records a held-out check (``shipped["checked"]``, written by
    ``scripts/ship_jlens.py``) made under this process's transformers and torch."""
    shipped = meta.get("shipped")
    checked = shipped.get("checked") if isinstance(shipped, dict) else None
    env = checked.get("environment") if isinstance(checked, dict) else None
    now = lens_environment()
    return isinstance(env, dict) and all(env.get(lib) == now[lib] for lib in ("transformers", "torch"))


def _warn_versions(meta: dict[str, Any], source: str) -> None:
    """Warn, naming the library, when a lens was fitted under other transformers/torch versions
    than this process's — unless its file records a held-out check made under these very versions
    (:func:`checked_here`): then the fit's versions differ, but the lens was measured where it runs."""
    env = meta.get("environment")
    if not isinstance(env, dict) or checked_here(meta):
        return
    now = lens_environment()
    for lib in ("transformers", "torch"):
        then = env.get(lib)
        if then and then != now[lib]:
            warnings.warn(
                f"{source} was fitted under {lib} {then}; this is {lib} {now[lib]}. A library fix can change a "
                "model's numerics and leave a fitted lens mismatched (Neuronpedia met this): check the lens "
                "(e.g. held-out KL) or refit it",
                stacklevel=4,
            )


def load_file(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` of a lens file: tensors and plain values only, no code runs."""
    path = Path(path)
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Unsupported global" in msg or "GLOBAL" in msg or "REDUCE" in msg:
            raise LensFileError(
                f"{path} holds more than tensors (pickled objects or code) and was refused: a lens file from "
                "elsewhere is untrusted, so it is loaded with torch.load(weights_only=True)"
            ) from None
        raise LensFileError(f"{path} is not a readable lens file (corrupt: {exc})") from None
    except FileNotFoundError:
        raise LensFileError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise LensFileError(f"{path} is a folder, not a lens file") from None
    except Exception as exc:  # zip / EOF / struct errors of a damaged file
        raise LensFileError(f"{path} is not a readable lens file (corrupt or truncated: {type(exc).__name__}: {exc})") from None


def _offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "")
    if flag.upper() in ("1", "ON", "YES", "TRUE"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - a transformers dependency
        return False


def _resolve(source: Any, model: Any, filename: str | None, revision: str | None, cache_dir: str | None) -> Path:
    """The local path of a lens file: a file, a folder holding one, or a Hub download."""
    local = Path(source).expanduser()
    if local.is_file():
        return local
    if local.is_dir():
        if filename:
            if not (local / filename).is_file():
                raise LensFileError(f"{local} has no {filename}")
            return local / filename
        found = sorted(local.glob("*_jacobian_lens.pt")) or sorted(local.glob("lens.pt"))
        if len(found) != 1:
            raise LensFileError(
                f"{local} holds {'no' if not found else len(found)} *_jacobian_lens.pt files; "
                + ("pass filename=" if found else "pass the file itself")
            )
        return found[0]
    name = str(source)
    if local.suffix == ".pt" or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise LensFileError(f"{name} does not exist (not a lens file, a folder holding one, or a Hub repo id)")
    from huggingface_hub import hf_hub_download

    if filename is None:
        filename = lens_filename(as_hooked_model(model).name)
    offline = _offline()
    try:
        return Path(hf_hub_download(
            repo_id=name, repo_type=JLENS_REPO_TYPE, filename=filename, revision=revision, cache_dir=cache_dir,
            local_files_only=offline, etag_timeout=5,
        ))
    except Exception as exc:
        where = f"{filename} of the Hub repo {name}"
        if offline:
            raise LensFileError(
                f"{where} is not in the local cache and HF_HUB_OFFLINE is set: pass a local .pt file"
            ) from None
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise LensFileError(
            f"could not download {where} ({type(exc).__name__}: {first}); without a network pass a local .pt file "
            "(the published schema: {'J': {layer: [d, d]}, 'n_prompts', 'd_model', 'source_layers'})"
        ) from None


def fit_jacobian_lens(model: Any, texts: Any, **kwargs: Any) -> JacobianLens:
    """Fit a :class:`JacobianLens` on ``texts`` (batched VJPs; the options are
    :func:`lens_widget.jacobian_training.fit_jacobian`'s)."""
    hm = as_hooked_model(model)
    jac, n_prompts, meta = fit_jacobian(hm, texts, **kwargs)
    return JacobianLens(hm, jac, n_prompts=n_prompts, metadata=meta)
