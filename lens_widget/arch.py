"""The architecture registry: where a causal LM's blocks, final norm and unembedding live.

The architecture registry is explicit on purpose: a heuristic that silently picks the wrong norm
gives a lens that looks plausible and is wrong. An unknown architecture raises
:class:`UnknownArchitectureError`, which names the override (:class:`ArchSpec` given by hand).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

__all__ = ["ArchSpec", "ARCHITECTURES", "UnknownArchitectureError", "get_path", "resolve_arch"]


class UnknownArchitectureError(ValueError):
    """The model's architecture is not in the registry and no override was given."""


@dataclass(frozen=True)
class ArchSpec:
    """Where the lens finds things in one architecture (dotted paths from the top model).

    Attributes:
        blocks: the ``nn.ModuleList`` of transformer blocks.
        final_norm: the norm applied after the last block (``None`` if the model has none).
        post_norm: an optional module between the final norm and the unembedding (OPT's
            ``project_out``); skipped when absent or ``None`` on the instance.
        mid_norm: name *inside a block* of the module whose input is the residual between
            attention and MLP (``resid_mid``; usually the pre-MLP norm); ``None`` for
            parallel-attention blocks.
        attn_out / mlp_out: names inside a block of the modules whose output is exactly what
            attention / MLP add to the residual stream; ``None`` means derive it as a difference
            of residuals (needs ``mid_norm``).
        parallel: config -> True when attention and MLP read the same input (no ``resid_mid``).
    """

    blocks: str
    final_norm: str | None
    post_norm: str | None = None
    mid_norm: str | None = None
    attn_out: str | None = None
    mlp_out: str | None = None
    parallel: Callable[[Any], bool] | None = None

    def is_parallel(self, config: Any) -> bool:
        return bool(self.parallel(config)) if self.parallel else self.mid_norm is None


_LLAMA_LIKE = ArchSpec("model.layers", "model.norm", mid_norm="post_attention_layernorm", attn_out="self_attn", mlp_out="mlp")
_GEMMA2_LIKE = ArchSpec(
    "model.layers",
    "model.norm",
    mid_norm="pre_feedforward_layernorm",
    attn_out="post_attention_layernorm",
    mlp_out="post_feedforward_layernorm",
)
_GPT2_LIKE = ArchSpec("transformer.h", "transformer.ln_f", mid_norm="ln_2", attn_out="attn", mlp_out="mlp")

#: model_type -> where things are. Add an entry (or pass ``arch=``) for a new architecture.
ARCHITECTURES: dict[str, ArchSpec] = {
    "gpt2": _GPT2_LIKE,
    "gpt_neo": _GPT2_LIKE,
    "gptj": ArchSpec("transformer.h", "transformer.ln_f", attn_out="attn", mlp_out="mlp"),
    "gpt_neox": ArchSpec(
        "gpt_neox.layers",
        "gpt_neox.final_layer_norm",
        mid_norm="post_attention_layernorm",
        attn_out="attention",
        mlp_out="mlp",
        parallel=lambda c: getattr(c, "use_parallel_residual", True),
    ),
    "opt": ArchSpec(
        "model.decoder.layers",
        "model.decoder.final_layer_norm",
        post_norm="model.decoder.project_out",
        mid_norm="final_layer_norm",
        attn_out=None,
        mlp_out="fc2",
        parallel=lambda c: False,
    ),
    # BLOOM's attention and MLP modules add the residual themselves: contributions are differences.
    "bloom": ArchSpec("transformer.h", "transformer.ln_f", mid_norm="post_attention_layernorm"),
    "falcon": ArchSpec(
        "transformer.h",
        "transformer.ln_f",
        mid_norm="post_attention_layernorm",
        attn_out="self_attention",
        mlp_out="mlp",
        parallel=lambda c: bool(getattr(c, "parallel_attn", True) or getattr(c, "new_decoder_architecture", False)),
    ),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "mixtral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _GEMMA2_LIKE,
    "gemma3_text": _GEMMA2_LIKE,
    "phi": ArchSpec("model.layers", "model.final_layernorm", attn_out="self_attn", mlp_out="mlp"),
    "phi3": _LLAMA_LIKE,
    "stablelm": ArchSpec(
        "model.layers",
        "model.norm",
        mid_norm="post_attention_layernorm",
        attn_out="self_attn",
        mlp_out="mlp",
        parallel=lambda c: getattr(c, "use_parallel_residual", False),
    ),
    "olmo": _LLAMA_LIKE,
    "olmo2": ArchSpec(
        "model.layers",
        "model.norm",
        mid_norm="mlp",
        attn_out="post_attention_layernorm",
        mlp_out="post_feedforward_layernorm",
    ),
}


def get_path(root: nn.Module, path: str | None) -> Any:
    """``root.a.b.c`` for ``"a.b.c"`` (``None`` for ``None``)."""
    if path is None:
        return None
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_arch(model: nn.Module, arch: ArchSpec | None = None) -> ArchSpec:
    """The spec for ``model``: ``arch`` if given, else the registry entry; checked against the model."""
    model_type = getattr(model.config, "model_type", None)
    if arch is None:
        arch = ARCHITECTURES.get(model_type or "")
        if arch is None:
            raise UnknownArchitectureError(
                f"lens_widget does not know the architecture {model_type!r} "
                f"({type(model).__name__}); supported: {', '.join(sorted(ARCHITECTURES))}. "
                "Pass the module paths by hand, e.g. HookedModel.from_model(model, tokenizer, "
                "arch=ArchSpec(blocks='model.layers', final_norm='model.norm')), after checking that "
                "lens(last block) reproduces the model's logits (LogitLens(model).check_lens())."
            )
    try:
        blocks = get_path(model, arch.blocks)
        get_path(model, arch.final_norm)
    except AttributeError as exc:
        raise UnknownArchitectureError(
            f"{type(model).__name__}: the architecture spec does not match the model ({exc}); "
            "pass arch=ArchSpec(...) with the right module paths."
        ) from None
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise UnknownArchitectureError(f"{arch.blocks!r} is not a non-empty ModuleList of blocks")
    if model.get_output_embeddings() is None:
        raise UnknownArchitectureError(f"{type(model).__name__} has no output embedding (lm_head)")
    return arch
