"""The interface every activation source implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar

import torch

from ..inputs import Batch
from .intrace import apply_intervention

__all__ = ["ActivationSource", "Recording", "Work", "ActivationRef", "RemoteActivations", "Intervention"]

T = TypeVar("T")


@dataclass
class Recording:
    """What one forward pass recorded: ``acts[site]`` is ``[B, P, d]`` (on the source's output
    device), ``logits`` the model's own float32 logits at the selected positions when asked for,
    ``last_layernorm`` the final norm's output there when asked for. ``past`` is the model's
    key/value cache after the pass when one was asked for (``use_cache=True``: generation)."""

    acts: dict[str, torch.Tensor]
    logits: torch.Tensor | None = None
    last_layernorm: torch.Tensor | None = None
    past: Any = None


@dataclass(frozen=True)
class Intervention:
    """A change to a site's value during the forward pass: the intervention seam that patching,
    ablation and steering use.

    At token ``positions`` (indices into each prompt of the batch) of ``site`` (``"embed"``,
    ``"resid_out_{i}"``, or ``"attn_out_{i}"`` / ``"mlp_out_{i}"`` where the model has that
    module), ``value`` replaces the site's vector (``mode="replace"``) or is added to it
    (``mode="add"``). ``value`` is ``[d]``, ``[len(positions), d]`` or, for different values
    per prompt, ``[B, len(positions), d]``; ``rows`` limits it to some prompts of the batch
    (``None``: all). Everything downstream of the site sees the changed value, and a recording
    of the site itself records it.
    """

    site: str
    positions: tuple[int, ...]
    value: torch.Tensor
    mode: str = "replace"
    rows: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("replace", "add"):
            raise ValueError(f"an intervention's mode is 'replace' or 'add', got {self.mode!r}")
        object.__setattr__(self, "positions", tuple(int(p) for p in (self.positions if isinstance(self.positions, (list, tuple, range)) else [self.positions])))
        if self.rows is not None:
            object.__setattr__(self, "rows", tuple(int(r) for r in self.rows))
        if not isinstance(self.value, torch.Tensor) or self.value.dim() not in (1, 2, 3):
            raise ValueError("an intervention's value is a tensor [d], [positions, d] or [prompts, positions, d]")

    def apply(self, x: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """``x [B, T, d]`` with this intervention applied (a new tensor; ``x`` is left alone);
        ``batch``: ``B`` of an ``x`` flattened to ``[B * T, d]``."""
        return apply_intervention(x, self.positions, self.value, self.mode, self.rows, batch)

    def as_data(self) -> dict[str, Any]:
        """Plain data for a trace's body (what travels to NDIF)."""
        return {"positions": list(self.positions), "value": self.value.detach().cpu(), "mode": self.mode,
                "rows": None if self.rows is None else list(self.rows)}


@dataclass
class Work(Generic[T]):
    """What a caller wants done with one forward batch's activations.

    ``local(acts)`` runs where the activations are (a local source; the body of a local nnsight
    trace). A source whose model is elsewhere (``remote``) cannot run a closure over local
    objects there: it runs the portable ``task`` of :mod:`lens_widget.sources.intrace` with the
    plain-data ``job`` next to the model and hands the small result to ``accept(result)``.
    """

    local: Callable[[dict[str, torch.Tensor]], T] | None
    task: str | None = None
    job: dict[str, Any] | None = None
    accept: Callable[[dict[str, Any]], T] | None = None


@dataclass(frozen=True)
class ActivationRef:
    """A residual vector that lives with a remote model: ``site`` at token ``position`` of the
    one prompt in ``batch``. The engine answers cell detail and trajectories of a ref by asking
    the source again (one trace), so they stay exact without the activations coming back."""

    batch: Batch
    site: str
    position: int


class RemoteActivations(Mapping[str, Any]):
    """``acts[site][col]`` for a remote source: :class:`ActivationRef` s instead of tensors (what
    ``LogitLens.run(..., return_activations=True)`` returns per prompt when the model is remote)."""

    def __init__(self, batch: Batch, sites: Sequence[str], positions: Sequence[int]):
        self.batch, self.sites, self.positions = batch, list(sites), [int(p) for p in positions]

    def __getitem__(self, site: str) -> "_RemoteSite":
        if site not in self.sites:
            raise KeyError(site)
        return _RemoteSite(self, site)

    def __iter__(self) -> Iterator[str]:
        return iter(self.sites)

    def __len__(self) -> int:
        return len(self.sites)


class _RemoteSite:
    def __init__(self, acts: RemoteActivations, site: str):
        self.acts, self.site = acts, site

    def __len__(self) -> int:
        return len(self.acts.positions)

    def __getitem__(self, col: int) -> ActivationRef:
        return ActivationRef(self.acts.batch, self.site, self.acts.positions[col])


class ActivationSource(abc.ABC):
    """Runs a model once over a batch and records sites at chosen positions.

    ``select`` is a ``[B, P]`` long tensor of token indices per prompt (shorter prompts repeat a
    valid index; the caller masks them). ``remote`` is True when the model's weights are not
    (necessarily) here: decoding then goes through :meth:`reduce` with a portable :class:`Work`.
    """

    remote: bool = False

    @abc.abstractmethod
    def record(
        self,
        batch: Batch,
        sites: Sequence[str],
        select: torch.Tensor,
        *,
        want_logits: bool = False,
        final_norm: bool = False,
        past: Any = None,
        use_cache: bool = False,
        interventions: Sequence[Intervention] = (),
    ) -> Recording:
        """One forward pass; the activations of ``sites`` at ``select``; ``interventions``
        change sites' values during the pass (see :class:`Intervention`).

        Generation (:mod:`lens_widget.generation`) passes ``use_cache=True`` and, after the
        first pass, the previous ``Recording.past``: ``batch`` then holds only the new tokens
        (one prompt), ``select`` indexes them, and ``want_logits`` returns the model's logits
        at the last new token only. Sources that cannot cache raise ``NotImplementedError``."""

    def reduce(self, batch: Batch, sites: Sequence[str], select: torch.Tensor, work: "Work[T] | Callable[[dict[str, torch.Tensor]], T]",
               interventions: Sequence[Intervention] = ()) -> T:
        """Record ``sites`` and apply ``work`` to them where they live; only its result returns.

        Local sources record and call ``work`` (or ``work.local``) here; a remote source runs
        ``work.task`` next to the model (inside the trace), so only its small result crosses the
        wire (see :class:`Work`).
        """
        fn = work.local if isinstance(work, Work) else work
        if fn is None:
            raise TypeError("this work has no local form")
        return fn(self.record(batch, sites, select, interventions=interventions).acts)
