"""The grid's colour scales for figures written without a browser: palettes, the sequential,
log-probability, log-rank and diverging scales, the next-token mark's colour, and how a value is
printed. ``js/src/color.ts`` is their home in the front end; a test keeps the palettes and the
constants of the two equal, and checks a figure written here against one the page writes.

A scale maps a value to one of :data:`N_COLORS` palette colours (an index, ``-1`` for "no
value"), rounding and clamping exactly as the front end does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = [
    "VIRIDIS",
    "RDBU",
    "N_COLORS",
    "NEXT_MARK_COLOR",
    "LOGPROB_FLOOR",
    "Scale",
    "ramp",
    "sequential",
    "diverging",
    "log_prob_scale",
    "rank_scale",
    "rank_fraction",
    "fmt",
]

#: Palette stops (the same lists as ``js/src/color.ts``).
VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"]
RDBU = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"]
#: Colours of a palette.
N_COLORS = 256
#: The colour of the mark of a cell whose top-1 token is the prompt's next token.
NEXT_MARK_COLOR = "#ff2d95"
#: Default lowest log-probability (nats) of a log-prob scale; lower values take its lowest colour.
LOGPROB_FLOOR = -20.0

RGB = tuple[int, int, int]


def _round(x: float) -> int:
    """JavaScript's ``Math.round`` (halves go up)."""
    return int(math.floor(x + 0.5))


def ramp(stops: list[str], n: int = N_COLORS) -> list[RGB]:
    """``n`` colours linearly interpolated through the hex ``stops``."""
    rgb = [tuple(int(h[i : i + 2], 16) for i in (1, 3, 5)) for h in stops]
    out: list[RGB] = []
    for i in range(n):
        t = i / (n - 1) * (len(rgb) - 1)
        j = min(int(math.floor(t)), len(rgb) - 2)
        f = t - j
        a, b = rgb[j], rgb[j + 1]
        out.append(tuple(_round(a[q] + (b[q] - a[q]) * f) for q in range(3)))  # type: ignore[misc]
    return out


def _css(c: RGB) -> str:
    return f"rgb({c[0]},{c[1]},{c[2]})"


def _text_on(c: RGB) -> str:
    """Readable text colour on ``c`` (black on light colours)."""
    return "#000" if (0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]) / 255 > 0.5 else "#fff"


_SEQ = ramp(VIRIDIS)
_DIV = ramp(RDBU)


def fmt(v: float) -> str:
    """How the front end prints a value (``js/src/format.ts`` ``fmt``)."""
    if not math.isfinite(v):
        return "–"
    a = abs(v)
    if a != 0 and (a < 1e-3 or a >= 1e5):
        mant, exp = f"{v:.2e}".split("e")
        return f"{mant}e{'-' if exp[0] == '-' else '+'}{int(exp[1:])}"
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.3f}"


def _index_of(t: float) -> int:
    """Colour index of a fraction 0..1 (clamped)."""
    return 0 if t <= 0 else N_COLORS - 1 if t >= 1 else _round(t * (N_COLORS - 1))


@dataclass(frozen=True)
class Scale:
    """A colour scale: ``kind`` ("seq", "log" = ranks, "logp" = log-probabilities, "div"),
    its range, the legend's low / high labels, and ``fraction`` (value -> 0..1, NaN = none)."""

    kind: str
    lo: float
    hi: float
    ticks: tuple[str, str]
    fraction: Callable[[float], float]

    @property
    def rgb(self) -> list[RGB]:
        return _DIV if self.kind == "div" else _SEQ

    @property
    def colors(self) -> list[str]:
        """CSS colours, index 0 .. N_COLORS - 1."""
        return [_css(c) for c in self.rgb]

    @property
    def text(self) -> list[str]:
        """Readable text colour on each colour."""
        return [_text_on(c) for c in self.rgb]

    def index(self, v: float) -> int:
        """Colour index of ``v``; ``-1`` for no value."""
        t = self.fraction(float(v))
        return -1 if t != t else _index_of(t)

    def indices(self, values: np.ndarray) -> np.ndarray:
        """:meth:`index` of every value (same shape, int)."""
        flat = [self.index(v) for v in np.asarray(values, dtype=np.float64).ravel()]
        return np.array(flat, dtype=np.int64).reshape(np.shape(values))


def sequential(lo: float, hi: float) -> Scale:
    """Viridis from ``lo`` (darkest) to ``hi`` (brightest), clamped; NaN is no value."""
    span = hi - lo if hi > lo else 1.0
    return Scale("seq", lo, hi, (fmt(lo), fmt(hi)), lambda v: (v - lo) / span)


def diverging(m: float) -> Scale:
    """Red-blue centred on 0, symmetric over ``[-m, m]``."""
    mm = m if m > 0 and math.isfinite(m) else 1.0
    return Scale("div", -mm, mm, (fmt(-mm), fmt(mm)), lambda v: (v + mm) / (2 * mm))


def log_prob_scale(min_log_prob: float, floor: float = LOGPROB_FLOOR) -> Scale:
    """Log-probabilities (nats) linear over ``[lo, 0]``: log p = 0 brightest; ``lo`` and below
    (-inf, p = 0, included) darkest; NaN no value. ``lo`` is the data's lowest finite log p,
    never below ``floor`` nor above -1e-6."""
    lo = min(max(min_log_prob, floor), -1e-6) if math.isfinite(min_log_prob) else floor
    clamped = not (min_log_prob >= lo)
    return Scale("logp", lo, 0.0, (f"{'≤ ' if clamped else ''}log p {fmt(lo)}", "log p 0"), lambda v: (v - lo) / -lo)


def rank_fraction(rank: float, max_rank: float) -> float:
    """Ranks on a log scale: 1 -> 1, ``max_rank`` -> 0, clamped."""
    t = 1 - math.log(max(1.0, rank)) / math.log(max(2.0, max_rank))
    return max(0.0, min(1.0, t))


def rank_scale(hi: float) -> Scale:
    """Ranks (1 = best) log spaced from rank 1 (brightest) to ``hi`` (darkest; larger ranks
    clamp to it); ``0``, negative and NaN are no value."""
    top = max(hi, 2.0) if math.isfinite(hi) else 2.0
    label = str(_round(top))
    return Scale("log", 1.0, top, ("rank 1", f"rank {label}"), lambda v: rank_fraction(v, top) if v >= 1 else math.nan)
