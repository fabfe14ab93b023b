"""What an operator may do about a parked record, and the record of each decision.

A consumer parks what it cannot apply (:mod:`.batches` says which records and why). Three
kinds wait there:

- **rejected**: not an event its topic's owner could have published (not JSON, a forged
  type or stream, a hash that does not match). It holds nothing back; it stays until an
  operator has looked at it and released it.
- **failed**: a real event that could not be applied (a handler error, a schema version
  newer than the consumer reads, an earlier version of its stream missing). Every later
  record of its family is **held** behind it.
- **held**: a later record of a failed one's family, applied once that one is.

An operator can ask for a record to be **retried** now, once its cause is fixed (the
consumer tries it, and what is held behind it, within seconds; it also tries every minute by
itself), or **release** it: a rejected record is set aside; a failed one is set aside as if
applied (its stream moves on to its version, so what follows it is not a gap) and the
records held behind it are tried at once. Either is a decision about the ledger's history
in one service's views, so it names who took it and why, and is kept in
``deadletter_decisions`` (which refuses updates and deletes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from shared.core.consumer.batches import HELD_BEHIND, REJECTED, StreamVersions, decode_record
from shared.core.db import Connection
from shared.core.errors import ConflictError, NotFoundError
from shared.core.events import Envelope

__all__ = ["Decision", "Kind", "ParkedRecord", "decisions", "parked", "release", "retry"]

Kind = Literal["rejected", "failed", "held"]

_PARKED = """
SELECT consumer, topic, partition, "offset", record_key,
       coalesce(origin_key, record_key) AS origin_key, error, parked_at, retried_at,
       retry_requested, value
FROM consumer_parked ORDER BY consumer, topic, partition, "offset"
"""
_ONE = """
SELECT consumer, topic, partition, "offset", record_key,
       coalesce(origin_key, record_key) AS origin_key, error, parked_at, retried_at,
       retry_requested, value
FROM consumer_parked WHERE consumer = $1 AND topic = $2 AND partition = $3 AND "offset" = $4
FOR UPDATE
"""
_FIRST_OF_KEY = """
SELECT partition, "offset" FROM consumer_parked
WHERE consumer = $1 AND topic = $2 AND record_key = $3 AND error <> $4 ORDER BY "offset" LIMIT 1
"""
_ASK_RETRY = """
UPDATE consumer_parked SET retry_requested = true
WHERE consumer = $1 AND topic = $2 AND record_key = $3
"""
_DELETE = """
DELETE FROM consumer_parked WHERE consumer = $1 AND topic = $2 AND partition = $3 AND "offset" = $4
"""
_DECIDE = """
INSERT INTO deadletter_decisions
    (action, consumer, topic, partition, "offset", record_key, error, decided_by, reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""
_DECISIONS = """
SELECT decided_at, action, consumer, topic, partition, "offset", record_key, error,
       decided_by, reason
FROM deadletter_decisions ORDER BY decided_at, consumer, topic, partition, "offset"
"""


@dataclass(frozen=True)
class ParkedRecord:
    """A record a consumer has parked, and why."""

    consumer: str
    topic: str
    partition: int
    offset: int
    record_key: str  # what it is parked under: its family's key, or its own if rejected
    origin_key: str  # its Kafka key: pilot:family, or the pilot's alone
    error: str
    parked_at: datetime
    retried_at: datetime | None
    retry_requested: bool
    value: bytes

    @property
    def kind(self) -> Kind:
        """Rejected (holds nothing back), failed (holds its family back) or held."""
        if self.error.startswith(REJECTED):
            return "rejected"
        return "held" if self.error == HELD_BEHIND else "failed"

    @property
    def envelope(self) -> Envelope | None:
        """The event it holds, if it is one."""
        decoded = decode_record(self.value)
        return decoded if isinstance(decoded, Envelope) else None


@dataclass(frozen=True)
class Decision:
    """An operator's retry or release of a parked record, as kept."""

    decided_at: datetime
    action: Literal["retry", "release"]
    consumer: str
    topic: str
    partition: int
    offset: int
    record_key: str  # the record's Kafka key
    error: str
    decided_by: str
    reason: str


async def parked(conn: Connection) -> list[ParkedRecord]:
    """Every record parked in this database, by consumer, topic, partition and offset."""
    return [_parked_of(row) for row in await conn.fetch(_PARKED)]


async def decisions(conn: Connection) -> list[Decision]:
    """Every decision taken about this database's parked records, oldest first."""
    return [Decision(**dict(row)) for row in await conn.fetch(_DECISIONS)]


async def retry(
    conn: Connection, place: tuple[str, str, int, int], by: str, reason: str
) -> ParkedRecord:
    """Ask the consumer to try the record, and what its family holds behind it, now; in the
    caller's transaction."""
    record = await _one(conn, place)
    await conn.execute(_ASK_RETRY, record.consumer, record.topic, record.record_key)
    await _decide(conn, "retry", record, by, reason)
    return record


async def release(
    conn: Connection, place: tuple[str, str, int, int], by: str, reason: str
) -> ParkedRecord:
    """Set the record aside for good in its consumer (a failed event as if applied), and ask
    for what its family holds behind it to be tried now; in the caller's transaction."""
    record = await _one(conn, place)
    if record.kind == "held":
        first = await conn.fetchrow(
            _FIRST_OF_KEY, record.consumer, record.topic, record.record_key, HELD_BEHIND
        )
        behind = f" (offset {first['offset']} of partition {first['partition']})" if first else ""
        raise ConflictError(
            f"this record is held behind an earlier one of its family{behind}: release or "
            "retry that one, and this one follows",
            code="held_behind",
        )
    envelope = record.envelope
    if record.kind == "failed" and envelope is not None:
        versions = await StreamVersions.load(conn, record.consumer, [envelope])
        if envelope.stream_version > versions.known.get(envelope.stream_id, 0):
            versions.advance(envelope)  # what follows it continues from it, not a gap
            await versions.save(conn, record.consumer)
    await conn.execute(_DELETE, *place)
    await conn.execute(_ASK_RETRY, record.consumer, record.topic, record.record_key)
    await _decide(conn, "release", record, by, reason)
    return record


async def _one(conn: Connection, place: tuple[str, str, int, int]) -> ParkedRecord:
    row = await conn.fetchrow(_ONE, *place)
    if row is None:
        consumer, topic, partition, offset = place
        raise NotFoundError(
            f"{consumer} has no parked record at {topic}:{partition}@{offset} "
            "(applied or released since?)"
        )
    return _parked_of(row)


async def _decide(
    conn: Connection, action: str, record: ParkedRecord, by: str, reason: str
) -> None:
    await conn.execute(
        _DECIDE,
        action,
        record.consumer,
        record.topic,
        record.partition,
        record.offset,
        record.origin_key,
        record.error,
        by,
        reason,
    )


def _parked_of(row: asyncpg.Record) -> ParkedRecord:
    return ParkedRecord(**{**dict(row), "value": bytes(row["value"])})
