"""One partition's batch, applied in one transaction with its offset and streams' versions.

The fast path applies the whole batch in one transaction; a record whose handler fails
sends the batch down the careful path, where each record runs in a savepoint, so that the
failure parks that record (and its family's later ones) and the rest still commit. A
consumer with a :class:`BatchHandler` applies the fast path's records with it, all at once,
after each has been checked: a few set-based statements for the batch, not a few per record.

A record that cannot be what it claims is rejected, never applied: it is not a ledger
event at all (not JSON, no envelope); its ``source`` is not the service that owns the topic;
it is a type another topic carries, or on a kind of stream the topic's owner does not keep
(:class:`~shared.core.topics.TopicContract`); its ``hash`` is not the hash of its content;
its ``prev_hash`` does not continue the stream as applied here; or it repeats the last
applied version with different content. It is parked under a key of its own and
dead-lettered, so the alert names it, and it holds nothing back: it carries no place in any
stream that later records could depend on. (If it was a real event damaged on its way, the
next event of its stream arrives after a gap, and that one parks its family.)

A record that is what it claims but cannot be applied (its handler fails, its schema version
is newer than this code reads, an earlier version of its stream is missing) is parked under
its family's key, with every later record of the family behind it, until it can be applied:
parked records are tried again whenever the consumer starts, and an operator can retry or
release them (``ledger deadletters``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from shared.core.db import Connection, is_transient
from shared.core.errors import ConcurrencyError
from shared.core.events import Envelope, carries_its_hash, wire_loads
from shared.core.eventstore import counted_once_committed, uncounted_if_undone
from shared.core.metrics import Metrics
from shared.core.topics import TopicOwner
from shared.core.tracing import TRACEPARENT, span_from

__all__ = [
    "GAP",
    "REJECTED",
    "BatchApplier",
    "BatchHandler",
    "EventHandler",
    "decode_record",
    "retriable",
]

_LOCK_OFFSET = """
INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) VALUES ($1, $2, $3, 0)
ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = consumer_offsets.next_offset
RETURNING next_offset
"""
_STORED_OFFSETS = "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1"
_VERSIONS = """
SELECT stream_id, version, last_hash FROM consumer_streams
WHERE consumer = $1 AND stream_id = ANY($2::text[])
"""
_SAVE_VERSIONS = """
INSERT INTO consumer_streams (consumer, stream_id, version, last_hash)
SELECT $1, * FROM unnest($2::text[], $3::integer[], $4::text[])
ON CONFLICT (consumer, stream_id)
DO UPDATE SET version = excluded.version, last_hash = excluded.last_hash
"""
# What a batch starts from once its offset is locked, in one round trip: the versions of
# its records' streams and the families parked on its topic. Not in the locking statement:
# one that waited there for a consumer that lost the partition would read both as they were
# before that consumer committed (a statement's snapshot is taken when it starts).
_BEGUN = f"""
WITH known AS ({_VERSIONS})
SELECT
    ARRAY(SELECT stream_id FROM known ORDER BY stream_id) AS stream_ids,
    ARRAY(SELECT version FROM known ORDER BY stream_id) AS versions,
    ARRAY(SELECT last_hash FROM known ORDER BY stream_id) AS last_hashes,
    ARRAY(SELECT DISTINCT record_key FROM consumer_parked WHERE consumer = $1 AND topic = $3)
        AS parked_keys
"""  # noqa: S608 - composed of this module's constants only
# Where a batch leaves them, in one round trip: the versions it changed, the offset after it.
_LEAVE = f"""
WITH saved AS ({_SAVE_VERSIONS})
UPDATE consumer_offsets SET next_offset = $5 WHERE consumer = $1 AND topic = $6 AND partition = $7
"""  # noqa: S608 - composed of this module's constants only
_PARK = """
INSERT INTO consumer_parked
    (consumer, topic, partition, "offset", record_key, value, error, deadletter_due, origin_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING
"""
HELD_BEHIND = "held behind an earlier record of the same family that could not be applied"
GAP = "gap: "
REJECTED = "rejected: "


class EventHandler(Protocol):
    """Applies one event to the consumer's database, inside the runner's transaction."""

    def __call__(self, conn: Connection, envelope: Envelope) -> Awaitable[None]: ...


class BatchHandler(Protocol):
    """Applies many events, in order, inside the runner's transaction, with the effect the
    consumer's :class:`EventHandler` would have applying each in turn."""

    def __call__(self, conn: Connection, envelopes: Sequence[Envelope]) -> Awaitable[None]: ...


class CarefulRetryNeededError(Exception):
    """A record failed on the fast path; the batch is redone record by record."""


@dataclass
class StreamVersions:
    """The last applied version of each stream a transaction touches, and what it changed."""

    known: dict[str, int]
    hashes: dict[str, str | None] = field(default_factory=dict)  # of each last applied event
    changed: dict[str, int] = field(default_factory=dict)

    @classmethod
    async def load(
        cls, conn: Connection, consumer: str, envelopes: Sequence[Envelope | str]
    ) -> StreamVersions:
        """The stored versions of the streams these envelopes belong to."""
        rows = await conn.fetch(_VERSIONS, consumer, _streams_of(envelopes))
        return cls(
            {row["stream_id"]: row["version"] for row in rows},
            {row["stream_id"]: row["last_hash"] for row in rows},
        )

    def advance(self, envelope: Envelope) -> None:
        """The envelope's stream now stands at its version."""
        self.known[envelope.stream_id] = self.changed[envelope.stream_id] = envelope.stream_version
        self.hashes[envelope.stream_id] = envelope.hash

    async def save(self, conn: Connection, consumer: str) -> None:
        """Store what changed, in the caller's transaction."""
        if self.changed:
            await conn.execute(_SAVE_VERSIONS, consumer, *self.changes())

    def changes(self) -> tuple[list[str], list[int], list[str | None]]:
        """The streams that changed, their versions and last hashes, as three columns."""
        streams = list(self.changed)
        return (
            streams,
            [self.changed[stream] for stream in streams],
            [self.hashes.get(stream) for stream in streams],
        )


class BatchApplier:
    """Applies records of one consumer to its database: batches, and single parked records."""

    def __init__(
        self,
        name: str,
        pool: asyncpg.Pool[asyncpg.Record],
        handler: EventHandler,
        metrics: Metrics,
        owners: Mapping[str, TopicOwner] | None = None,
        many: BatchHandler | None = None,
        prepare: BatchHandler | None = None,
    ) -> None:
        self.name = name
        self.pool = pool
        self._handler = handler
        self._many = many
        # Given a batch's events before any is applied, in its transaction (approval takes
        # every lock the batch needs there, in one order: see services.approval.handlers).
        self._prepare = prepare
        self._owners = dict(owners or {})  # topic -> who alone writes it, and what
        # Per topic, the types only other topics carry: such a record is a forgery there.
        self._foreign = {
            topic: frozenset().union(
                *(other.contract.types for name, other in self._owners.items() if name != topic)
            )
            for topic in self._owners
        }
        self._metrics = metrics
        self._log = structlog.get_logger().bind(component="consumer", consumer=name)

    async def stored_offsets(self) -> dict[tuple[str, int], int]:
        """Where this consumer's effects have got to, per topic and partition."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_STORED_OFFSETS, self.name)
        return {(row["topic"], row["partition"]): row["next_offset"] for row in rows}

    async def apply(
        self,
        consumer: AIOKafkaConsumer,
        partition: TopicPartition,
        records: Sequence[Any],
        *,
        live: bool = True,
    ) -> int | None:
        """Apply a partition's batch: how many records it parked as failed, or None to read it
        again (a transient error rolled it back, and the consumer is sought back to where the
        effects stand). ``live``: the consumer follows the topics as they are written, so
        what it parks is marked due for the dead-letter topic in the batch's transaction (see
        :mod:`.deadletters`), and each event applied is logged, to follow a request through
        the services; a catch-up (a rebuild) does neither."""
        try:
            try:
                return await self._apply_batch(partition, records, careful=False, live=live)
            except CarefulRetryNeededError:
                return await self._apply_batch(partition, records, careful=True, live=live)
        except Exception as error:
            if not retriable(error):
                raise
            self._log.warning("consumer_batch_retry", error=repr(error))
            stored = (await self.stored_offsets()).get((partition.topic, partition.partition), 0)
            consumer.seek(partition, stored)
            await asyncio.sleep(0.5)
            return None

    async def _apply_batch(
        self, partition: TopicPartition, records: Sequence[Any], *, careful: bool, live: bool
    ) -> int:
        with counted_once_committed():  # what a handler appends (approval's decisions)
            return await self._apply_in_transaction(partition, records, careful=careful, live=live)

    async def _apply_in_transaction(
        self, partition: TopicPartition, records: Sequence[Any], *, careful: bool, live: bool
    ) -> int:
        topic = partition.topic
        async with self.pool.acquire() as conn, conn.transaction():
            # Locking the offset row fences a consumer that lost this partition in a rebalance.
            next_offset = await conn.fetchval(_LOCK_OFFSET, self.name, topic, partition.partition)
            fresh = [record for record in records if record.offset >= next_offset]
            if not fresh:
                return 0
            decoded = {record.offset: decode_record(record.value) for record in fresh}
            begun = await conn.fetchrow(_BEGUN, self.name, _streams_of(decoded.values()), topic)
            assert begun is not None  # a SELECT of arrays, no FROM: always one row
            batch = _Batch(
                parked_keys=set(begun["parked_keys"]),
                envelopes=decoded,
                versions=StreamVersions(
                    dict(zip(begun["stream_ids"], begun["versions"], strict=True)),
                    dict(zip(begun["stream_ids"], begun["last_hashes"], strict=True)),
                ),
            )
            if self._prepare is not None:
                events = [e for e in batch.envelopes.values() if isinstance(e, Envelope)]
                await self._prepare(conn, events)
            if self._many is not None and not careful:
                batch.deferred = []
            for record in fresh:
                await self._apply_record(conn, partition, record, batch, careful=careful, due=live)
            if batch.deferred:
                await self._apply_many(conn, batch.deferred)
            await conn.execute(
                _LEAVE,
                self.name,
                *batch.versions.changes(),
                fresh[-1].offset + 1,
                topic,
                partition.partition,
            )
        self._metrics.events_consumed.labels(self.name, topic).inc(batch.applied)
        if not live:  # a rebuild's million lines would follow no request
            return batch.failed
        for envelope in batch.effects:  # committed: a request can be followed through every service
            self._log.info(
                "event_applied",
                type=envelope.type,
                event_id=str(envelope.id),
                correlation_id=envelope.correlation_id,
                pilot_id=envelope.pilot_id,
                stream_id=envelope.stream_id,
                stream_version=envelope.stream_version,
            )
        return batch.failed

    async def _apply_record(
        self,
        conn: Connection,
        partition: TopicPartition,
        record: ConsumerRecord[bytes, bytes],
        batch: _Batch,
        *,
        careful: bool,
        due: bool,
    ) -> None:
        key = origin = record.key.decode(errors="replace") if record.key else ""
        envelope = batch.envelopes[record.offset]
        if key in batch.parked_keys:
            error: str | None = HELD_BEHIND
            self._metrics.parked.labels(self.name, partition.topic).inc()
        else:
            error = await self.apply_one(
                conn,
                envelope,
                batch.versions,
                topic=partition.topic,
                careful=careful,
                traceparent=_header(record, TRACEPARENT),
                deferred=batch.deferred,
            )
        if error is not None and error.startswith(REJECTED):
            key = f"{REJECTED}{partition.partition}:{record.offset}"  # holds nothing back
        if error is None:
            batch.applied += 1
            if (
                isinstance(envelope, Envelope)
                and batch.versions.changed.get(envelope.stream_id) == envelope.stream_version
            ):
                batch.effects.append(envelope)
            return
        batch.parked_keys.add(key)
        await conn.execute(
            _PARK,
            self.name,
            partition.topic,
            partition.partition,
            record.offset,
            key,
            # A record without a value (a tombstone anyone who may write the topic can
            # send) is kept as no bytes, its error saying so: parking it as NULL failed, and
            # the consumer retried it for ever, its partition stopped behind it.
            record.value if record.value is not None else b"",
            error,
            due and error != HELD_BEHIND,
            origin,
        )

        if error != HELD_BEHIND:
            batch.failed += 1

    async def apply_one(
        self,
        conn: Connection,
        envelope: Envelope | str,
        versions: StreamVersions,
        *,
        topic: str,
        careful: bool,
        traceparent: str | None = None,
        deferred: list[Envelope] | None = None,
    ) -> str | None:
        """Apply one decoded record; return why it cannot be applied, or None.
        ``traceparent``: the trace it was recorded in, which its handling joins. With
        ``deferred``, a record that passes every check joins it, for the batch handler to
        apply with the rest of its batch, instead of being handled now."""
        if isinstance(envelope, str):
            return envelope
        rejection = self._rejection(envelope, topic, versions)
        if rejection is not None:
            return REJECTED + rejection
        last = versions.known.get(envelope.stream_id, 0)
        if envelope.stream_version <= last:
            return None  # a redelivery: its effect is already here
        if envelope.stream_version != last + 1:
            return (
                f"{GAP}stream {envelope.stream_id} jumped from version {last} "
                f"to {envelope.stream_version}: an earlier event is missing"
            )
        try:
            with span_from(
                traceparent,
                f"{self.name} apply {envelope.type}",
                {"ledger.event_id": str(envelope.id), "ledger.stream_id": envelope.stream_id},
            ):
                if deferred is not None:
                    deferred.append(envelope)
                else:
                    # Whatever the handler logs carries the event's ids.
                    with structlog.contextvars.bound_contextvars(
                        correlation_id=envelope.correlation_id,
                        event_id=str(envelope.id),
                        pilot_id=envelope.pilot_id,
                    ):
                        await self._handle(conn, envelope, careful=careful)
        except Exception as error:
            if retriable(error):
                raise
            if not careful:
                raise CarefulRetryNeededError from error
            return f"{type(error).__name__}: {error}"
        versions.advance(envelope)
        return None

    def _rejection(self, envelope: Envelope, topic: str, versions: StreamVersions) -> str | None:
        """Why the record cannot be the event it claims to be, or None."""
        owner = self._owners.get(topic)
        if owner is not None:
            if envelope.source != owner.source:
                return f"source {envelope.source!r} on {topic}, which only {owner.source} writes"
            refusal = owner.contract.refusal(envelope, self._foreign[topic])
            if refusal is not None:
                return f"event {envelope.id}: {refusal}"
        last = versions.known.get(envelope.stream_id, 0)
        last_hash = versions.hashes.get(envelope.stream_id)
        if last_hash is None:
            return None  # nothing applied yet, or applied before hashes were kept
        if envelope.stream_version == last + 1 and envelope.prev_hash != last_hash:
            return (
                f"event {envelope.id}: its prev_hash does not continue stream "
                f"{envelope.stream_id} as applied here (version {last})"
            )
        if envelope.stream_version == last and envelope.hash != last_hash:
            return (
                f"event {envelope.id} claims version {last} of {envelope.stream_id}, "
                "which is another event"
            )
        return None

    async def _apply_many(self, conn: Connection, envelopes: Sequence[Envelope]) -> None:
        """The fast path's checked records, at once; a failure redoes the batch carefully."""
        assert self._many is not None
        try:
            with span_from(None, f"{self.name} apply {len(envelopes)} events", {}):
                await self._many(conn, envelopes)
        except Exception as error:
            if retriable(error):
                raise
            raise CarefulRetryNeededError from error

    async def _handle(self, conn: Connection, envelope: Envelope, *, careful: bool) -> None:
        if careful:
            with uncounted_if_undone():
                async with conn.transaction():  # a savepoint: a failure undoes this one only
                    await self._handler(conn, envelope)
        else:
            await self._handler(conn, envelope)


@dataclass
class _Batch:
    """What applying one batch has found so far."""

    parked_keys: set[str]
    envelopes: dict[int, Envelope | str]
    versions: StreamVersions = field(default_factory=lambda: StreamVersions({}))
    applied: int = 0
    effects: list[Envelope] = field(default_factory=list)  # applied now, not redeliveries
    failed: int = 0  # parked for a failure of their own (not held behind one)
    deferred: list[Envelope] | None = None  # checked, for the batch handler (fast path)


def _streams_of(envelopes: Iterable[Envelope | str]) -> list[str]:
    """The streams of the envelopes among decoded records."""
    return list({e.stream_id: None for e in envelopes if isinstance(e, Envelope)})


def retriable(error: BaseException) -> bool:
    """A lost connection or a lost race: the batch is tried again, nothing is dead-lettered."""
    return is_transient(error) or isinstance(error, ConcurrencyError)


def decode_record(value: bytes | None) -> Envelope | str:
    """The envelope in a record, or why it is not one, :data:`REJECTED` first: it is not a
    ledger event at all, or its content does not match its hash.


    The hash is checked on the record's own JSON (:func:`carries_its_hash`), not on the
    envelope re-encoded: the same answer at a sixth of the cost, paid for every record by
    every consumer.
    """
    if value is None:
        return f"{REJECTED}not a ledger event: the record has no value"
    try:
        wire = wire_loads(value)
        envelope = Envelope.model_validate(wire)
    except ValidationError as error:
        problems = f"{error.error_count()} problem(s): {error.errors()[0]['msg']}"
        return f"{REJECTED}not a ledger event: {problems}"
    except ValueError as error:
        return f"{REJECTED}not a ledger event: not JSON ({error})"
    if not carries_its_hash(wire):
        return f"{REJECTED}event {envelope.id}: its hash is not the hash of its content"
    return envelope


def _header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    """A record's header as text, if it has it."""
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode(errors="replace")
    return None
