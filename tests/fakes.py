"""Synthetic `LensResult`s for tests that need the shape of a lens, not a model.

The numbers are internally consistent (probabilities from a softmax of random logits, ranks
counted from those logits) so plots and the front end can be checked against them.
"""

from __future__ import annotations

import os

import numpy as np

from lens_widget.result import LensResult

HOSTILE_STRINGS = [
    "<img src=x onerror=alert(1)>",
    "</script><script>window.__pwned=1</script>",
    "\"'&amp;",
    "javascript:alert(1)",
    " Paris",
    "\n",
    "\u202eevil",
    "a\u200bb",
]


def make_result(
    n_sites: int = 5,
    n_positions: int = 6,
    k: int = 5,
    vocab: int = 50,
    n_prompts: int = 1,
    tracked: tuple[int, ...] = (3, 7),
    hostile: bool = False,
    seed: int = 0,
) -> LensResult:
    """A lens-shaped result whose every array is derived from one random logits tensor."""
    rng = np.random.default_rng(seed)
    B, S, P, V = n_prompts, n_sites, n_positions, vocab
    logits = rng.normal(size=(B, S, P, V)).astype(np.float32) * np.linspace(0.5, 4, S)[None, :, None, None]
    logits = logits.astype(np.float32)
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    probs = np.exp(logp)
    order = np.argsort(-logits, axis=-1, kind="stable")[..., :k]
    input_ids = rng.integers(0, V, size=(B, P))
    next_ids = np.concatenate([input_ids[:, 1:], -np.ones((B, 1), dtype=input_ids.dtype)], axis=1)
    safe_next = np.where(next_ids >= 0, next_ids, 0)
    nxt_logit = np.take_along_axis(logits, np.broadcast_to(safe_next[:, None, :, None], (B, S, P, 1)), -1)[..., 0]
    next_rank = 1 + (logits > nxt_logit[..., None]).sum(-1)
    has_next = (next_ids >= 0)[:, None, :]
    final = logp[:, -1:, :, :]
    kl = (np.exp(final) * (final - logp)).sum(-1)
    tr = np.array(tracked, dtype=np.int64)
    tr_logit = logits[..., tr]
    tr_rank = 1 + (logits[..., None, :] > tr_logit[..., None]).sum(-1)
    strings = {i: f"t{i}" for i in range(V)}
    if hostile:
        for i, s in enumerate(HOSTILE_STRINGS):
            strings[i] = s
    return LensResult(
        vocab_size=V,
        prompts=["synthetic prompt"] * B,
        input_ids=input_ids,
        lengths=np.full(B, P),
        sites=["embed"] + [f"resid_out_{i}" for i in range(S - 1)],
        positions=np.tile(np.arange(P), (B, 1)),
        topk_ids=order.astype(np.int64),
        topk_probs=np.take_along_axis(probs, order, -1).astype(np.float32),
        topk_logits=np.take_along_axis(logits, order, -1).astype(np.float32),
        entropy=-(probs * logp).sum(-1).astype(np.float32),
        next_ids=next_ids,
        next_prob=np.where(has_next, np.exp(nxt_logit - (logits.max(-1) + np.log(np.exp(z).sum(-1)))), np.nan).astype(np.float32),
        next_logit=np.where(has_next, nxt_logit, np.nan).astype(np.float32),
        next_rank=np.where(has_next, next_rank, 0).astype(np.int64),
        kl=kl.astype(np.float32),
        tracked_ids=tr,
        tracked_prob=probs[..., tr].astype(np.float32),
        tracked_logit=tr_logit.astype(np.float32),
        tracked_rank=tr_rank.astype(np.int64),
        nonfinite=np.zeros((B, S, P), dtype=bool),
        token_strings=strings,
        model_name="synthetic",
    )


class CodePayload:
    """Pickles to a call of ``os.system`` that touches ``marker``: what a malicious lens file
    carries (a test saves one inside a lens file and checks the marker never appears)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
