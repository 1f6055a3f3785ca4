"""The wire: how arrays and results travel to the front end (see ``docs/wire.md``).

One dtype rule for everything that leaves the kernel — the ``data`` trait, request replies and
the exported HTML page: booleans and bytes as ``uint8``, signed integers as ``int32``, other
unsigned integers as ``uint32``, floats as ``float32``; little-endian, C-contiguous, with dtype and shape beside them.
"""

from __future__ import annotations

import base64
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .compare import Comparison

if TYPE_CHECKING:  # a type only: the wire encodes what patching returns
    from .patching import Patch, Sweep
from .result import LensResult
from .schema import WIRE_KEYS
from .sites import site_label

__all__ = ["WIRE_VERSION", "WIRE_KEYS", "wire_dtype", "encode_array", "result_to_wire", "column_message", "message_bytes", "comparison_to_wire", "patch_to_wire", "sweep_to_wire", "arrays_to_wire", "lift_arrays", "json_state"]

WIRE_VERSION = 1
_BY_KIND = {"b": "uint8", "i": "int32", "u": "uint32", "f": "float32"}


def wire_dtype(array: np.ndarray) -> str:
    """The wire dtype of a numpy array (the one rule)."""
    dt = np.asarray(array).dtype
    if dt == np.uint8:
        return "uint8"
    try:
        return _BY_KIND[dt.kind]
    except KeyError:
        raise TypeError(f"arrays of dtype {np.asarray(array).dtype} do not go on the wire") from None


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """One array for the wire: ``{dtype, shape, buffer}`` (little-endian C-contiguous bytes)."""
    a = np.asarray(array)
    dtype = wire_dtype(a)
    a = np.ascontiguousarray(a.astype(np.dtype(dtype).newbyteorder("<"), copy=False))
    return {"dtype": dtype, "shape": list(a.shape), "buffer": a.tobytes()}


def result_to_wire(result: LensResult, prompt: int = 0) -> dict[str, Any]:
    """The widget's ``data`` trait for one prompt of ``result``.

    Layout is site-major: ``[S, P, ...]``. Per cell: k int32 ids + k float32 probs +
    entropy, next-token prob, next-token rank, KL (4 bytes each) = 8k + 16 bytes.
    """
    r = result
    cols = r.columns(prompt)
    ids_in = r.input_ids[prompt, : int(r.lengths[prompt])]
    used = set(ids_in.tolist()) | set(r.topk_ids[prompt][:, cols].ravel().tolist())
    used |= set(int(i) for i in r.tracked_ids.tolist())
    used |= {int(i) for i in r.next_ids[prompt, cols].tolist() if i >= 0}
    vocab_ids = np.array(sorted(i for i in used if i >= 0), dtype=np.int32)

    def cells(a: np.ndarray) -> dict[str, Any]:  # [B, S, P, ...] -> [S, P', ...] for this prompt
        return encode_array(a[prompt][:, cols])

    return {
        "version": WIRE_VERSION,
        "model_name": r.model_label,
        "lens_name": r.lens_name,
        "prompt": r.prompts[prompt] if prompt < len(r.prompts) else "",
        "sites": list(r.sites),
        "site_labels": r.site_labels,
        "k": r.k,
        "n_sites": r.n_sites,
        "n_positions": int(cols.size),
        "positions": encode_array(r.positions[prompt, cols].astype(np.int32)),
        "input_ids": encode_array(ids_in.astype(np.int32)),
        "next_ids": encode_array(r.next_ids[prompt, cols].astype(np.int32)),
        **{key: cells(getattr(r, key)) for key in WIRE_KEYS},
        "tracked_ids": encode_array(r.tracked_ids.astype(np.int32)),
        "vocab_ids": encode_array(vocab_ids),
        "vocab_strings": [r.token_strings.get(int(i), "") for i in vocab_ids.tolist()],
        "generated_from": -1 if r.generated_from is None else int(r.generated_from[prompt]),
    }


def column_message(
    cells: dict[str, np.ndarray],
    col: int,
    token_id: int,
    next_id: int,
    token_strings: dict[int, str],
    known_ids: set[int] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """One grid column for the front end (``{"type": "column", ...}``, see ``docs/wire.md``).

    ``cells[key]`` is ``[S, ...]`` (one column of a :class:`LensResult` array, keys
    :data:`~lens_widget.schema.WIRE_KEYS`); ``col`` the column it sets (``n_positions``: appended; less: replaced).
    The token table carries only ids not in ``known_ids`` (the ids the front end already has),
    which is updated. Arrays stay numpy: :func:`lift_arrays` turns them into binary buffers.
    ``fields`` (``done``, ``total``, ``eta_s``, ``generated_from``, ...) are added as they are.
    """
    known = known_ids if known_ids is not None else set()
    ids = {int(token_id), int(next_id)} | set(np.unique(cells["topk_ids"]).tolist())
    new = sorted(i for i in ids if i >= 0 and i not in known)
    known.update(new)
    return {
        "type": "column",
        "col": int(col),
        "position": int(col),
        "token_id": int(token_id),
        "next_id": int(next_id),
        "cells": {key: np.ascontiguousarray(cells[key]) for key in WIRE_KEYS},
        "vocab_ids": np.asarray(new, dtype=np.int32),
        "vocab_strings": [token_strings.get(i, "") for i in new],
        **fields,
    }


def message_bytes(content: dict[str, Any], buffers: list[bytes]) -> int:
    """Bytes a custom message puts on the websocket: its JSON plus its binary buffers."""
    import json

    return len(json.dumps(content, separators=(",", ":")).encode("utf-8")) + sum(len(b) for b in buffers)


def comparison_to_wire(c: Comparison) -> dict[str, Any]:
    """The widget's ``comparison`` trait: both sides' grids (each laid out like ``data``, every
    column of its prompt) and the aligned diff grid ``[S, P]`` (P = aligned columns; docs/wire.md)."""
    return {
        "version": WIRE_VERSION,
        "label_a": c.label_a,
        "label_b": c.label_b,
        "align": c.align,
        "js_exact": bool(c.js_exact),
        "js_label": c.js_label,
        "n_sites": c.n_sites,
        "n_positions": c.n_positions,
        "a": result_to_wire(c.a, c.prompt_a),
        "b": result_to_wire(c.b, c.prompt_b),
        # columns into each side's grid (its wire columns: computed columns only)
        "cols_a": encode_array(np.searchsorted(c.a.columns(c.prompt_a), c.cols_a).astype(np.int32)),
        "cols_b": encode_array(np.searchsorted(c.b.columns(c.prompt_b), c.cols_b).astype(np.int32)),
        **{name: encode_array(v.astype(np.float32)) for name, v in c.deltas.items()},
        "js": encode_array(c.js.astype(np.float32)),
        "top1_agree": encode_array(c.top1_agree),
        "nonfinite": encode_array(c.nonfinite),
        "tracked_ids": encode_array(c.tracked_ids.astype(np.int32)),
        "d_tracked_prob": encode_array(c.d_tracked_prob.astype(np.float32)),
        "d_tracked_logit": encode_array(c.d_tracked_logit.astype(np.float32)),
    }


def patch_to_wire(p: "Patch") -> dict[str, Any]:
    """``comparison["patch"]`` of a patch's diff grid (a = clean target, b = patched): what was
    patched where, and the causal cone ``[S, P]`` (1 where the patch can change a cell)."""
    return {
        "site": int(p.clean.sites.index(p.site)),
        "site_name": p.site,
        "target_position": int(p.target_position),
        "source": p.source,
        "source_position": -1 if p.source_position is None else int(p.source_position),
        **{key: int(v) for key, v in p.meta.items() if key in ("source_prompt_index", "target_prompt_index", "source_col", "target_col")},
        "cone": encode_array(p.in_cone().astype(np.uint8)),
    }


def sweep_to_wire(sw: "Sweep", tokens: dict[int, str], **fields: Any) -> dict[str, Any]:
    """The widget's ``sweep`` trait: an activation-patching sweep as a grid ``[S, T]`` (site-major,
    like ``data``): ``recovery`` and ``patched_ld`` float32, the sites and their labels, both
    prompts' tokens (decoded text), the pair measured (ids and ``tokens``: their text), the clean
    and corrupted logit differences, the costs (``meta``) and any ``fields`` (which prompts).
    Non-finite floats become ``None``."""
    out = {
        "version": WIRE_VERSION,
        "n_sites": int(sw.recovery.shape[0]),
        "n_positions": int(sw.recovery.shape[1]),
        "recovery": encode_array(sw.recovery.astype(np.float32)),
        "patched_ld": encode_array(sw.patched_ld.astype(np.float32)),
        "clean_ld": float(sw.clean_ld),
        "corrupt_ld": float(sw.corrupt_ld),
        "sites": list(sw.sites),
        "site_labels": [site_label(s) for s in sw.sites],
        "clean_tokens": list(sw.clean_tokens),
        "corrupt_tokens": list(sw.corrupt_tokens),
        "pair": [int(i) for i in sw.pair],
        "pair_tokens": [tokens[int(i)] for i in sw.pair],
        "meta": {k: v for k, v in sw.meta.items() if isinstance(v, (int, float, str))},
        **fields,
    }
    return arrays_to_wire(out)


def arrays_to_wire(value: Any) -> Any:
    """A copy of plain data fit for a trait: numpy arrays as ``{dtype, shape, buffer}`` (binary on
    the comm, base64 in an exported page), numpy scalars as Python numbers, non-finite floats as
    ``None`` (JSON has no NaN)."""
    if isinstance(value, np.ndarray):
        return encode_array(value)
    if isinstance(value, dict):
        return {k: v if k == "buffer" else arrays_to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [arrays_to_wire(v) for v in value]
    if isinstance(value, np.generic):
        return arrays_to_wire(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def lift_arrays(msg: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """A reply for ``send``: numpy arrays become ``{dtype, shape, buffer_index}`` plus binary
    buffers; non-finite floats become ``None`` (JSON has no NaN)."""
    buffers: list[bytes] = []

    def walk(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            enc = encode_array(v)
            buffers.append(enc.pop("buffer"))
            enc["buffer_index"] = len(buffers) - 1
            return enc
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return walk(msg), buffers


def _b64(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


def json_state(value: Any) -> Any:
    """A JSON-ready copy of a trait value for an exported page: wire arrays and numpy arrays
    become ``{dtype, shape, b64}``, raw bytes ``uint8`` arrays, non-finite floats ``None``."""
    if isinstance(value, np.ndarray):
        return json_state(encode_array(value))
    if isinstance(value, dict):
        buf = value.get("buffer")
        if isinstance(buf, (bytes, bytearray, memoryview)) and "dtype" in value:
            out = {k: json_state(v) for k, v in value.items() if k != "buffer"}
            out["b64"] = _b64(buf)
            return out
        return {str(k): json_state(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_state(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return json_state(encode_array(np.frombuffer(bytes(value), dtype=np.uint8)))
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return json_state(value.item())
    raise TypeError(f"cannot put a {type(value).__name__} in an exported page")
