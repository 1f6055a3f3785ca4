"""The cell schema: the one table of per-cell arrays every lens result holds.

Each (prompt, site, position) cell of a lens carries the same arrays. This table names them,
once: their element kind, the value of a cell that was not computed, their trailing axis (the
top-``k`` tokens, the ``M`` tracked tokens, or none) and whether they travel to the front end.
:class:`~lens_widget.result.LensResult`, the result store, the reducers (here and inside an
nnsight trace), generation's columns and the wire all derive their keys, dtypes and fills from
it; ``js/src/schema.ts`` mirrors the wired rows and ``tests/test_structure.py`` holds the two
equal.

Plain data only (no torch, no numpy): it travels by value to NDIF with the in-trace lens.
"""

from __future__ import annotations

__all__ = ["CellField", "CELL_FIELDS", "CELL_KEYS", "WIRE_KEYS", "FLOAT_KEYS", "field", "trailing"]


class CellField:
    """One per-cell array: ``name``; ``kind`` ``"int"`` / ``"float"`` / ``"bool"``; ``fill``,
    the value of a cell not computed (and of a float cell whose row overflowed); ``axis``,
    the trailing axis (``"k"``: top tokens, ``"M"``: tracked tokens, ``""``: none); ``wire``,
    whether the front end receives it (``data`` and column messages).

    (A plain class, not a ``NamedTuple``: this module travels by value into nnsight traces,
    where a ``NamedTuple`` class cannot be rebuilt.)"""

    __slots__ = ("name", "kind", "fill", "axis", "wire")

    def __init__(self, name: str, kind: str, fill: float | int | bool, axis: str, wire: bool):
        self.name, self.kind, self.fill, self.axis, self.wire = name, kind, fill, axis, wire

    def __iter__(self):
        return iter((self.name, self.kind, self.fill, self.axis, self.wire))

    def __repr__(self) -> str:
        return f"CellField{tuple(self)!r}"


NAN = float("nan")

#: Every per-cell array, in the order results, stores and the wire list them.
CELL_FIELDS: tuple[CellField, ...] = (
    CellField("topk_ids", "int", -1, "k", True),
    CellField("topk_probs", "float", NAN, "k", True),
    CellField("topk_logits", "float", NAN, "k", False),
    CellField("entropy", "float", NAN, "", True),
    CellField("next_prob", "float", NAN, "", True),
    CellField("next_logit", "float", NAN, "", False),
    CellField("next_rank", "int", 0, "", True),
    CellField("kl", "float", NAN, "", True),
    CellField("tracked_prob", "float", NAN, "M", True),
    CellField("tracked_logit", "float", NAN, "M", True),
    CellField("tracked_rank", "int", 0, "M", True),
    CellField("nonfinite", "bool", False, "", True),
)

#: The names of :data:`CELL_FIELDS`, in order.
CELL_KEYS: tuple[str, ...] = tuple(f.name for f in CELL_FIELDS)
#: The arrays the front end receives (a column message carries one column of each).
WIRE_KEYS: tuple[str, ...] = tuple(f.name for f in CELL_FIELDS if f.wire)
#: The float arrays (NaN where a row's activations or logits were not finite).
FLOAT_KEYS: tuple[str, ...] = tuple(f.name for f in CELL_FIELDS if f.kind == "float")


def field(name: str) -> CellField:
    """The row of :data:`CELL_FIELDS` called ``name``."""
    for f in CELL_FIELDS:
        if f.name == name:
            return f
    raise KeyError(f"no cell array {name!r}; the cell arrays are {', '.join(CELL_KEYS)}")


def trailing(f: CellField, k: int, m: int) -> tuple[int, ...]:
    """The trailing shape of ``f`` for top-``k`` and ``m`` tracked tokens."""
    return (k,) if f.axis == "k" else (m,) if f.axis == "M" else ()
