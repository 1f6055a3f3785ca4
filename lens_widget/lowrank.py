"""Low-rank storage of per-layer ``d x d`` matrices: each truncated to rank ``r`` by SVD
(``W ≈ U V``), float16 safetensors, with the model's fingerprint in the metadata.

Two users: the shipped tuned lens (:func:`save_lowrank` / :func:`load_lowrank`: translators
``W_i`` plus biases) and the shipped Jacobian lens (:func:`save_matrices` / :func:`load_matrices`:
named matrices, factored at a rank or kept whole in float16, with string metadata the caller
checks). ``30 × 576²`` float16 matrices are ~20 MB; at rank ``r`` they are ``30 × 2 × 576 × r ×
2`` bytes (rank 32: 2.2 MB). What the truncation costs in held-out KL is measured before a rank
is picked (``bench/tuned_bench.py``, ``scripts/ship_jlens.py``, ``lens_widget/lenses/*/README.md``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_lowrank", "load_lowrank", "truncate", "factors", "rounded", "save_matrices", "load_matrices"]

FILE = "lens.safetensors"
#: The one metadata key of :func:`save_matrices`' files.
META_KEY = "lens_widget"


def factors(W: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``U [d, r]``, ``V [r, d]`` (float32) with ``U V`` the best rank-``r`` approximation of ``W``
    (SVD in float64; the singular values split evenly between the two, ``√S`` each)."""
    U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    r = min(rank, S.numel())
    root = S[:r].sqrt()
    return (U[:, :r] * root).float(), (root[:, None] * Vh[:r]).float()


def truncate(lens: Any, rank: int, dtype: torch.dtype = torch.float16) -> Any:
    """A copy of ``lens`` whose translators are rank-``rank`` (and rounded to ``dtype``), i.e.
    exactly what :func:`save_lowrank` then :func:`load_lowrank` give."""
    out = type(lens)(lens.model, bias=lens.bias)
    out.config = dict(lens.config)
    with torch.no_grad():
        for src, dst in zip(lens.translators, out.translators):
            U, V = factors(src.weight.detach().cpu(), rank)
            dst.weight.copy_((U.to(dtype).float() @ V.to(dtype).float()).to(dst.weight.device))
            if src.bias is not None:
                dst.bias.copy_(src.bias.detach().to(dtype).float())
    return out


def save_lowrank(lens: Any, folder: str | os.PathLike, rank: int, extra: dict[str, Any] | None = None) -> Path:
    """Write ``folder/lens.safetensors``: ``U.{i}`` ``[d, r]``, ``V.{i}`` ``[r, d]``, ``bias.{i}``
    ``[d]`` (float16) and metadata (model, layers, width, rank, unembedding hash, ``extra``)."""
    from safetensors.torch import save_file

    from .lens_files import unembed_hash

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for i, t in enumerate(lens.translators):
        U, V = factors(t.weight.detach().cpu(), rank)
        tensors[f"U.{i}"] = U.half().contiguous()
        tensors[f"V.{i}"] = V.half().contiguous()
        if t.bias is not None:
            tensors[f"bias.{i}"] = t.bias.detach().cpu().half().contiguous()
    with lens.loaded():
        fingerprint = unembed_hash(lens.head.weight)
    meta = {
        "format": "lens_widget low-rank tuned lens v1",
        "base_model_name_or_path": lens.model.name,
        "num_hidden_layers": str(lens.n_layers),
        "d_model": str(lens.d_model),
        "rank": str(rank),
        "bias": str(lens.bias),
        "unembed_hash": fingerprint,
        "extra": json.dumps(extra or {}),
    }
    save_file(tensors, str(folder / FILE), metadata=meta)
    return folder / FILE


def load_lowrank(cls: type, folder: str | os.PathLike, model: Any) -> Any:
    """A ``cls`` (:class:`~lens_widget.tuned_lens.TunedLens`) from :func:`save_lowrank`'s file,
    refusing a model other than the one it was trained for (layers, width, unembedding hash)."""
    from safetensors import safe_open

    from .lens_files import LensFileError, unembed_hash

    path = Path(folder) / FILE
    if not path.is_file():
        raise LensFileError(f"{path} is missing (the shipped tuned lens is part of the lens_widget package; reinstall it)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    lens = cls(model, bias=meta.get("bias", "True") == "True")
    want = (int(meta.get("num_hidden_layers", -1)), int(meta.get("d_model", -1)))
    if want != (lens.n_layers, lens.d_model):
        raise LensFileError(
            f"{path} is a lens for {meta.get('base_model_name_or_path')} ({want[0]} layers, d_model {want[1]}); "
            f"{lens.model.name} has {lens.n_layers} layers, d_model {lens.d_model}: use it with HookedModel.default()"
        )
    with lens.loaded():
        mine = unembed_hash(lens.head.weight)
    if meta.get("unembed_hash") and mine != meta["unembed_hash"]:
        raise LensFileError(
            f"{path} was trained for {meta.get('base_model_name_or_path')}, whose unembedding differs from "
            f"{lens.model.name}'s: use it with HookedModel.default()"
        )
    with torch.no_grad():
        for i, t in enumerate(lens.translators):
            t.weight.copy_(tensors[f"U.{i}"].float() @ tensors[f"V.{i}"].float())
            if t.bias is not None:
                t.bias.copy_(tensors[f"bias.{i}"].float())
    lens.config.update(base_model_name_or_path=meta.get("base_model_name_or_path"), unembed_hash=meta.get("unembed_hash"))
    lens.shipped = {k: v for k, v in meta.items()}
    return lens


def rounded(W: torch.Tensor, rank: int | None, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """``W`` as :func:`save_matrices` then :func:`load_matrices` give it back (float32): rank-``rank``
    factors rounded to ``dtype`` and multiplied out, or (``rank=None``) ``W`` itself rounded."""
    if rank is None:
        return W.detach().cpu().to(dtype).float()
    U, V = factors(W.detach().cpu(), rank)
    return U.to(dtype).float() @ V.to(dtype).float()


def save_matrices(matrices: dict[str, torch.Tensor], path: str | os.PathLike, rank: int | None,
                  meta: dict[str, str], dtype: torch.dtype = torch.float16) -> Path:
    """Write ``{name: [d, d]}`` to the safetensors file ``path``: ``U.<name>`` ``[d, r]`` and
    ``V.<name>`` ``[r, d]`` at ``rank``, or ``W.<name>`` whole (``rank=None``), in ``dtype``, with
    ``meta`` (strings) plus ``"rank"``. Deterministic: the same matrices give the same bytes (the
    metadata goes as one sorted JSON string: safetensors writes a dict's keys in hash order)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, W in matrices.items():
        if rank is None:
            tensors[f"W.{name}"] = W.detach().cpu().to(dtype).contiguous()
        else:
            U, V = factors(W.detach().cpu(), rank)
            tensors[f"U.{name}"] = U.to(dtype).contiguous()
            tensors[f"V.{name}"] = V.to(dtype).contiguous()
    meta = {**meta, "rank": "full" if rank is None else str(rank)}
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    return path


def load_matrices(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """``(metadata, {name: [d, d] float32})`` from :func:`save_matrices`'s file (factors multiplied out)."""
    from safetensors import safe_open

    from .lens_files import LensFileError

    path = Path(path)
    if not path.is_file():
        raise LensFileError(f"{path} is missing (a shipped lens is part of the lens_widget package; reinstall it)")
    with safe_open(str(path), framework="pt") as f:
        raw = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    try:
        meta = json.loads(raw[META_KEY])
    except (KeyError, ValueError):
        raise LensFileError(f"{path} has no {META_KEY!r} metadata: not a file written by save_matrices") from None
    out: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        kind, name = key.split(".", 1)
        if kind == "W":
            out[name] = t.float()
        elif kind == "U":
            out[name] = t.float() @ tensors[f"V.{name}"].float()
    return meta, out
