"""A real natural-text corpus installed from Debian, for training and measuring tuned lenses offline.

Two Debian packages (``apt-get install jargon-text fortunes``; ``scripts/setup.sh`` does it):

* ``jargon-text`` — the Jargon File 4.4.7 (Eric S. Raymond et al.), English prose: definitions,
  essays and anecdotes; **public domain** (Debian's copyright file: "This document (the Jargon
  File) is in the public domain, to be freely used, shared, and modified").
* ``fortunes`` — the data files of ``fortune-mod``: quotations, literature, poems, jokes, news
  (the ``ascii-art`` file is left out); **BSD licence** (University of California).

Documents: Jargon File paragraphs grouped into ~1,500-character passages (the table of contents
is dropped), and single fortunes. Every 10th document of each source (by position in the file)
is **held out**: ``corpus_texts("train")`` never contains one. Both splits are shuffled with a
fixed seed. Token counts with the SmolLM2 tokenizer: see :data:`TOKEN_COUNTS`.
"""

from __future__ import annotations

import gzip
import random
import re
from pathlib import Path

__all__ = ["corpus_texts", "CorpusMissingError", "TOKEN_COUNTS", "JARGON_FILE", "FORTUNES_DIR"]

JARGON_FILE = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
HELD_OUT_EVERY = 10
#: SmolLM2-135M-Instruct tokens per split (measured with ``corpus_token_count``).
TOKEN_COUNTS = {"train": 946_363, "held_out": 107_324}
_SKIP_FORTUNES = {"ascii-art", "translate-me"}


class CorpusMissingError(FileNotFoundError):
    """The Debian packages holding the corpus are not installed."""


def _jargon_docs() -> list[str]:
    if not JARGON_FILE.exists():
        raise CorpusMissingError(f"{JARGON_FILE} is missing: install Debian's jargon-text (apt-get install jargon-text fortunes)")
    text = gzip.open(JARGON_FILE, "rt", encoding="utf-8", errors="replace").read()
    paras = [re.sub(r"[ \t]+", " ", p.strip()) for p in re.split(r"\n\s*\n", text)]
    paras = [p for p in paras if len(p) >= 60]  # drops the table of contents (one headword a line)
    docs, cur = [], ""
    for p in paras:
        cur = f"{cur}\n\n{p}" if cur else p
        if len(cur) >= 1500:
            docs.append(cur)
            cur = ""
    if cur:
        docs.append(cur)
    return docs


def _fortune_docs() -> list[str]:
    if not FORTUNES_DIR.is_dir():
        raise CorpusMissingError(f"{FORTUNES_DIR} is missing: install Debian's fortunes (apt-get install jargon-text fortunes)")
    docs = []
    for f in sorted(FORTUNES_DIR.iterdir()):
        if f.suffix in (".dat", ".u8") or f.name in _SKIP_FORTUNES or not f.is_file() or f.is_symlink():
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        text = re.sub(".\x08", "", text)  # overstriking
        docs.extend(d.strip() for d in re.split(r"\n%\n", text) if len(d.strip()) >= 20)
    return docs


def corpus_texts(split: str = "train", seed: int = 0) -> list[str]:
    """The documents of ``split`` (``"train"`` or ``"held_out"``), shuffled with ``seed``."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
    out = []
    for docs in (_jargon_docs(), _fortune_docs()):
        out.extend(d for i, d in enumerate(docs) if (i % HELD_OUT_EVERY == 0) == (split == "held_out"))
    random.Random(seed).shuffle(out)
    return out


def corpus_token_count(tokenizer, split: str = "train") -> int:
    """Tokens of ``split`` under ``tokenizer`` (no special tokens, one end-of-text per document)."""
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in corpus_texts(split))
