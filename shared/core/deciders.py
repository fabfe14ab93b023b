"""Deciders: an aggregate's pure parts, in one shape for every aggregate of the ledger.

A :class:`Decider` holds an aggregate's initial state, ``evolve``, ``decide``, the registry
of its events and the category its stream ids start with. It does no I/O:
:mod:`shared.core.aggregates` runs any decider against the event store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from uuid import UUID

from shared.core.events import DomainEvent, Envelope, EventRegistry, fold

__all__ = ["Decider"]

StateT = TypeVar("StateT")
CommandT = TypeVar("CommandT")


@dataclass(frozen=True)
class Decider(Generic[StateT, CommandT]):
    """An aggregate's pure parts; its streams are ``<category>:<pilot_id>[:<entity>]``."""

    category: str
    initial_state: Callable[[], StateT]
    evolve: Callable[[StateT, DomainEvent], StateT]
    decide: Callable[[StateT, CommandT], Sequence[DomainEvent]]
    registry: EventRegistry

    def stream_id(self, pilot_id: str, entity: str | UUID | None = None) -> str:
        """The stream of one aggregate: the pilot's own, or an entity's within the pilot."""
        if entity is None:
            return f"{self.category}:{pilot_id}"
        return f"{self.category}:{pilot_id}:{entity}"

    def fold(self, envelopes: Sequence[Envelope]) -> StateT:
        """The state after a stream's events."""
        return fold(envelopes, self.registry, self.initial_state(), self.evolve)
