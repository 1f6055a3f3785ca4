"""The interface every activation source implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar

import torch

from ..inputs import Batch
from .intrace import apply_intervention

__all__ = ["ActivationSource", "Recording", "Work", "ActivationRef", "RemoteActivations", "Intervention", "Forward", "wanted_refs"]

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
    per prompt, ``[B, len(positions), d]``, or an :class:`ActivationRef`: the vector of a site
    at a position of another prompt, recorded where the model is (a remote source records and
    uses it inside one job, so it never comes back). ``rows`` limits it to some prompts of the
    batch (``None``: all). Everything downstream of the site sees the changed value, and a
    recording of the site itself records it.
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
        if isinstance(self.value, ActivationRef):
            return
        if not isinstance(self.value, torch.Tensor) or self.value.dim() not in (1, 2, 3):
            raise ValueError("an intervention's value is a tensor [d], [positions, d] or [prompts, positions, d], or an ActivationRef")

    def apply(self, x: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """``x [B, T, d]`` with this intervention applied (a new tensor; ``x`` is left alone);
        ``batch``: ``B`` of an ``x`` flattened to ``[B * T, d]``."""
        if isinstance(self.value, ActivationRef):
            raise TypeError("an intervention whose value is an ActivationRef is applied by its source (ActivationSource.resolved)")
        return apply_intervention(x, self.positions, self.value, self.mode, self.rows, batch)

    def as_data(self) -> dict[str, Any]:
        """Plain data for a trace's body (what travels to NDIF; an :class:`ActivationRef` value is
        ``None`` here: the source says where the trace finds it)."""
        value = None if isinstance(self.value, ActivationRef) else self.value.detach().cpu()
        return {"positions": list(self.positions), "value": value, "mode": self.mode,
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


@dataclass
class Forward:
    """One forward pass among several asked together (:meth:`ActivationSource.token_logits`):
    ``batch``, the ``[B, P]`` token positions ``select`` whose logits are wanted, and the
    ``interventions`` applied during it."""

    batch: Batch
    select: torch.Tensor
    interventions: Sequence[Intervention] = ()


@dataclass(frozen=True, eq=False)
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
    #: :meth:`token_logits` records a prompt's :class:`ActivationRef` values in that prompt's own
    #: plain forward (True), or in a forward of their own (False): what a caller counts
    refs_share_a_forward: bool = True

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
            raise TypeError(f"this work ({work.task if isinstance(work, Work) else work!r}) runs only next to a remote model: it has no local form")
        return fn(self.record(batch, sites, select, interventions=interventions).acts)

    def token_logits(self, forwards: Sequence[Forward], ids: torch.Tensor, done: Callable[[int], Any] | None = None) -> list[torch.Tensor]:
        """The model's own float32 logits of tokens ``ids`` at each forward's ``select``
        (``[B, P, len(ids)]`` each), for several forward passes asked together; ``done(i)`` after
        forward ``i``. A local source runs them one after the other; the :class:`ActivationRef`
        values they use are recorded once per prompt, in that prompt's own plain forward (one
        row, no interventions) when it comes first among them, else in a forward of their own
        just before they are needed. A remote one sends them all as one job."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        wanted = wanted_refs([iv for f in forwards for iv in f.interventions])
        found: dict[tuple[int, str, int], torch.Tensor] = {}
        out = []
        for i, f in enumerate(forwards):
            refs = wanted.pop(id(f.batch), None) if not f.interventions and f.batch.input_ids.shape[0] == 1 else None
            if refs is not None:  # the prompt's refs and its logits from one forward
                logits = self._record_refs(f.batch, refs[1], found, f.select[0].tolist())
            else:  # every ref of a prompt this forward needs, for all the forwards, in one forward
                for key in {id(iv.value.batch) for iv in f.interventions if isinstance(iv.value, ActivationRef)} & wanted.keys():
                    self._record_refs(*wanted.pop(key), found)
                ivs = self.resolved(f.interventions, found)
                logits = self.record(f.batch, [], f.select, want_logits=True, interventions=ivs).logits
            out.append(logits[..., ids.to(logits.device)])  # type: ignore[index]
            if done is not None:
                done(i)
        return out

    def _record_refs(self, batch: Batch, sites: Mapping[str, set[int]], found: dict[tuple[int, str, int], torch.Tensor],
                     logits_at: Sequence[int] = ()) -> torch.Tensor | None:
        """Record the ref'd ``sites`` (``{site: positions}``) of the one prompt in ``batch`` into
        ``found``; with ``logits_at``, the model's logits at those positions (``[1, P, V]``) too."""
        cols = sorted(set().union(*sites.values(), logits_at))
        rec = self.record(batch, list(sites), torch.tensor([cols]), want_logits=bool(logits_at))
        for site, positions in sites.items():
            for p in positions:
                found[id(batch), site, p] = rec.acts[site][0, cols.index(p)]
        if not logits_at:
            return None
        return rec.logits[:, [cols.index(int(p)) for p in logits_at]]  # type: ignore[index]

    def resolved(self, interventions: Sequence[Intervention], found: dict[tuple[int, str, int], torch.Tensor] | None = None) -> list[Intervention]:
        """``interventions`` with every :class:`ActivationRef` value replaced by the vector it
        names, recorded here (one forward per distinct prompt batch) unless ``found`` (keyed by
        ``(id(batch), site, position)``, filled as it goes) holds it already."""
        if not any(isinstance(iv.value, ActivationRef) for iv in interventions):
            return list(interventions)
        found = {} if found is None else found
        for batch, sites in wanted_refs(interventions, found).values():
            self._record_refs(batch, sites, found)
        return [Intervention(iv.site, iv.positions, found[id(iv.value.batch), iv.value.site, int(iv.value.position)], iv.mode, iv.rows)
                if isinstance(iv.value, ActivationRef) else iv for iv in interventions]


def wanted_refs(interventions: Sequence[Intervention], found: Mapping[tuple[int, str, int], Any] | None = None) -> dict[int, tuple[Batch, dict[str, set[int]]]]:
    """The :class:`ActivationRef` values of ``interventions`` not in ``found``, by prompt batch:
    ``{id(batch): (batch, {site: positions})}``."""
    wanted: dict[int, tuple[Batch, dict[str, set[int]]]] = {}
    for iv in interventions:
        ref = iv.value
        if isinstance(ref, ActivationRef) and (found is None or (id(ref.batch), ref.site, int(ref.position)) not in found):
            wanted.setdefault(id(ref.batch), (ref.batch, {}))[1].setdefault(ref.site, set()).add(int(ref.position))
    return wanted
