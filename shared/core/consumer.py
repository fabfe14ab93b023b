"""The consumer runner: applies records to a service's database exactly once per effect.

Each partition's batch is applied in one PostgreSQL transaction that also advances the
stored offset (``consumer_offsets``, locked for the batch, sought on assignment) and each
stream's last applied version (``consumer_streams``). Redeliveries are dropped by version.

A record that cannot be applied (undecodable, a gap in its stream, a handler error that is
not transient) goes to the dead-letter topic with its origin in headers, and is parked in
``consumer_parked``. A ledger must not apply a family's later events over a missing one, so
every later record with the same key (the same family) is parked behind it, while other
families' records in the partition keep moving. Parked records are tried again, in order,
when the consumer starts (after a fix is deployed), every minute while it runs, and when
:meth:`retry_parked` is called; the first that still fails keeps the rest of its family
parked (a gap lets the pass look further on for the missing version).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError
from pydantic import ValidationError

from shared.core.background import BackgroundTask
from shared.core.db import Connection, is_transient
from shared.core.errors import ConcurrencyError
from shared.core.events import Envelope
from shared.core.kafka import new_consumer, new_producer
from shared.core.metrics import Metrics

__all__ = ["ConsumerRunner", "EventHandler"]

_LOCK_OFFSET = """
INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) VALUES ($1, $2, $3, 0)
ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = consumer_offsets.next_offset
RETURNING next_offset
"""
_SAVE_OFFSET = """
UPDATE consumer_offsets SET next_offset = $4 WHERE consumer = $1 AND topic = $2 AND partition = $3
"""
_STORED_OFFSETS = "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1"
_VERSIONS = """
SELECT stream_id, version FROM consumer_streams WHERE consumer = $1 AND stream_id = ANY($2::text[])
"""
_SAVE_VERSIONS = """
INSERT INTO consumer_streams (consumer, stream_id, version)
SELECT $1, * FROM unnest($2::text[], $3::integer[])
ON CONFLICT (consumer, stream_id) DO UPDATE SET version = excluded.version
"""
_PARKED_KEYS = "SELECT DISTINCT record_key FROM consumer_parked WHERE consumer = $1 AND topic = $2"
_PARK = """
INSERT INTO consumer_parked (consumer, topic, partition, "offset", record_key, value, error)
VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING
"""
_PARKED_FAMILIES = "SELECT DISTINCT topic, record_key FROM consumer_parked WHERE consumer = $1"
_PARKED_OF = """
SELECT partition, "offset", value FROM consumer_parked
WHERE consumer = $1 AND topic = $2 AND record_key = $3 ORDER BY "offset" FOR UPDATE
"""
_UNPARK = """DELETE FROM consumer_parked WHERE consumer = $1 AND topic = $2 AND "offset" = $3
AND partition = $4"""
_REPARK = """UPDATE consumer_parked SET error = $5 WHERE consumer = $1 AND topic = $2
AND "offset" = $3 AND partition = $4"""
_HELD_BEHIND = "held behind an earlier record of the same family that could not be applied"
_GAP = "gap: "
_RETRY_PARKED_SECONDS = 60.0
_MAX_BACKOFF = 5.0


class EventHandler(Protocol):
    """Applies one event to the consumer's database, inside the runner's transaction."""

    def __call__(self, conn: Connection, envelope: Envelope) -> Awaitable[None]: ...


class _CarefulRetryNeededError(Exception):
    """A record failed on the fast path; the batch is redone record by record."""


@dataclass(frozen=True)
class _DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    error: str


class ConsumerRunner(BackgroundTask):
    """Consumes some topics into one service's database, in a background task."""

    def __init__(
        self,
        *,
        name: str,
        pool: asyncpg.Pool[asyncpg.Record],
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        handler: EventHandler,
        deadletter_topic: str,
        batch_size: int,
        metrics: Metrics,
    ) -> None:
        super().__init__(f"consumer:{name}")
        self.name = name
        self._pool = pool
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._topics = tuple(topics)
        self._handler = handler
        self._deadletter_topic = deadletter_topic
        self._batch_size = batch_size
        self._metrics = metrics
        self._log = structlog.get_logger().bind(component="consumer", consumer=name)
        self._lag_shown: set[TopicPartition] = set()  # partitions /metrics shows lag for

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - a consumer must outlive any outage
                self._log.warning("consumer_retrying", error=repr(error), backoff_seconds=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _consume(self) -> None:
        consumer = new_consumer(self._bootstrap, self._group_id, self.name)
        producer = new_producer(self._bootstrap, f"{self.name}-deadletter")
        try:
            # Starts inside the try: a client that failed to start still has connections to close.
            await producer.start()
            consumer.subscribe(list(self._topics), listener=_SeekToStored(self, consumer))
            try:
                await consumer.start()
                await self.retry_parked()
                loop = asyncio.get_running_loop()
                retried_at = loop.time()
                while not self._stopping:
                    batches = await self._poll(consumer)
                    for partition, records in batches.items():
                        dead = await self._process(consumer, partition, records)
                        await self._send_dead_letters(producer, dead or [])
                    await self._observe_lag(consumer)
                    if loop.time() - retried_at > _RETRY_PARKED_SECONDS:
                        await self.retry_parked()
                        retried_at = loop.time()
            finally:
                await asyncio.shield(consumer.stop())
        finally:
            # Shielded: a stop cut short by cancellation still closes the connections.
            await asyncio.shield(producer.stop())

    async def start(self) -> None:
        """Begin consuming in the background."""
        self._stop_requested = asyncio.Event()
        await super().start()

    def _wake(self) -> None:
        self._stop_requested.set()

    async def _poll(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        """The next records, or none as soon as a stop is asked for.

        A poll does not return while the consumer first joins its group (seconds): racing
        it against the stop lets the consumer leave cleanly instead of being cancelled.
        """
        poll = asyncio.ensure_future(consumer.getmany(timeout_ms=200, max_records=self._batch_size))
        stop = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({poll, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not poll.done():
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll
            return {}
        batches: dict[TopicPartition, list[Any]] = poll.result()
        return batches

    async def stored_offsets(self) -> dict[tuple[str, int], int]:
        """Where this consumer's effects have got to, per topic and partition."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_STORED_OFFSETS, self.name)
        return {(row["topic"], row["partition"]): row["next_offset"] for row in rows}

    async def catch_up(
        self, targets: Mapping[TopicPartition, int], progress: Callable[[int], object]
    ) -> int:
        """Apply every record before ``targets``, outside any group; return how many were read.

        ``progress`` is told how many offsets each step passed (transaction markers take
        offsets too), so that it adds up to the targets minus the stored offsets.

        For rebuilding projections: each partition starts where this runner's effects stand
        and stops exactly at its target, so the result can be compared with, and swapped
        for, a live consumer's at the same offsets. A record that cannot be applied is
        parked as usual but not dead-lettered again: the live consumer did that already.
        """
        stored = await self.stored_offsets()
        pending = {
            partition: target
            for partition, target in targets.items()
            if stored.get((partition.topic, partition.partition), 0) < target
        }
        if not pending:
            return 0
        consumer = new_consumer(self._bootstrap, None, self.name)
        read = 0
        try:
            await consumer.start()
            consumer.assign(list(pending))
            await _seek(consumer, list(pending), stored)
            positions = {partition: await consumer.position(partition) for partition in pending}
            while pending:
                batches = await consumer.getmany(
                    *pending, timeout_ms=500, max_records=self._batch_size
                )
                for partition, records in batches.items():
                    wanted = [record for record in records if record.offset < pending[partition]]
                    dead = await self._process(consumer, partition, wanted) if wanted else []
                    if dead is not None:  # None: it is read again from the stored offset
                        read += len(wanted)
                for partition in list(pending):
                    position = min(await consumer.position(partition), pending[partition])
                    progress(max(0, position - positions[partition]))
                    positions[partition] = max(position, positions[partition])
                    if position >= pending[partition]:
                        consumer.pause(partition)
                        del pending[partition]
        finally:
            await asyncio.shield(consumer.stop())
        return read

    async def _process(
        self, consumer: AIOKafkaConsumer, partition: TopicPartition, records: Sequence[Any]
    ) -> list[_DeadLetter] | None:
        """Apply one partition's batch: what to dead-letter, or None to read it again."""
        try:
            return await self._apply_batch(partition, records, careful=False)
        except _CarefulRetryNeededError:
            return await self._apply_batch(partition, records, careful=True)
        except Exception as error:
            if not _retriable(error):
                raise
            # Nothing was committed: go back to where the effects stand and try again.
            self._log.warning("consumer_batch_retry", error=repr(error))
            stored = (await self.stored_offsets()).get((partition.topic, partition.partition), 0)
            consumer.seek(partition, stored)
            await asyncio.sleep(0.5)
            return None

    async def _send_dead_letters(
        self, producer: AIOKafkaProducer, dead: Sequence[_DeadLetter]
    ) -> None:
        for letter in dead:
            await producer.send_and_wait(
                self._deadletter_topic,
                value=letter.value,
                key=letter.key,
                headers=[
                    ("origin_topic", letter.topic.encode()),
                    ("origin_partition", str(letter.partition).encode()),
                    ("origin_offset", str(letter.offset).encode()),
                    ("consumer", self.name.encode()),
                    ("error", letter.error.encode()[:4000]),
                ],
            )
            self._metrics.deadlettered.labels(self.name, letter.topic).inc()
            self._log.error(
                "record_deadlettered",
                topic=letter.topic,
                partition=letter.partition,
                offset=letter.offset,
                error=letter.error,
            )

    async def _apply_batch(
        self, partition: TopicPartition, records: Sequence[Any], *, careful: bool
    ) -> list[_DeadLetter]:
        topic, number = partition.topic, partition.partition
        dead: list[_DeadLetter] = []
        async with self._pool.acquire() as conn, conn.transaction():
            # Locking the offset row fences a consumer that lost this partition in a rebalance.
            next_offset = await conn.fetchval(_LOCK_OFFSET, self.name, topic, number)
            fresh = [record for record in records if record.offset >= next_offset]
            if not fresh:
                return dead
            parked_keys = {
                row["record_key"] for row in await conn.fetch(_PARKED_KEYS, self.name, topic)
            }
            envelopes = {record.offset: _decode(record.value) for record in fresh}
            stream_ids = [env.stream_id for env in envelopes.values() if isinstance(env, Envelope)]
            versions: dict[str, int] = {
                row["stream_id"]: row["version"]
                for row in await conn.fetch(_VERSIONS, self.name, stream_ids)
            }
            changed: dict[str, int] = {}
            applied = 0
            effects: list[Envelope] = []  # applied now, not redeliveries
            for record in fresh:
                key = record.key.decode(errors="replace") if record.key else ""
                error: str | None
                if key in parked_keys:
                    error = _HELD_BEHIND
                    self._metrics.parked.labels(self.name, topic).inc()
                else:
                    error = await self._apply_one(
                        conn, envelopes[record.offset], versions, changed, careful=careful
                    )
                if error is not None:
                    parked_keys.add(key)
                    await conn.execute(
                        _PARK, self.name, topic, number, record.offset, key, record.value, error
                    )
                    if error != _HELD_BEHIND:
                        dead.append(
                            _DeadLetter(
                                topic, number, record.offset, record.key, record.value, error
                            )
                        )
                else:
                    applied += 1
                    envelope = envelopes[record.offset]
                    if isinstance(envelope, Envelope) and changed.get(envelope.stream_id) == (
                        envelope.stream_version
                    ):
                        effects.append(envelope)
            if changed:
                await conn.execute(_SAVE_VERSIONS, self.name, list(changed), list(changed.values()))
            await conn.execute(_SAVE_OFFSET, self.name, topic, number, fresh[-1].offset + 1)
        self._metrics.events_consumed.labels(self.name, topic).inc(applied)
        for envelope in effects:  # committed: a request can be followed through every service
            self._log.info(
                "event_applied",
                type=envelope.type,
                event_id=str(envelope.id),
                correlation_id=envelope.correlation_id,
                pilot_id=envelope.pilot_id,
                stream_id=envelope.stream_id,
                stream_version=envelope.stream_version,
            )
        return dead

    async def _apply_one(
        self,
        conn: Connection,
        envelope: Envelope | str,
        versions: dict[str, int],
        changed: dict[str, int],
        *,
        careful: bool,
    ) -> str | None:
        """Apply one decoded record; return why it cannot be applied, or None."""
        if isinstance(envelope, str):
            return envelope
        last = versions.get(envelope.stream_id, 0)
        if envelope.stream_version <= last:
            return None  # a redelivery: its effect is already here
        if envelope.stream_version != last + 1:
            return (
                f"{_GAP}stream {envelope.stream_id} jumped from version {last} "
                f"to {envelope.stream_version}: an earlier event is missing"
            )
        # Whatever the handler logs carries the event's ids.
        context = structlog.contextvars.bound_contextvars(
            correlation_id=envelope.correlation_id,
            event_id=str(envelope.id),
            pilot_id=envelope.pilot_id,
        )
        try:
            with context:
                if careful:
                    async with conn.transaction():  # a savepoint: a failure undoes this one
                        await self._handler(conn, envelope)
                else:
                    await self._handler(conn, envelope)
        except Exception as error:
            if _retriable(error):
                raise
            if not careful:
                raise _CarefulRetryNeededError from error
            return f"{type(error).__name__}: {error}"
        versions[envelope.stream_id] = changed[envelope.stream_id] = envelope.stream_version
        return None

    async def retry_parked(self) -> int:
        """Try parked records again, family by family; return how many were applied.

        A family's records are tried in offset order. One that still fails stops its family,
        except a gap: the missing version may be parked further on, so the pass goes on and
        repeats while it makes progress.
        """
        applied = 0
        async with self._pool.acquire() as conn:
            families = await conn.fetch(_PARKED_FAMILIES, self.name)
        for family in families:
            topic, key = family["topic"], family["record_key"]
            async with self._pool.acquire() as conn, conn.transaction():
                rows = list(await conn.fetch(_PARKED_OF, self.name, topic, key))
                envelopes = {row["offset"]: _decode(row["value"]) for row in rows}
                stream_ids = [e.stream_id for e in envelopes.values() if isinstance(e, Envelope)]
                versions = {
                    row["stream_id"]: row["version"]
                    for row in await conn.fetch(_VERSIONS, self.name, stream_ids)
                }
                changed: dict[str, int] = {}
                progress = True
                while progress and rows:
                    progress = False
                    for row in list(rows):
                        error = await self._apply_one(
                            conn, envelopes[row["offset"]], versions, changed, careful=True
                        )
                        if error is None:
                            await conn.execute(
                                _UNPARK, self.name, topic, row["offset"], row["partition"]
                            )
                            rows.remove(row)
                            applied += 1
                            progress = True
                            continue
                        await conn.execute(
                            _REPARK, self.name, topic, row["offset"], row["partition"], error
                        )
                        if not error.startswith(_GAP):
                            break
                if changed:
                    await conn.execute(
                        _SAVE_VERSIONS, self.name, list(changed), list(changed.values())
                    )
        if applied:
            self._log.info("parked_records_applied", count=applied)
        return applied

    async def _observe_lag(self, consumer: AIOKafkaConsumer) -> None:
        for partition in consumer.assignment():
            highwater = consumer.highwater(partition)
            if highwater is None:
                continue
            try:
                position = await consumer.position(partition)
            except IllegalStateError:
                continue  # revoked by a rebalance while we asked
            # Checked again after the wait: a partition given up meanwhile must stay gone.
            if partition in consumer.assignment():
                self._metrics.consumer_lag.labels(
                    self.name, partition.topic, str(partition.partition)
                ).set(max(0, highwater - position))
                self._lag_shown.add(partition)

    async def seek_to_stored(
        self, consumer: AIOKafkaConsumer, assigned: Sequence[TopicPartition]
    ) -> None:
        """Start each newly assigned partition where this consumer's effects stand."""
        self._log.info("partitions_assigned", partitions=_names(assigned))
        # The lag of what another replica now holds is that replica's to show. Pruned here,
        # not only on revocation: until the new assignment is in place the consumer still
        # lists the old one, and lag observed in between would come back, frozen.
        self._show_lag_only_for(assigned)
        stored = await self.stored_offsets()
        for partition in assigned:
            offset = stored.get((partition.topic, partition.partition))
            if offset is not None:
                consumer.seek(partition, offset)
        # A partition with no stored offset starts at its beginning by itself: the group
        # commits no offsets to Kafka and ``auto_offset_reset`` is "earliest". Seeking there
        # here would wait, inside the rebalance, for a reset the fetcher makes only after it:
        # 2.5 s of every start, rebalance and stop.

    def release(self, revoked: Sequence[TopicPartition]) -> None:
        """Hand partitions over. Nothing to flush: progress is committed with each batch."""
        self._log.info("partitions_revoked", partitions=_names(revoked))
        self._show_lag_only_for(self._lag_shown - set(revoked))

    def _show_lag_only_for(self, partitions: Collection[TopicPartition]) -> None:
        for partition in self._lag_shown - set(partitions):
            self._metrics.consumer_lag.remove(self.name, partition.topic, str(partition.partition))
        self._lag_shown &= set(partitions)


def _names(partitions: Sequence[TopicPartition]) -> list[str]:
    """Partitions as ops read them in logs: ``topic:partition``, sorted."""
    return sorted(f"{partition.topic}:{partition.partition}" for partition in partitions)


async def _seek(
    consumer: AIOKafkaConsumer,
    partitions: Sequence[TopicPartition],
    stored: Mapping[tuple[str, int], int],
) -> None:
    for partition in partitions:
        offset = stored.get((partition.topic, partition.partition))
        if offset is None:
            await consumer.seek_to_beginning(partition)
        else:
            consumer.seek(partition, offset)


def _retriable(error: BaseException) -> bool:
    """A lost connection or a lost race: the batch is tried again, nothing is dead-lettered."""
    return is_transient(error) or isinstance(error, ConcurrencyError)


def _decode(value: bytes | None) -> Envelope | str:
    """The envelope in a record, or why it is not one."""
    if value is None:
        return "record has no value"
    try:
        return Envelope.model_validate_json(value)
    except ValidationError as error:
        return f"not a ledger event: {error.error_count()} problem(s): {error.errors()[0]['msg']}"


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, runner: ConsumerRunner, consumer: AIOKafkaConsumer) -> None:
        self._runner = runner
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Hand the partitions over."""
        self._runner.release(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Seek to the stored offsets."""
        await self._runner.seek_to_stored(self._consumer, assigned)
