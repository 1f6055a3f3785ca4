"""The tuned lens (Belrose et al. 2023): one learned affine translator per layer before the
model's own final norm and unembedding.

Translator ``i`` reads what Hugging Face calls ``hidden_states[i]`` (0 = the embeddings), exactly
as AlignmentResearch/tuned-lens does: ``embed`` and ``resid_out_0 … resid_out_{L-2}`` have one,
applied residually (``h + W_i h + b_i``); the last block's output has none (it decodes to the
model's logits). Zero translators are exactly the logit lens.

Files: :meth:`TunedLens.from_pretrained` reads tuned-lens's published folders (``config.json`` +
``params.pt`` with ``"{i}.weight"`` / ``"{i}.bias"``, loaded with ``weights_only=True``: no
pickle code runs) and :meth:`TunedLens.save` writes them; :meth:`TunedLens.default` loads the
lens shipped for the embedded SmolLM2 (low-rank safetensors, see ``lens_widget/lenses/``).
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .decoders import Decoder, UnsupportedSiteError, refused_sites
from .hooked import HookedModel, as_hooked_model
from .lens_files import LensFileError, unembed_hash
from .sites import hidden_state_index

__all__ = ["TunedLens", "LensFileError", "TUNED_LENS_REPO_ID", "SHIPPED_LENS_DIR"]

#: Where tuned-lens publishes its lenses (a Hugging Face *space*, subfolder ``lens/<model>``).
TUNED_LENS_REPO_ID = "AlignmentResearch/tuned-lens"
TUNED_LENS_REPO_TYPE = "space"
#: The lens shipped for the embedded SmolLM2-135M-Instruct.
SHIPPED_LENS_DIR = Path(__file__).parent / "lenses" / "smollm2-135m-instruct"


def _hidden_size(model: HookedModel) -> int:
    cfg = model.model.config
    d = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None) or getattr(cfg, "d_model", None)
    if not d:
        raise ValueError(f"cannot tell the residual width of {type(model.model).__name__} from its config")
    return int(d)


class TunedLens(Decoder):
    """A :class:`~lens_widget.decoders.Decoder` with a learned affine translator per layer.

    ``TunedLens(model)`` starts from zero translators (the logit lens). ``translators[i]`` is an
    ``nn.Linear(d, d)`` (float32, on the decoder's device) for ``hidden_states[i]``,
    ``i = 0 … L-1``. Build one with :meth:`from_pretrained`, :meth:`default` or :meth:`train`.
    """

    name = "tuned lens"

    def __init__(self, model: Any, *, bias: bool = True, tokenizer: Any = None):
        super().__init__(as_hooked_model(model, tokenizer))
        self.n_layers = self.model.num_layers
        self.d_model = _hidden_size(self.model)
        self.bias = bool(bias)
        self.translators = nn.ModuleList(
            [nn.Linear(self.d_model, self.d_model, bias=self.bias, device=self.device, dtype=torch.float32) for _ in range(self.n_layers)]
        )
        with torch.no_grad():
            for t in self.translators:
                t.weight.zero_()
                if t.bias is not None:
                    t.bias.zero_()
        #: tuned-lens's config fields (kept from a loaded file; written by :meth:`save`).
        self.config: dict[str, Any] = {
            "base_model_name_or_path": self.model.name,
            "d_model": self.d_model,
            "num_hidden_layers": self.n_layers,
            "bias": self.bias,
            "base_model_revision": None,
            "unembed_hash": None,
            "lens_type": "linear_tuned_lens",
        }

    # -- which sites -----------------------------------------------------------------------
    @property
    def supported_sites(self) -> list[str]:
        """``embed`` and every block output (the last one decodes as the model does)."""
        return ["embed"] + [f"resid_out_{i}" for i in range(self.n_layers)]

    def translator_index(self, site: str | None) -> int | None:
        """``hidden_states`` index of ``site`` (``None`` for the last block: no translator);
        :class:`UnsupportedSiteError` for sites without one."""
        idx = None
        if site is not None:
            try:
                idx = hidden_state_index(site, self.n_layers)
            except (KeyError, IndexError):
                idx = None
        if idx is None:
            raise UnsupportedSiteError(
                f"the tuned lens cannot decode site {site!r}: it has translators for 'embed' and "
                f"'resid_out_0' … 'resid_out_{self.n_layers - 2}', and decodes 'resid_out_{self.n_layers - 1}' "
                "as the model does; resid_mid / attn_out / mlp_out sites have no translator (use the logit lens for them)"
            )
        return None if idx >= self.n_layers else idx

    def check_sites(self, sites: Sequence[str]) -> None:
        bad = refused_sites(sites, self.translator_index)
        if bad:
            raise UnsupportedSiteError(
                f"the tuned lens has no translator for {', '.join(map(repr, bad))}; it decodes "
                f"'embed' and 'resid_out_0' … 'resid_out_{self.n_layers - 1}' (sites=None or 'resid')"
            )

    # -- decoding ----------------------------------------------------------------------------
    def translate(self, h: torch.Tensor, site: str | None) -> torch.Tensor:
        """``h + W_i h + b_i`` in float32, returned in ``h``'s dtype (what ``prepare`` expects)."""
        idx = self.translator_index(site)
        if idx is None:
            return h
        t = self.translators[idx]
        x = h.float()
        y = torch.nn.functional.linear(x, t.weight, t.bias).add_(x)
        return y if h.dtype == torch.float32 else y.to(h.dtype)

    # -- parameters ----------------------------------------------------------------------------
    def parameters(self) -> Iterable[nn.Parameter]:
        return self.translators.parameters()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """tuned-lens's ``params.pt`` layout: ``{"{i}.weight": [d, d], "{i}.bias": [d]}``."""
        return {k: v.detach().cpu().clone() for k, v in self.translators.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], source: str = "the state dict") -> None:
        """Copy translators from tuned-lens's layout, checking every key and shape."""
        d, L = self.d_model, self.n_layers
        if not isinstance(state, dict):
            raise LensFileError(f"{source} holds a {type(state).__name__}, not a dict of tensors")
        want = {f"{i}.weight" for i in range(L)} | ({f"{i}.bias" for i in range(L)} if self.bias else set())
        missing, extra = sorted(want - set(state)), sorted(set(state) - want)
        if missing or extra:
            raise LensFileError(
                f"{source} does not match a tuned lens of {L} layers for {self.model.name}: "
                + (f"missing {', '.join(missing[:6])}{' …' if len(missing) > 6 else ''}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"unexpected {', '.join(extra[:6])}{' …' if len(extra) > 6 else ''}" if extra else "")
            )
        with torch.no_grad():
            for i, t in enumerate(self.translators):
                for name, shape in (("weight", (d, d)), ("bias", (d,))):
                    if name == "bias" and not self.bias:
                        continue
                    v = state[f"{i}.{name}"]
                    if not isinstance(v, torch.Tensor) or not v.is_floating_point():
                        raise LensFileError(f"{source}: {i}.{name} is not a floating-point tensor")
                    if tuple(v.shape) != shape:
                        raise LensFileError(
                            f"{source}: {i}.{name} has shape {list(v.shape)}, but {self.model.name} needs {list(shape)} "
                            f"(d_model {d}): this lens was made for another model"
                        )
                    getattr(t, name).copy_(v.to(torch.float32))

    def zero_(self) -> "TunedLens":
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
        return self

    # -- the published format ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        folder_or_name: str | os.PathLike,
        model: Any,
        *,
        repo_id: str | None = None,
        repo_type: str | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
    ) -> "TunedLens":
        """Load a tuned-lens folder (``config.json`` + ``params.pt``) for ``model``.

        ``folder_or_name`` is a local folder, or a name in tuned-lens's published collection
        (e.g. ``"gpt2"``, ``"EleutherAI/pythia-160m-deduped"``), resolved the way tuned-lens
        does: ``lens/<name>/`` of the Hugging Face space ``AlignmentResearch/tuned-lens``
        (``TUNED_LENS_REPO_ID`` / ``TUNED_LENS_REPO_TYPE`` override it). Without a network (or
        with ``HF_HUB_OFFLINE=1``) a name that is not in the local cache fails at once.
        """
        config_path, params_path = _resolve(folder_or_name, repo_id, repo_type, revision, cache_dir)
        try:
            config = json.loads(Path(config_path).read_text())
        except (OSError, ValueError) as exc:
            raise LensFileError(f"{config_path}: not a readable tuned-lens config.json ({exc})") from None
        if not isinstance(config, dict):
            raise LensFileError(f"{config_path}: expected a JSON object")
        if "unemebd_hash" in config and "unembed_hash" not in config:  # old tuned-lens files
            config["unembed_hash"] = config.pop("unemebd_hash")
        lens = cls(model, bias=bool(config.get("bias", True)))
        for key in ("d_model", "num_hidden_layers"):
            if key not in config:
                raise LensFileError(f"{config_path}: no {key!r}; is this a tuned-lens config.json?")
        got = (int(config["d_model"]), int(config["num_hidden_layers"]))
        if got != (lens.d_model, lens.n_layers):
            raise LensFileError(
                f"{config_path} is a lens for d_model {got[0]}, {got[1]} layers "
                f"({config.get('base_model_name_or_path', 'unknown model')}), but {lens.model.name} has "
                f"d_model {lens.d_model}, {lens.n_layers} layers: this lens was made for another model"
            )
        lens.load_state_dict(load_params(params_path), source=str(params_path))
        lens.config.update({k: v for k, v in config.items() if k in lens.config})
        if config.get("unembed_hash"):
            with lens.loaded():
                mine = unembed_hash(lens.head.weight)
            if mine != config["unembed_hash"]:
                warnings.warn(
                    f"{config_path}: the unembedding hash does not match {lens.model.name}'s; this lens may "
                    "have been trained on another model's unembedding",
                    stacklevel=2,
                )
        return lens

    def save(self, folder: str | os.PathLike) -> Path:
        """Write tuned-lens's format: ``config.json`` and ``params.pt`` (float32 tensors)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with self.loaded():
            config = dict(self.config, unembed_hash=unembed_hash(self.head.weight), d_model=self.d_model,
                          num_hidden_layers=self.n_layers, bias=self.bias)
        torch.save(self.state_dict(), folder / "params.pt")
        (folder / "config.json").write_text(json.dumps(config))
        return folder

    # -- the shipped lens ----------------------------------------------------------------------------
    @classmethod
    def default(cls, model: Any = None) -> "TunedLens":
        """The lens shipped for the embedded SmolLM2-135M-Instruct (``HookedModel.default()``).

        It is stored low-rank (``W_i = U_i V_i``, float16) in ``lens_widget/lenses/``; how it was
        trained and measured is in that folder's ``README.md``.
        """
        from .lowrank import load_lowrank

        model = HookedModel.default() if model is None else as_hooked_model(model)
        return load_lowrank(cls, SHIPPED_LENS_DIR, model)

    # -- training ------------------------------------------------------------------------------------
    @classmethod
    def train(cls, model: Any, texts: Any, **kwargs: Any) -> "TunedLens":
        """Train a lens on ``texts`` with tuned-lens's recipe (see
        :func:`lens_widget.tuned_training.train_tuned_lens` for the options)."""
        from .tuned_training import train_tuned_lens

        kwargs.setdefault("lens", None)
        if kwargs["lens"] is None:
            kwargs["lens"] = cls(as_hooked_model(model))
        return train_tuned_lens(model, texts, **kwargs)

    def __repr__(self) -> str:
        return f"TunedLens({self.model.name!r}, layers={self.n_layers}, d_model={self.d_model})"


def load_params(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``params.pt`` through ``torch.load(weights_only=True)``: tensors only, no pickle code runs."""
    path = Path(path)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise LensFileError(
                f"{path} holds more than tensors (pickled objects or code) and was refused: a lens "
                "file from elsewhere is untrusted, so it is loaded with torch.load(weights_only=True)"
            ) from None
        raise LensFileError(f"{path} is not a readable params.pt (corrupt: {exc})") from None
    except FileNotFoundError:
        raise LensFileError(f"{path} does not exist") from None
    except Exception as exc:  # zip / EOF / struct errors of a damaged file
        raise LensFileError(f"{path} is not a readable params.pt (corrupt or truncated: {type(exc).__name__}: {exc})") from None
    return state


def _offline() -> str | None:
    """Why the hub cannot be used (``HF_HUB_OFFLINE``, or one probe found no network), else ``None``."""
    from .loading import hub_unreachable

    return hub_unreachable()


def _resolve(folder_or_name: Any, repo_id: str | None, repo_type: str | None, revision: str | None, cache_dir: str | None) -> tuple[Path, Path]:
    """``(config.json, params.pt)`` of a local folder or of tuned-lens's published collection."""
    local = Path(folder_or_name).expanduser()
    if local.is_dir():
        missing = [f for f in ("config.json", "params.pt") if not (local / f).is_file()]
        if missing:
            raise LensFileError(f"{local} is not a tuned-lens folder: {' and '.join(missing)} missing (it needs config.json and params.pt)")
        return local / "config.json", local / "params.pt"
    name = str(folder_or_name)
    if local.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise LensFileError(f"{name} is not a tuned-lens folder (no such directory with config.json and params.pt)")
    from huggingface_hub import hf_hub_download

    repo_id = repo_id or os.environ.get("TUNED_LENS_REPO_ID") or TUNED_LENS_REPO_ID
    repo_type = repo_type or os.environ.get("TUNED_LENS_REPO_TYPE") or TUNED_LENS_REPO_TYPE
    offline = _offline()
    paths = []
    try:
        for filename in ("config.json", "params.pt"):
            paths.append(Path(hf_hub_download(
                repo_id=repo_id, repo_type=repo_type, filename=filename, subfolder=f"lens/{name}",
                revision=revision, cache_dir=cache_dir, local_files_only=offline is not None, etag_timeout=5,
            )))
    except Exception as exc:
        where = f"lens/{name}/ of the {repo_type} {repo_id}"
        if offline:
            raise LensFileError(
                f"{name!r} is not a local folder, and downloading {where} is impossible offline "
                f"({offline}; it is not in the cache). Pass a folder holding config.json and params.pt."
            ) from None
        raise LensFileError(
            f"could not download {where} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "without a network pass a local folder holding config.json and params.pt"
        ) from None
    return paths[0], paths[1]
