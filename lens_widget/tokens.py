"""Token display strings, id <-> string lookup and vocabulary search.

Tokens are always keyed by id: two ids can decode to the same text. Display strings make the
invisible visible (a leading space as ``␣``, newline as ``↵``, tab as ``⇥``, raw bytes as
``<0x0A>``) so a researcher can tell ``" Paris"`` from ``"Paris"`` in a grid cell.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = [
    "display_token",
    "TokenTable",
    "TokenLookupError",
    "MultiTokenError",
    "SearchMatch",
]

_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "⏎"}


class TokenLookupError(KeyError, ValueError):
    """A token string or id that the vocabulary does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class MultiTokenError(TokenLookupError):
    """A string that the tokenizer splits into several tokens."""

    def __init__(self, text: str, pieces: list[tuple[int, str]]):
        self.text = text
        self.pieces = pieces
        shown = ", ".join(f"{display_token(s)!s} (id {i})" for i, s in pieces)
        super().__init__(
            f"{text!r} is {len(pieces)} tokens, not one: {shown}. "
            "Pass a single token (check the leading space) or a token id."
        )


def display_token(text: str) -> str:
    """Human-readable form of one decoded token string.

    Whitespace becomes visible, byte tokens and control / zero-width / bidi characters are
    shown as escapes, and an empty string (a partial UTF-8 sequence) as ``∅``.
    """
    if text == "":
        return "∅"
    if _BYTE_TOKEN.match(text):
        return text.upper().replace("0X", "0x")
    out = []
    for ch in text:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
            continue
        cat = unicodedata.category(ch)
        # Cc control, Cf format (zero-width, bidi overrides), Zl/Zp separators, Cs surrogates
        if cat in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "".join(out)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: printable stand-ins for the 256 byte values."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


_BYTE_DECODER = _byte_decoder()


def _partial_utf8(piece: str) -> str | None:
    """A byte-level piece that is not whole UTF-8 (half an emoji), as ``<0xNN>`` escapes.

    Decoding such a token alone gives ``�``, which hides which bytes it holds; a leading space
    byte stays a space. ``None`` when ``piece`` is not in the byte-level alphabet.
    """
    if not piece or any(ch not in _BYTE_DECODER for ch in piece):
        return None
    raw = bytes(_BYTE_DECODER[ch] for ch in piece)
    lead = b""
    while raw[:1] == b" ":
        lead, raw = lead + b" ", raw[1:]
    try:
        return lead.decode() + raw.decode("utf-8")
    except UnicodeDecodeError:
        return lead.decode() + "".join(f"<0x{b:02X}>" for b in raw)


@dataclass(frozen=True)
class SearchMatch:
    """One vocabulary search hit."""

    id: int
    text: str
    display: str
    exact: bool


class TokenTable:
    """Id <-> string for one tokenizer, with caching and search.

    ``decode(id)`` is the tokenizer's own decoding of that single id (so SentencePiece's ``▁``
    and GPT-2's ``Ġ`` come back as a real space); byte-fallback pieces keep their ``<0x..>`` name.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._decoded: dict[int, str] = {}
        self._vocab_texts: list[str] | None = None
        self.vocab_size = len(tokenizer)

    # -- ids -> strings -------------------------------------------------------------------
    def decode(self, token_id: int) -> str:
        token_id = int(token_id)
        if token_id < 0:
            return ""
        hit = self._decoded.get(token_id)
        if hit is None:
            piece = self.tokenizer.convert_ids_to_tokens(token_id)
            if isinstance(piece, str) and _BYTE_TOKEN.match(piece):
                hit = piece
            else:
                hit = self.tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
                if "\ufffd" in hit and isinstance(piece, str):
                    hit = _partial_utf8(piece) or hit
            self._decoded[token_id] = hit
        return hit

    def display(self, token_id: int) -> str:
        return display_token(self.decode(token_id))

    def table(self, ids: Iterable[int]) -> dict[int, str]:
        """Decoded strings of the distinct ids given (the wire's token table)."""
        return {int(i): self.decode(int(i)) for i in sorted({int(i) for i in ids}) if int(i) >= 0}

    # -- strings -> ids -------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without special tokens (never a BOS)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_id(self, token: int | str) -> int:
        """The id of one token, given as an id or as the exact string of a single token.

        Raises :class:`MultiTokenError` when ``token`` is several tokens and
        :class:`TokenLookupError` when it is empty or an id outside the vocabulary. Warns
        (``UserWarning``) when a word without a leading space (``"Paris"``) is one token and the
        spaced form (``" Paris"``, the usual one mid-sentence) is one token too and likelier: a
        lower id, which in a BPE vocabulary means an earlier merge, a more frequent piece.
        """
        if isinstance(token, bool):
            raise TokenLookupError(f"token must be an int id or a string, got {token!r}")
        if isinstance(token, int) or (hasattr(token, "__index__") and not isinstance(token, str)):
            tid = int(token)
            if not 0 <= tid < self.vocab_size:
                raise TokenLookupError(
                    f"token id {tid} is outside the vocabulary (0..{self.vocab_size - 1})"
                )
            return tid
        if not isinstance(token, str) or token == "":
            raise TokenLookupError(f"token must be a non-empty string or an id, got {token!r}")
        ids = self.encode(token)
        if len(ids) == 1:
            self._warn_if_spaced_likelier(token, ids[0])
            return ids[0]
        # A string such as "<0x0A>" or a special token may name a single vocabulary entry.
        direct = self.tokenizer.convert_tokens_to_ids(token)
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if isinstance(direct, int) and direct >= 0 and direct != unk:
            return direct
        if not ids:
            raise TokenLookupError(f"{token!r} encodes to no tokens")
        raise MultiTokenError(token, [(i, self.decode(i)) for i in ids])

    def _warn_if_spaced_likelier(self, token: str, tid: int) -> None:
        """The warning of :meth:`token_id` for a space-less word whose spaced form is likelier."""
        if not token[:1].isalnum():
            return
        spaced = self.encode(" " + token)
        if len(spaced) == 1 and spaced[0] != tid and spaced[0] < tid and self.decode(spaced[0]) == " " + token:
            warnings.warn(
                f'tracking "{token}" (id {tid}); did you mean " {token}" (id {spaced[0]})? Mid-sentence words '
                f'are usually the spaced token; pass " {token}" (or an id) to choose',
                UserWarning,
                stacklevel=3,
            )

    # -- search ---------------------------------------------------------------------------
    def _texts(self) -> list[str]:
        if self._vocab_texts is None:
            self._vocab_texts = [self.decode(i) for i in range(self.vocab_size)]
        return self._vocab_texts

    def search(self, query: str, limit: int = 20) -> tuple[list[SearchMatch], list[tuple[int, str]] | None]:
        """Vocabulary entries matching ``query``.

        Exact matches come first (``" Paris"`` and ``"Paris"`` and their case variants), then
        tokens whose stripped text starts with the query, case-insensitively. The second value
        lists the pieces when ``query`` itself encodes to several tokens, else ``None``.
        """
        if not isinstance(query, str) or not query.strip():
            raise TokenLookupError("search query must be a non-empty string")
        limit = max(1, min(int(limit), 200))
        q = query.strip()
        variants = {query, q, " " + q, q.lower(), " " + q.lower(), q.capitalize(), " " + q.capitalize()}
        texts = self._texts()
        exact_ids = [i for i, t in enumerate(texts) if t in variants]
        ql = q.lower()
        seen = set(exact_ids)
        prefix: list[int] = []
        for i, t in enumerate(texts):
            if i not in seen and t.strip().lower().startswith(ql):
                prefix.append(i)
                if len(prefix) >= limit:
                    break
        prefix.sort(key=lambda i: (len(texts[i].strip()), i))
        ordered = exact_ids + prefix
        matches = [
            SearchMatch(i, texts[i], display_token(texts[i]), i in seen) for i in ordered[:limit]
        ]
        ids = self.encode(query)
        pieces = [(i, self.decode(i)) for i in ids] if len(ids) > 1 else None
        return matches, pieces
