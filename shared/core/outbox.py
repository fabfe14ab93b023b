"""The outbox relay: publishes each committed event to the owning service's topic.

Why an outbox table rather than a high-water mark on ``events.position``: positions come
from a sequence when a row is inserted, but transactions commit in any order, so the relay
can see position 12 committed while 11 is still in flight. A relay that remembered "done up
to 12" would skip 11 forever. Instead every append also inserts its positions into
``outbox`` in the same transaction, and the relay publishes whatever committed rows it finds
there, oldest position first, then deletes them. A late commit is simply found on a later
pass: nothing is skipped, and writers take no lock of the relay's. They are not wholly
independent, though: every append also NOTIFYs the relay, and PostgreSQL queues the commits
of notifying transactions one at a time, cluster-wide. That is the price of waking the relay
at once; the fallback poll (``relay_poll_seconds``) would find the rows without it.

Order within a stream still holds: version n+1 can only be appended by a transaction that
read version n committed (or waited on its unique index entry), so it takes a higher
position and becomes visible later. Kafka keys by family, so that is the order consumers get.

At least once, never lost: each batch goes out in one Kafka transaction, and its outbox rows
are deleted only after the transaction commits. A failed batch is aborted
(``read_committed`` consumers never see it) and sent again. A relay that dies between the
Kafka commit and the delete publishes that batch again, so the topic can hold an event
twice; every consumer drops the second copy by stream version (its effects happen once), and
``ledger audit verify`` compares events by id. One relay per
database publishes at a time (a session advisory lock elects it), and its fixed
transactional id fences any stale relay that still thinks it leads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from shared.core.background import BackgroundTask
from shared.core.db import Connection, connect
from shared.core.events import (
    FORMAT_ATTRIBUTE,
    canonical_json,
    partition_key,
    wire_loads,
    wire_value,
)
from shared.core.eventstore import OUTBOX_CHANNEL
from shared.core.kafka import new_producer
from shared.core.metrics import Metrics
from shared.core.settings import KafkaAccess
from shared.core.tracing import TRACEPARENT

__all__ = ["BATCH", "OutboxRelay"]

_LEADER_LOCK = 7_346_002
# The next rows of the outbox first, then their events: a join ordered by position let the
# planner walk the events' index from the start, through every event already published.
BATCH = """
SELECT o.position, o.traceparent, e.envelope::text AS envelope
FROM (SELECT position, traceparent FROM outbox ORDER BY position LIMIT $1) o
JOIN events e USING (position)
ORDER BY o.position
"""
_DONE = "DELETE FROM outbox WHERE position = ANY($1::bigint[])"
# The Kafka binding's structured content mode: the record's value is the whole CloudEvent.
CLOUDEVENTS_JSON = b"application/cloudevents+json"
_PENDING = "SELECT count(*) FROM outbox"
_OLDEST = """
SELECT e.recorded_at FROM outbox o JOIN events e USING (position) ORDER BY o.position LIMIT 1
"""
_MAX_BACKOFF = 5.0
# How often the age of the oldest unpublished event is measured.
LAG_INTERVAL_SECONDS = 1.0


class OutboxRelay(BackgroundTask):
    """A background task that moves committed events from PostgreSQL to Kafka."""

    def __init__(
        self,
        *,
        dsn: str,
        kafka: KafkaAccess,
        topic: str,
        transactional_id: str,
        batch_size: int,
        poll_seconds: float,
        metrics: Metrics,
        clock: Callable[[], datetime],
        stall_seconds: float = 30.0,
        publish_timeout_seconds: float = 60.0,
        producer_factory: Callable[[KafkaAccess, str, str], AIOKafkaProducer] = new_producer,
    ) -> None:
        super().__init__(f"relay:{topic}")
        self._dsn = dsn
        self._kafka = kafka
        self._topic = topic
        self._transactional_id = transactional_id
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._metrics = metrics
        self._clock = clock
        self._producer_factory = producer_factory
        self._stall_seconds = stall_seconds
        self._publish_timeout = publish_timeout_seconds
        self._kafka_ok = False
        self._standing_by = False
        self.lag_seconds = 0.0
        self._log = structlog.get_logger().bind(component="relay", topic=topic)

    @property
    def healthy(self) -> bool:
        """Leading with Kafka reachable at the last attempt, or standing by for the leader,
        and no committed event older than the stall threshold still unpublished (a send
        that hangs on a broker that went away looks reachable until then).

        A replica whose relay waits for another to let go of the lock is as ready to take
        commands as the leader: what it commits, the leader publishes.
        """
        return (self._kafka_ok or self._standing_by) and self.lag_seconds < self._stall_seconds

    async def _run(self) -> None:
        watch = asyncio.create_task(self._watch_lag(), name=f"{self._name}:lag")
        try:
            await self._relay()
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def _watch_lag(self) -> None:
        """Measure ``ledger_relay_lag_seconds`` every second, on a connection of its own:
        the publishing transaction may hang on Kafka, and the figure must not hang with it.
        Every replica measures it, the standing-by ones too: it is the service's outbox."""
        conn: Connection | None = None
        try:
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await connect(self._dsn)
                    oldest = await conn.fetchval(_OLDEST)
                    self.lag_seconds = (
                        0.0
                        if oldest is None
                        else max(0.0, (self._clock() - oldest).total_seconds())
                    )
                    self._metrics.relay_lag_seconds.set(self.lag_seconds)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    pass  # the database is away: its own check says so; measured again soon
                await asyncio.sleep(LAG_INTERVAL_SECONDS)
        finally:
            if conn is not None:
                await asyncio.shield(conn.close())

    async def _relay(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the relay must outlive any outage
                self._kafka_ok = False
                self._log.warning("relay_retrying", error=repr(error), backoff_seconds=backoff)
                if self._stopping:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            else:
                return  # stopped with the outbox drained

    async def _lead(self) -> None:
        conn = await connect(self._dsn)
        try:
            await conn.add_listener(OUTBOX_CHANNEL, self._notified)
            self._standing_by = True
            try:
                while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LEADER_LOCK):
                    if self._stopping:
                        return
                    await self._idle()
            finally:
                self._standing_by = False
            self._log.info("relay_leading")
            producer = self._producer_factory(
                self._kafka, f"relay-{self._topic}", self._transactional_id
            )
            try:
                # Inside the try: a producer that failed to start still has connections to close.
                await producer.start()
                self._kafka_ok = True
                while True:
                    published = await self._publish_batch(conn, producer)
                    if published == 0:
                        if self._stopping:
                            return
                        await self._idle()
            finally:
                # Shielded: a stop cut short by cancellation still closes the connections.
                # Bounded: a producer stuck in its transaction may never finish stopping,
                # and the next one, with the same transactional id, fences it off anyway.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(producer.stop()), self._publish_timeout)
        finally:
            await conn.close()

    def _notified(self, *_: object) -> None:
        self._wake()

    async def _idle(self) -> None:
        await self._pause(self._poll_seconds)

    async def _publish_batch(self, conn: Connection, producer: AIOKafkaProducer) -> int:
        rows = await conn.fetch(BATCH, self._batch_size)
        if not rows:
            return 0
        # A broker that stops answering mid-transaction can leave its commit waiting for
        # good (seen with three brokers and one stalled: EndTxn timed out, and the commit
        # never returned). Past this bound the batch is given up -- its task cancelled, not
        # awaited, since aborting may wait as long -- the producer replaced (its
        # transactional id aborts what the old one left open) and the batch sent again.
        sending = asyncio.ensure_future(self._send(producer, rows))
        done, _ = await asyncio.wait({sending}, timeout=self._publish_timeout)
        if not done:
            sending.cancel()
            sending.add_done_callback(self._given_up)
            raise TimeoutError(f"a batch was not on Kafka after {self._publish_timeout} s")
        sending.result()
        await conn.execute(_DONE, [row["position"] for row in rows])
        self._kafka_ok = True
        self._metrics.events_published.inc(len(rows))
        self._log.debug("relay_published", count=len(rows))
        return len(rows)

    def _given_up(self, sending: asyncio.Future[None]) -> None:
        """How a batch given up ended, read and logged: its task is awaited by no one, and
        an error left unread would be reported by asyncio when the task is collected."""
        if not sending.cancelled() and sending.exception() is not None:
            self._log.warning("relay_batch_given_up_failed", error=repr(sending.exception()))

    async def _send(self, producer: AIOKafkaProducer, rows: list[asyncpg.Record]) -> None:
        """One batch in one Kafka transaction, committed."""
        async with producer.transaction():
            for row in rows:
                # Read as stored, not through the envelope model: the relay only forwards it.
                stored = wire_loads(row["envelope"])
                headers = [("type", str(stored["type"]).encode())]
                if FORMAT_ATTRIBUTE in stored:  # format 2: a CloudEvent in structured mode
                    headers.append(("content-type", CLOUDEVENTS_JSON))
                if row["traceparent"] is not None:  # the trace it was recorded in
                    headers.append((TRACEPARENT, row["traceparent"].encode()))
                key = partition_key(wire_value(stored, "pilot_id"), wire_value(stored, "family_id"))
                await producer.send(
                    self._topic,
                    value=canonical_json(stored),  # as stored: its hash is over these bytes
                    key=key,
                    headers=headers,
                )

    async def pending(self, conn: Connection) -> int:
        """How many committed events wait for the relay."""
        return int(await conn.fetchval(_PENDING))
