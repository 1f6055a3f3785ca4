"""Facts shared by every lens file format: the error for an unusable file, tuned-lens's
fingerprint of the unembedding a lens was trained against, the library versions a file records,
and the residual width a lens must match."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["LensFileError", "unembed_hash", "lens_environment", "hidden_size", "save_atomic"]


class LensFileError(ValueError):
    """A lens folder that cannot be used: missing, corrupt, unsafe, or for another model."""


def unembed_hash(weight: torch.Tensor) -> str:
    """tuned-lens's fingerprint of an unembedding matrix (``tuned_lens.utils.tensor_hash``)."""
    array = weight.detach().cpu().float().numpy()
    return hashlib.sha256(str.encode(np.array_str(array, precision=1))).hexdigest()


def lens_environment() -> dict[str, str]:
    """The library versions recorded in a lens file (and compared on load)."""
    import torch
    import transformers

    from ._version import __version__

    return {"transformers": str(transformers.__version__), "torch": str(torch.__version__), "lens_widget": str(__version__)}


def hidden_size(model: Any) -> int:
    """The residual width of a :class:`~lens_widget.hooked.HookedModel` (from its config)."""
    cfg = model.model.config
    d = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None) or getattr(cfg, "d_model", None)
    if not d:
        raise ValueError(f"cannot tell the residual width of {type(model.model).__name__} from its config")
    return int(d)


def save_atomic(state: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``: a reader
    (or a resumed fit) never sees half a file. Creates the folder. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path
