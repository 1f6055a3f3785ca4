"""Prompts to token ids: tokenising, checking against the vocabulary and context, right padding.

Every way a user can give a prompt (text, a list of texts, token ids, a tensor, a tokenizer
output) becomes one :class:`Batch` here, so nothing downstream guesses at padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

__all__ = ["Batch", "PromptError", "PromptEncoder", "is_chat"]


class PromptError(ValueError):
    """A prompt the model cannot run: empty, longer than its context, or not a prompt at all."""


@dataclass
class Batch:
    """Right-padded token ids of several prompts."""

    input_ids: torch.Tensor  # [B, T], pad = 0
    attention_mask: torch.Tensor  # [B, T]
    lengths: torch.Tensor  # [B]
    prompts: list[str]

    def rows(self) -> list[list[int]]:
        """Each prompt's real token ids."""
        return [self.input_ids[i, : int(n)].tolist() for i, n in enumerate(self.lengths)]

    def subset(self, index: Sequence[int]) -> "Batch":
        """The prompts at ``index``, padded to their own longest length."""
        T = int(max(int(self.lengths[i]) for i in index))
        idx = torch.as_tensor(list(index), dtype=torch.long)
        return Batch(
            self.input_ids[idx, :T], self.attention_mask[idx, :T], self.lengths[idx], [self.prompts[i] for i in index]
        )


def is_chat(item: Any) -> bool:
    """A chat: a list of ``{"role": ..., "content": ...}`` messages."""
    return isinstance(item, (list, tuple)) and bool(item) and all(isinstance(m, dict) and "role" in m for m in item)


class PromptEncoder:
    """Turns prompts into :class:`Batch` es for one tokenizer, vocabulary and context length.

    A prompt is text, token ids, or a chat (a list of ``{"role", "content"}`` messages, run
    through the tokenizer's chat template, whose tokens the grid shows as they are).
    """

    def __init__(self, tokenizer: Any, vocab_size: int, max_length: int | None):
        self.tokenizer = tokenizer
        self.vocab_size = int(vocab_size)
        self.max_length = max_length

    def encode(self, prompts: str | Sequence[str]) -> Batch:
        """Tokenize prompts (the tokenizer's own special tokens) and right-pad them.

        Raises :class:`PromptError` on an empty prompt or one longer than the model's context.
        """
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not texts:
            raise PromptError("no prompts given")
        rows = []
        for text in texts:
            if not isinstance(text, str):
                raise PromptError(f"a prompt must be a string, got {type(text).__name__}")
            if text == "":
                raise PromptError("the prompt is empty: give at least one character")
            ids = list(self.tokenizer(text)["input_ids"])
            if not ids:
                raise PromptError(f"the prompt {text[:40]!r} encodes to no tokens")
            rows.append(ids)
        return self.pad(rows, texts)

    def pad(self, rows: Sequence[Sequence[int]], prompts: Sequence[str] | None = None) -> Batch:
        """Right-pad id lists (checked against the context length) into a :class:`Batch`."""
        limit = self.max_length
        for ids in rows:
            if limit is not None and len(ids) > limit:
                raise PromptError(
                    f"the prompt is {len(ids)} tokens, longer than the model's context of {limit}; "
                    "shorten it (lens_widget does not truncate silently)"
                )
        T = max(len(r) for r in rows)
        input_ids = torch.zeros(len(rows), T, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
            mask[i, : len(ids)] = 1
        texts = list(prompts) if prompts is not None else [""] * len(rows)
        return Batch(input_ids, mask, mask.sum(1), texts)

    def chat_ids(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> list[int]:
        """Token ids of a chat through the tokenizer's own chat template."""
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise PromptError("this tokenizer has no chat template: give the prompt as text or token ids")
        for m in messages:
            if not isinstance(m.get("content"), str):
                raise PromptError(f"a chat message needs string 'content', got {m!r}")
        out = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=True)
        ids = out["input_ids"] if hasattr(out, "keys") else out
        return [int(i) for i in ids]

    def as_batch(self, item: Any, add_generation_prompt: bool = False) -> Batch:
        """A right-padded :class:`Batch` from text, token ids, a chat or a tokenizer output.

        Accepts a string or list of strings, a chat (list of messages) or a list of chats, a
        list of ids or a list of id lists, a 1-D / 2-D tensor of ids, or
        ``{"input_ids": ..., "attention_mask": ...}`` (right-padded). ``add_generation_prompt``
        applies to chats (the template's cue for the assistant's turn).
        """
        if isinstance(item, Batch):
            return item
        if isinstance(item, (list, tuple)) and not item:
            raise PromptError("no prompts given")
        if is_chat(item):
            item = [item]
        if isinstance(item, (list, tuple)) and all(is_chat(c) for c in item):
            return self._checked_pad([self.chat_ids(c, add_generation_prompt) for c in item])
        if isinstance(item, (list, tuple)) and any(isinstance(x, dict) for x in item):
            raise PromptError("a chat is a list of {'role': ..., 'content': ...} messages")
        if isinstance(item, str) or (isinstance(item, (list, tuple)) and all(isinstance(x, str) for x in item)):
            return self.encode(item)
        if hasattr(item, "keys") and "input_ids" in item:
            return self._from_tensors(torch.as_tensor(item["input_ids"]), item.get("attention_mask") if hasattr(item, "get") else None)
        if isinstance(item, torch.Tensor):
            return self._from_tensors(item, None)
        if isinstance(item, (list, tuple)):
            return self._from_id_lists(item)
        raise PromptError(f"cannot run {type(item).__name__}: give text, token ids or a tokenizer output with input_ids")

    def _from_id_lists(self, item: Sequence[Any]) -> Batch:
        rows = [list(r) if isinstance(r, (list, tuple, torch.Tensor)) else None for r in item]
        if all(r is None for r in rows):  # one flat list of ids
            rows = [list(item)]
        if any(r is None or not r for r in rows):
            raise PromptError("give token ids as a list of ints or a list of non-empty lists of ints")
        return self._checked_pad([[int(i) for i in r] for r in rows])  # type: ignore[union-attr]

    def _from_tensors(self, ids: torch.Tensor, mask: Any) -> Batch:
        ids = ids[None] if ids.dim() == 1 else ids
        mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask).reshape(ids.shape).long()
        if ((mask[:, 1:] - mask[:, :-1]) > 0).any():
            raise PromptError(
                "left-padded (or gapped) attention_mask: tokenize with padding_side='right' so "
                "positions and position ids stay right"
            )
        lengths = mask.sum(1)
        if (lengths == 0).any():
            raise PromptError("an input has no tokens (empty prompt)")
        return self._checked_pad([ids[i, : int(n)].tolist() for i, n in enumerate(lengths)])

    def _checked_pad(self, rows: list[list[int]]) -> Batch:
        for r in rows:
            bad = [i for i in r if not 0 <= i < self.vocab_size]
            if bad:
                raise PromptError(f"token ids {bad[:5]} are outside the vocabulary (0..{self.vocab_size - 1})")
        return self.pad(rows, [self.tokenizer.decode(r) for r in rows])
