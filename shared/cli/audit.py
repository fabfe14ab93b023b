"""Verifying the ledger: every stream's hash chain, and that Kafka holds the same events.

For each service that owns a topic, every event in its store must (1) hash to the ``hash``
it carries, (2) chain to the event before it (``prev_hash``, genesis for version 1) with no
version missing, and (3) be on the service's topic with the same hash, unless it is still
waiting in the outbox. Every event on the topic must still be in the store. An event that
was altered, removed or moved shows up as the first broken link of its stream.

Events are checked in their wire form, as stored and published (:func:`carries_its_hash`),
never through the envelope model: the hash is taken over those very bytes' values, and a
model costs twenty times the check. A store is read through a cursor and only what the
checks need of each event is kept, so a ledger of millions verifies in bounded memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from shared.core.db import Connection
from shared.core.events import GENESIS_HASH, carries_its_hash, wire_loads, wire_value
from shared.core.kafka import connection, partitions_of, topic_bounds
from shared.core.settings import KafkaAccess

__all__ = [
    "Problem",
    "StoredEvent",
    "TopicRead",
    "Wire",
    "against_evidence",
    "check_store",
    "check_topic",
    "end_offsets",
    "heads",
    "in_order",
    "load_store",
    "read_topic",
    "stored_count",
]

Wire = dict[str, Any]
"""An event as stored and published: its JSON object, in the format it was written in."""

_EVENTS = """
SELECT e.envelope::text AS envelope, e.stream_version, o.position IS NOT NULL AS pending
FROM events e LEFT JOIN outbox o USING (position)
WHERE $1::text IS NULL OR e.pilot_id = $1
ORDER BY e.stream_id, e.stream_version, e.position
"""


@dataclass(frozen=True)
class Problem:
    """One broken link."""

    service: str
    stream_id: str
    stream_version: int
    event_id: str
    detail: str

    def __str__(self) -> str:
        return (
            f"{self.service}: stream {self.stream_id} version {self.stream_version} "
            f"(event {self.event_id}): {self.detail}"
        )


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """What the checks need of an event its store holds (not the event: millions are kept)."""

    event_id: str
    stream_id: str
    stream_version: int | None  # as the event says; None if it says nothing
    prev_hash: str | None
    hash: str | None
    intact: bool  # it carries the hash of its content
    row_version: int  # as the store's row says
    pending: bool  # still in the outbox: not yet expected on the topic

    @classmethod
    def of(cls, wire: Wire, row_version: int, pending: bool) -> StoredEvent:
        """The checks' view of one stored event, from its wire form."""
        return cls(
            event_id=str(wire.get("id")),
            stream_id=str(wire_value(wire, "stream_id")),
            stream_version=wire_value(wire, "stream_version"),
            prev_hash=wire_value(wire, "prev_hash"),
            hash=wire.get("hash"),
            intact=carries_its_hash(wire),
            row_version=row_version,
            pending=pending,
        )


async def load_store(
    conn: Connection, pilot_id: str | None, progress: Callable[[int], object] | None = None
) -> list[StoredEvent]:
    """Every event of a service's store (of one pilot, if named), by stream and version."""
    stored: list[StoredEvent] = []
    async with conn.transaction():  # a cursor lives in one
        async for row in conn.cursor(_EVENTS, pilot_id, prefetch=_PREFETCH):
            wire = wire_loads(row["envelope"])
            stored.append(StoredEvent.of(wire, row["stream_version"], row["pending"]))
            if progress is not None and len(stored) % _PREFETCH == 0:
                progress(_PREFETCH)
    if progress is not None:
        progress(len(stored) % _PREFETCH)
    return stored


_PREFETCH = 5_000  # rows per round trip of the store's cursor


async def stored_count(conn: Connection, pilot_id: str | None) -> int:
    """How many events :func:`load_store` will read: its progress bar's total."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM events WHERE $1::text IS NULL OR pilot_id = $1", pilot_id
        )
    )


def check_store(service: str, events: Iterable[StoredEvent]) -> list[Problem]:
    """Hashes, chains and versions of every stream (pure)."""
    problems: list[Problem] = []
    for stream_id, stream in groupby(events, key=lambda e: e.stream_id):
        previous_hash, expected_version = GENESIS_HASH, 1
        for stored in stream:
            detail = _broken_link(stored, expected_version, previous_hash)
            if detail is not None:
                version = stored.stream_version or 0
                problems.append(Problem(service, stream_id, version, stored.event_id, detail))
                break  # the first broken link of a stream is the one to report
            previous_hash, expected_version = stored.hash or "", expected_version + 1
    return problems


def _broken_link(stored: StoredEvent, expected_version: int, previous_hash: str) -> str | None:
    if not stored.intact:
        return "its content does not match its hash: it was altered"
    if stored.row_version != stored.stream_version:
        return "its row says another version: it was moved"
    if stored.stream_version != expected_version:
        return f"version {expected_version} is missing: an event was removed"
    if stored.prev_hash != previous_hash:
        return "it does not chain to the event before it: events were reordered"
    return None


@dataclass
class TopicRead:
    """What one reading of a topic found."""

    hashes: dict[str, str] = field(default_factory=dict)  # event id -> hash
    # Ids read below the offsets the topic had before the store was read: each of these
    # was committed before that read, so the store must hold it.
    settled: set[str] = field(default_factory=set)
    events: list[Wire] = field(default_factory=list)  # each event once, as published (collect)
    repeats: int = 0  # copies of an event already read (a relay that published twice)
    foreign: list[str] = field(default_factory=list)  # records that are not ledger events


def check_topic(service: str, events: Sequence[StoredEvent], read: TopicRead) -> list[Problem]:
    """The store and the topic hold the same events with the same hashes (pure).

    Exact while the ledger is being written: an event published after the store was read
    is not expected in it, and one committed after the topic was read is still in the
    outbox (``pending``) when the store is read, or on the topic before it is read to its end.
    """
    problems: list[Problem] = []
    stored_ids = set()
    for stored in events:
        event_id = stored.event_id
        stored_ids.add(event_id)
        on_topic = read.hashes.get(event_id)
        if on_topic is None and not stored.pending:
            detail = "it is in the store but not on the topic"
        elif on_topic is not None and on_topic != stored.hash:
            detail = "the topic holds it with another hash: one copy was altered"
        else:
            continue
        version = stored.stream_version or 0
        problems.append(Problem(service, stored.stream_id, version, event_id, detail))
    problems.extend(
        Problem(service, "?", 0, event_id, "it is on the topic but gone from the store")
        for event_id in sorted(read.settled - stored_ids)
    )
    problems.extend(
        Problem(service, "?", 0, "?", f"a record that is not a ledger event: {foreign}")
        for foreign in read.foreign
    )
    return problems


async def end_offsets(kafka: KafkaAccess, topics: list[str]) -> dict[str, dict[int, int]]:
    """The next offset of every partition of the topics, now: by topic, then partition."""
    _, ends = await topic_bounds(kafka, topics)
    found: dict[str, dict[int, int]] = {topic: {} for topic in topics}
    for partition, offset in ends.items():
        found[partition.topic][partition.partition] = offset
    return found


async def read_topic(
    kafka: KafkaAccess,
    topic: str,
    keep: Callable[[Wire], bool],
    progress: Callable[[int], object] | None = None,
    settled_below: Mapping[int, int] | None = None,
    *,
    after: asyncio.Future[Any] | None = None,
    collect: bool = True,
) -> TopicRead:
    """Every committed event on a topic that ``keep`` accepts, from its start to its end now,
    or, with ``after``, to its end as it stands once ``after`` is done (read as far as it
    goes meanwhile: a store being read alongside, say). ``collect``: keep each event (for a
    replay), not only its id and hash (for a check, in bounded memory).

    Records that are not ledger events -- not JSON, no envelope, or content that does not
    match its hash -- are named (topic, partition, offset) in ``foreign``, whatever ``keep``
    says; an event read again (same id) counts in ``repeats``.
    """
    consumer = AIOKafkaConsumer(
        **connection(kafka),
        enable_auto_commit=False,
        isolation_level="read_committed",
        group_id=None,
    )
    read = TopicRead()
    try:
        await consumer.start()
        partitions = [TopicPartition(topic, p) for p in await partitions_of(kafka, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)

        async def take_some(timeout_ms: int) -> None:
            batch = await consumer.getmany(timeout_ms=timeout_ms)
            for records in batch.values():
                for record in records:
                    _take(read, record, keep, settled_below or {}, collect=collect)
                if progress is not None:
                    progress(len(records))

        while after is not None and not after.done():
            await take_some(timeout_ms=100)
        if after is not None and (after.cancelled() or after.exception() is not None):
            return read  # what it waited for failed: read no further
        ends = await consumer.end_offsets(partitions)
        while not await _at_end(consumer, ends):
            await take_some(timeout_ms=500)
        return read
    finally:
        await consumer.stop()


def _take(
    read: TopicRead,
    record: ConsumerRecord[bytes, bytes],
    keep: Callable[[Wire], bool],
    settled: Mapping[int, int],
    *,
    collect: bool,
) -> None:
    try:
        wire = wire_loads(record.value or b"")
    except ValueError:
        read.foreign.append(f"{_place(record)}: not JSON")
        return
    wrong = _not_an_event(wire)
    if wrong is not None:
        read.foreign.append(f"{_place(record)}: {wrong}")
        return
    if not keep(wire):
        return
    event_id, hash_ = wire["id"], wire["hash"]
    if event_id in read.hashes:
        read.repeats += 1
        if read.hashes[event_id] != hash_:
            read.foreign.append(
                f"{_place(record)}: another copy of event {event_id} with a different hash"
            )
        return
    read.hashes[event_id] = hash_
    if collect:
        read.events.append(wire)
    if record.offset < settled.get(record.partition, 0):
        read.settled.add(event_id)


def _place(record: ConsumerRecord[bytes, bytes]) -> str:
    """Where a record is: topic, partition and offset (named only when something is wrong)."""
    return f"{record.topic}:{record.partition}@{record.offset}"


_ORDER_FIELDS = {"source": str, "stream_id": str, "stream_version": int}


def _not_an_event(wire: object) -> str | None:
    """Why a record is not a ledger event, or None: an object with an id, the fields history
    is ordered by, and a hash its content matches."""
    if not isinstance(wire, dict):
        return "not a JSON object"
    if not isinstance(wire.get("id"), str) or not isinstance(wire.get("hash"), str):
        return "no event id or hash"
    for name, kind in _ORDER_FIELDS.items():
        if not isinstance(wire_value(wire, name), kind):
            return f"no {name}"
    try:
        datetime.fromisoformat(wire["time"])
    except (KeyError, TypeError, ValueError):
        return "no time"
    if not carries_its_hash(wire):
        return "its content does not match its hash"
    return None


def in_order(events: Iterable[Wire]) -> list[Wire]:
    """History order: recorded time, then source, then version (a batch shares its time).

    Each event once: a relay that died between the Kafka commit and the outbox delete
    published its batch twice, and the second copy is the same event (same id and hash).
    """
    unique = {wire["id"]: wire for wire in events}.values()
    return sorted(unique, key=_history_position)


def _history_position(wire: Wire) -> tuple[datetime, str, str, int]:
    return (
        datetime.fromisoformat(wire_value(wire, "time")),
        wire_value(wire, "source"),
        wire_value(wire, "stream_id"),
        wire_value(wire, "stream_version"),
    )


async def _at_end(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for partition, end in ends.items():
        if await consumer.position(partition) < end:
            return False
    return True


def heads(events: Iterable[StoredEvent]) -> dict[str, dict[str, Any]]:
    """Each stream's last event, as evidence an auditor keeps: its version and hash. Every
    event before it is fixed by the hash chain, so a later run that still finds this hash
    at this version has the same history up to it."""
    found: dict[str, dict[str, Any]] = {}
    for event in events:
        version = event.stream_version or 0
        if version >= found.get(event.stream_id, {}).get("version", 0):
            found[event.stream_id] = {"version": version, "hash": event.hash}
    return found


def against_evidence(
    service: str, kept: Mapping[str, Mapping[str, Any]], events: Iterable[StoredEvent]
) -> list[Problem]:
    """Where the store no longer holds what earlier evidence (:func:`heads`) said it did: a
    stream gone, shorter, or with another event where the kept head was (history rewritten,
    even if consistently: every hash recomputed, the topic replaced)."""
    held = {(e.stream_id, e.stream_version): e for e in events}
    problems = []
    for stream_id, head in sorted(kept.items()):
        now = held.get((stream_id, head["version"]))
        if now is None:
            detail = "the evidence kept names it, and the store no longer holds it"
        elif now.hash != head["hash"]:
            detail = f"the evidence kept says hash {head['hash']}, the store now {now.hash}"
        else:
            continue
        event_id = now.event_id if now is not None else "-"
        problems.append(Problem(service, stream_id, head["version"], event_id, detail))
    return problems
