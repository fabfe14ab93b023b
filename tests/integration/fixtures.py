"""Events and streams for exercising the shared core without any one service's domain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import ClassVar
from uuid import UUID, uuid4

import asyncpg

from shared.core.db import dsn, open_pool
from shared.core.events import Actor, DomainEvent, Envelope
from shared.core.eventstore import CommandContext, EventStore, PendingEvent, Stream
from shared.core.settings import Settings
from shared.web.registry import migrate

__all__ = ["CONTEXT", "Noted", "envelopes_for", "migrated_pool", "new_store", "utcnow"]


class Noted(DomainEvent):
    """A test fact: a number on a stream, optionally marked as poison for a handler."""

    event_type: ClassVar[str] = "test.noted"
    number: int
    poison: bool = False


CONTEXT = CommandContext(actor=Actor(sub="tester", role="admin"), correlation_id="test")


@asynccontextmanager
async def migrated_pool(
    settings: Settings, service: str, max_size: int = 4
) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    """A pool on one service's database, created and migrated for this test."""
    await migrate(settings, [service])
    async with open_pool(
        dsn(settings, settings.database_of(service)), min_size=1, max_size=max_size
    ) as pool:
        yield pool


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_store(ids: Callable[[], UUID] = uuid4, source: str = "ledger/test") -> EventStore:
    return EventStore(source, utcnow, ids)


def envelopes_for(
    pilot: str,
    family: str,
    numbers: list[int],
    poison: frozenset[int] = frozenset(),
    source: str = "ledger/test",
) -> tuple[Envelope, ...]:
    """A family stream's envelopes, sealed as the store of ``source`` would (versions 1..n)."""
    stream = Stream(f"family:{pilot}:{family}", ())
    return new_store(source=source).seal(
        stream,
        [PendingEvent(Noted(number=n, poison=n in poison), pilot, family) for n in numbers],
        CONTEXT,
    )
