"""The event store on asyncpg: load a stream, append with an expected version, chain hashes.

Every append also writes the new positions to ``outbox`` and notifies the relay, in the
caller's transaction and in the same statement: the commit is the moment a fact exists, the
relay distributes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.core.db import Connection
from shared.core.errors import EventTooLargeError
from shared.core.events import (
    CURRENT_FORMAT,
    GENESIS_HASH,
    Actor,
    DomainEvent,
    Envelope,
    chain_hash_and_size,
)
from shared.core.metrics import Metrics
from shared.core.tracing import current_traceparent
from shared.core.writes import Write, write

__all__ = [
    "MAX_EVENT_BYTES",
    "OUTBOX_CHANNEL",
    "REHEARSAL",
    "CommandContext",
    "EventStore",
    "PendingEvent",
    "Stream",
    "counted_once_committed",
    "put_back",
    "streams_kept",
    "uncounted_if_undone",
]

OUTBOX_CHANNEL = "ledger_outbox"
# An event's encoded envelope at most: far above any real event (a few KiB), far below what
# the relay's producer and the broker accept (1 MiB), so that every appended event can be
# published. One the relay could not publish would hold up every pilot's events behind it.
MAX_EVENT_BYTES = 256 * 1024

_LOAD = "SELECT envelope FROM events WHERE stream_id = $1 ORDER BY stream_version"
_LOAD_LAST = """
SELECT envelope FROM events WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1
"""
# One statement: the events, their outbox rows, and the relay's wake-up call (delivered at
# commit; PostgreSQL folds a transaction's identical notifications into one). A write of
# shared.core.writes: sent alone, or with the rest of a command's writes.
_APPEND = (
    (
        "appended",
        """
    INSERT INTO events
        (event_id, stream_id, stream_version, type, pilot_id, family_id, recorded_at, envelope)
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::integer[], $4::text[], $5::text[], $6::text[],
        $7::timestamptz[], $8::jsonb[])
    RETURNING position""",
    ),
    ("queued", "INSERT INTO outbox (position, traceparent) SELECT position, $9 FROM {appended}"),
)
_STREAM_VERSION_CONSTRAINT = "events_stream_id_stream_version_key"
# Events already published, put back into a restored store: no outbox row (the topic has them).
_PUT_BACK = """
INSERT INTO events
    (event_id, stream_id, stream_version, type, pilot_id, family_id, recorded_at, envelope)
SELECT * FROM unnest(
    $1::uuid[], $2::text[], $3::integer[], $4::text[], $5::text[], $6::text[],
    $7::timestamptz[], $8::jsonb[])
"""

REHEARSAL: ContextVar[bool] = ContextVar("rehearsal", default=False)
"""True while a command runs only to be rolled back (a replay's authorisation): what it
appends is never committed, so it is neither counted nor kept (:func:`streams_kept`)."""

# What the transaction this task is in has appended, counted once it commits.
_UNCOMMITTED: ContextVar[list[tuple[Metrics, str]] | None] = ContextVar(
    "appended_uncommitted", default=None
)


@contextlib.contextmanager
def counted_once_committed() -> Iterator[None]:
    """Wrap a transaction (``with counted_once_committed(): async with ... transaction():``):
    the events appended in it are counted in ``ledger_events_appended_total`` once it has
    committed, that is once the block is left without an error, and never if it rolled back.
    Within another such block, the outer one counts."""
    if _UNCOMMITTED.get() is not None:
        yield
        return
    appended: list[tuple[Metrics, str]] = []
    token = _UNCOMMITTED.set(appended)
    try:
        yield
    finally:
        _UNCOMMITTED.reset(token)
    for metrics, event_type in appended:  # reached only when the block raised nothing
        metrics.events_appended.labels(event_type).inc()


@contextlib.contextmanager
def uncounted_if_undone() -> Iterator[None]:
    """Wrap a savepoint: what it appended is not counted if it is rolled back (it raised)."""
    appended = _UNCOMMITTED.get()
    before = len(appended) if appended is not None else 0
    try:
        yield
    except BaseException:
        if appended is not None:
            del appended[before:]
        raise


@dataclass
class _Kept:
    """The streams kept for a block (:func:`streams_kept`), and the connection they are of."""

    conn: Connection
    streams: dict[str, Stream]


_KEPT: ContextVar[_Kept | None] = ContextVar("streams_kept", default=None)


@contextlib.contextmanager
def streams_kept(conn: Connection) -> Iterator[None]:
    """Within this block, a stream read or written on ``conn`` is kept as it then stands,
    and read from here again (a batch's lines load their pilot once, not once each).

    Only for a transaction that is undone whole or not at all, as commands run together
    without savepoints are: a savepoint rolled back would leave here what it appended. A
    stream another writer appends to meanwhile is read as it stood, as a command alone
    reads it a moment before it commits; an append after it is refused as a lost race.
    """
    token = _KEPT.set(_Kept(conn, {}))
    try:
        yield
    finally:
        _KEPT.reset(token)


def _kept(conn: Connection) -> dict[str, Stream] | None:
    kept = _KEPT.get()
    return kept.streams if kept is not None and kept.conn is conn else None


@dataclass(frozen=True)
class CommandContext:
    """Who asks, on whose behalf, and why: becomes every new event's metadata."""

    actor: Actor
    correlation_id: str
    causation_id: str | None = None
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class PendingEvent:
    """A decided event waiting to be appended to a stream."""

    event: DomainEvent
    pilot_id: str
    family_id: str | None = None


@dataclass(frozen=True)
class Stream:
    """A stream as loaded: its events, its version and the hash the next event chains to."""

    stream_id: str
    envelopes: tuple[Envelope, ...]

    @property
    def version(self) -> int:
        """The version of the last event, 0 for a stream with none."""
        return self.envelopes[-1].stream_version if self.envelopes else 0

    @property
    def last_hash(self) -> str:
        """The hash of the last event, or the genesis hash."""
        return self.envelopes[-1].hash if self.envelopes else GENESIS_HASH


def _subject(pilot_id: str, family_id: str | None) -> str:
    if family_id is None:
        return f"pilots/{pilot_id}"
    return f"pilots/{pilot_id}/families/{family_id}"


class EventStore:
    """Reads and appends streams in one service's database, inside the caller's transaction."""

    def __init__(
        self,
        source: str,
        clock: Callable[[], datetime],
        ids: Callable[[], UUID],
        metrics: Metrics | None = None,
    ) -> None:
        self._source = source
        self._clock = clock
        self._ids = ids
        self._metrics = metrics

    async def load(self, conn: Connection, stream_id: str, *, last_only: bool = False) -> Stream:
        """Every event of one stream, in order; or only its last (enough to append after it,
        for a stream whose last event holds all its state needs)."""
        kept = None if last_only else _kept(conn)
        if kept is not None and stream_id in kept:
            return kept[stream_id]
        rows = await conn.fetch(_LOAD_LAST if last_only else _LOAD, stream_id)
        stream = Stream(stream_id, tuple(Envelope.model_validate(row["envelope"]) for row in rows))
        if kept is not None:
            kept[stream_id] = stream
        return stream

    def seal(
        self, stream: Stream, pending: Sequence[PendingEvent], context: CommandContext
    ) -> tuple[Envelope, ...]:
        """Wrap decided events in envelopes that continue the stream's version and hash chain."""
        return tuple(envelope for envelope, _ in self._seal(stream, pending, context))

    def _seal(
        self, stream: Stream, pending: Sequence[PendingEvent], context: CommandContext
    ) -> list[tuple[Envelope, dict[str, Any]]]:
        """Each envelope with its JSON object, as the store keeps it."""
        recorded_at = self._clock()
        occurred_at = context.occurred_at or recorded_at
        sealed: list[tuple[Envelope, dict[str, Any]]] = []
        prev_hash, version = stream.last_hash, stream.version
        for item in pending:
            version += 1
            unsealed = Envelope(
                id=self._ids(),
                type=item.event.event_type,
                source=self._source,
                time=recorded_at,
                subject=_subject(item.pilot_id, item.family_id),
                schema_version=item.event.schema_version,
                pilot_id=item.pilot_id,
                family_id=item.family_id,
                stream_id=stream.stream_id,
                stream_version=version,
                occurred_at=occurred_at,
                actor=context.actor,
                correlation_id=context.correlation_id,
                causation_id=context.causation_id,
                data=item.event.model_dump(mode="json"),
                prev_hash=prev_hash,
                hash="",
                wire_format=CURRENT_FORMAT,
            )
            body = unsealed.to_json_dict()
            prev_hash, size = chain_hash_and_size(body)
            body["hash"] = prev_hash
            if size > MAX_EVENT_BYTES:
                raise EventTooLargeError(
                    f"the {item.event.event_type} event this command decides would be {size} "
                    f"bytes, above the ledger's {MAX_EVENT_BYTES}; send less"
                )
            sealed.append((Envelope.model_validate(body), body))
        return sealed

    async def append(
        self,
        conn: Connection,
        stream: Stream,
        pending: Sequence[PendingEvent],
        context: CommandContext,
    ) -> tuple[Envelope, ...]:
        """Append after ``stream.version``; a writer that got there first is a ConcurrencyError."""
        if not pending:
            return ()
        sealed = self._seal(stream, pending, context)
        envelopes = tuple(envelope for envelope, _ in sealed)
        args = (
            [e.id for e in envelopes],
            [e.stream_id for e in envelopes],
            [e.stream_version for e in envelopes],
            [e.type for e in envelopes],
            [e.pilot_id for e in envelopes],
            [e.family_id for e in envelopes],
            [e.time for e in envelopes],
            [body for _, body in sealed],
            current_traceparent(),
        )
        # Another writer that appended first took the stream's next version: a lost race.
        moved = f"stream {stream.stream_id} moved past version {stream.version}"
        lost = {_STREAM_VERSION_CONSTRAINT: moved}
        await write(conn, Write(_APPEND, args, lost, notify=OUTBOX_CHANNEL))
        if REHEARSAL.get():
            return envelopes
        kept = _kept(conn)
        if kept is not None:
            # Appended after the stream kept whole, or after nothing: it now stands whole as
            # appended. After a part of it (its last event alone), what was kept is stale.
            if kept.get(stream.stream_id) is stream or not stream.envelopes:
                kept[stream.stream_id] = Stream(stream.stream_id, stream.envelopes + envelopes)
            else:
                kept.pop(stream.stream_id, None)
        if self._metrics is not None:
            uncommitted = _UNCOMMITTED.get()
            for envelope in envelopes:
                if uncommitted is None:  # no transaction said when it commits: count now
                    self._metrics.events_appended.labels(envelope.type).inc()
                else:
                    uncommitted.append((self._metrics, envelope.type))
        return envelopes


async def put_back(conn: Connection, envelopes: Sequence[tuple[Envelope, dict[str, Any]]]) -> None:
    """Store events as they were published (each envelope with its JSON object, hash and
    all), without an outbox row: the topic already holds them. For ``ledger recover``,
    which checks first that each continues its stream; the store's unique version per
    stream refuses one that would fork it."""
    await conn.execute(
        _PUT_BACK,
        [e.id for e, _ in envelopes],
        [e.stream_id for e, _ in envelopes],
        [e.stream_version for e, _ in envelopes],
        [e.type for e, _ in envelopes],
        [e.pilot_id for e, _ in envelopes],
        [e.family_id for e, _ in envelopes],
        [e.time for e, _ in envelopes],
        [body for _, body in envelopes],
    )
