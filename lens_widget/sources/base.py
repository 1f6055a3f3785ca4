"""The interface every activation source implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import torch

from ..inputs import Batch

__all__ = ["ActivationSource", "Recording"]

T = TypeVar("T")


@dataclass
class Recording:
    """What one forward pass recorded: ``acts[site]`` is ``[B, P, d]`` (on the source's output
    device), ``logits`` the model's own float32 logits at the selected positions when asked for,
    ``last_layernorm`` the final norm's output there when asked for."""

    acts: dict[str, torch.Tensor]
    logits: torch.Tensor | None = None
    last_layernorm: torch.Tensor | None = None


class ActivationSource(abc.ABC):
    """Runs a model once over a batch and records sites at chosen positions.

    ``select`` is a ``[B, P]`` long tensor of token indices per prompt (shorter prompts repeat a
    valid index; the caller masks them).
    """

    @abc.abstractmethod
    def record(
        self,
        batch: Batch,
        sites: Sequence[str],
        select: torch.Tensor,
        *,
        want_logits: bool = False,
        final_norm: bool = False,
    ) -> Recording:
        """One forward pass; the activations of ``sites`` at ``select``."""

    def step(self, input_ids: torch.Tensor, sites: Sequence[str], past: Any = None) -> tuple[Recording, Any]:
        """One cached decoding step for generation: run ``input_ids [1, n]`` after the cached
        ``past`` (``None`` at the start), record ``sites`` at all ``n`` new positions and the
        model's logits there; returns the recording and the new cache."""
        raise NotImplementedError(f"{type(self).__name__} cannot generate token by token")

    def reduce(self, batch: Batch, sites: Sequence[str], select: torch.Tensor, work: Callable[[dict[str, torch.Tensor]], T]) -> T:
        """Record ``sites`` and apply ``work`` to them where they live; only its result returns.

        Local sources record and call ``work`` here; a remote source runs ``work`` next to the
        model (inside the trace), so only ``work``'s small result crosses the wire.
        """
        return work(self.record(batch, sites, select).acts)
