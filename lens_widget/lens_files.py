"""Facts shared by every lens file format: the error for an unusable file, and tuned-lens's
fingerprint of the unembedding a lens was trained against."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["LensFileError", "unembed_hash"]


class LensFileError(ValueError):
    """A lens folder that cannot be used: missing, corrupt, unsafe, or for another model."""


def unembed_hash(weight: torch.Tensor) -> str:
    """tuned-lens's fingerprint of an unembedding matrix (``tuned_lens.utils.tensor_hash``)."""
    array = weight.detach().cpu().float().numpy()
    return hashlib.sha256(str.encode(np.array_str(array, precision=1))).hexdigest()
