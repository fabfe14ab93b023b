"""The one path every command takes: load an aggregate, fold, decide, append.

:class:`Aggregates` runs any :class:`~shared.core.deciders.Decider` against the event
store, inside the caller's transaction or with its one statement of writes (the command
runner's, which adds idempotency and retries on a lost race)::

    family = await aggregates.load(conn, families.DECIDER, pilot_id, family_id)
    decided = await aggregates.execute(conn, family, command, context, family_id)

Nothing else in a service loads a stream, folds it or appends to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel

from shared.core.commands import CommandResult
from shared.core.db import Connection
from shared.core.deciders import Decider
from shared.core.events import DomainEvent, Envelope
from shared.core.eventstore import CommandContext, EventStore, PendingEvent, Stream

__all__ = ["Aggregate", "Aggregates", "Decided", "answer"]

StateT = TypeVar("StateT")
CommandT = TypeVar("CommandT")


@dataclass(frozen=True)
class Aggregate(Generic[StateT, CommandT]):
    """An aggregate as loaded: its decider, its stream and the state the stream folds to."""

    decider: Decider[StateT, CommandT]
    pilot_id: str
    stream: Stream
    state: StateT


@dataclass(frozen=True)
class Decided(Generic[StateT]):
    """What a command decided and how it was recorded."""

    events: tuple[DomainEvent, ...]
    envelopes: tuple[Envelope, ...]
    state: StateT  # after the events
    stream_version: int  # the stream's version after them (unchanged when none)


_SERIALISE = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"


class Aggregates:
    """Loads aggregates and executes commands on them in one service's event store."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    async def serialise(
        self,
        conn: Connection,
        decider: Decider[StateT, CommandT],
        pilot_id: str,
        entity: str | UUID | None = None,
    ) -> None:
        """Hold the stream's writers in line until the transaction ends; call before load.

        For a stream many commands append to at once (a stratum's register): waiting in
        line costs less than losing a race and retrying, and never gives up.
        """
        await conn.execute(_SERIALISE, decider.stream_id(pilot_id, entity))

    async def load(
        self,
        conn: Connection,
        decider: Decider[StateT, CommandT],
        pilot_id: str,
        entity: str | UUID | None = None,
        *,
        last_only: bool = False,
    ) -> Aggregate[StateT, CommandT]:
        """The aggregate's stream and state; ``last_only`` folds its last event alone (for a
        decider whose state that event holds whole: its cost stays flat as the stream grows)."""
        stream = await self._store.load(
            conn, decider.stream_id(pilot_id, entity), last_only=last_only
        )
        return Aggregate(decider, pilot_id, stream, decider.fold(stream.envelopes))

    def new(
        self, decider: Decider[StateT, CommandT], pilot_id: str, entity: str | UUID
    ) -> Aggregate[StateT, CommandT]:
        """The aggregate of a stream its command creates, under an id it has just drawn:
        nothing to load (a round trip saved). Were the id taken, the append would be refused
        as a lost race."""
        stream = Stream(decider.stream_id(pilot_id, entity), ())
        return Aggregate(decider, pilot_id, stream, decider.fold(()))

    async def execute(
        self,
        conn: Connection,
        aggregate: Aggregate[StateT, CommandT],
        command: CommandT,
        context: CommandContext,
        family_id: str | None,
    ) -> Decided[StateT]:
        """Decide, and append what was decided after the version loaded.

        The decider's error refuses the command with nothing written; a writer that
        appended first is a ConcurrencyError, which the command runner retries.
        """
        decider = aggregate.decider
        events = tuple(decider.decide(aggregate.state, command))
        pending = [PendingEvent(event, aggregate.pilot_id, family_id) for event in events]
        envelopes = await self._store.append(conn, aggregate.stream, pending, context)
        state = aggregate.state
        for event in events:
            state = decider.evolve(state, event)
        version = envelopes[-1].stream_version if envelopes else aggregate.stream.version
        return Decided(events, envelopes, state, version)


def answer(status: int, model: type[BaseModel], decided: Decided[StateT]) -> CommandResult:
    """A command's answer: ``model`` filled from the last event decided, and its envelope's
    ``family_id``, ``event_id`` (the event's id) and ``stream_version``."""
    envelope, event = decided.envelopes[-1], decided.events[-1]
    values = {
        **event.model_dump(),
        "family_id": envelope.family_id,
        "event_id": envelope.id,
        "stream_version": envelope.stream_version,
    }
    body = model.model_validate({name: values[name] for name in model.model_fields})
    return CommandResult(status, body.model_dump(mode="json"))
