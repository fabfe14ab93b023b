"""The live consumer: a background task in a consumer group, applying what it is assigned.

It polls, hands each partition's batch to the :class:`~.batches.BatchApplier`, publishes
what could not be applied to the dead-letter topic, shows its lag, and tries parked records
again every minute. On assignment each partition starts where this consumer's effects stand
(offsets live in its database, never in Kafka).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from shared.core.background import BackgroundTask
from shared.core.consumer.batches import BatchApplier, BatchHandler, EventHandler
from shared.core.consumer.catchup import catch_up
from shared.core.consumer.deadletters import publish_due
from shared.core.consumer.lag import LagGauges
from shared.core.consumer.parking import retry_parked, retry_requested
from shared.core.kafka import new_consumer, new_producer
from shared.core.metrics import Metrics
from shared.core.settings import KafkaAccess
from shared.core.topics import TopicOwner

__all__ = ["ConsumerRunner"]

_RETRY_PARKED_SECONDS = 60.0
_RETRY_REQUESTS_SECONDS = 2.0  # how often an operator's request to retry is looked for
_MAX_BACKOFF = 5.0


class ConsumerRunner(BackgroundTask):
    """Consumes some topics into one service's database, in a background task."""

    def __init__(
        self,
        *,
        name: str,
        pool: asyncpg.Pool[asyncpg.Record],
        kafka: KafkaAccess,
        group_id: str,
        topics: Sequence[str],
        handler: EventHandler,
        deadletter_topic: str,
        batch_size: int,
        metrics: Metrics,
        producer_factory: Callable[[KafkaAccess, str], AIOKafkaProducer] = new_producer,
        owners: Mapping[str, TopicOwner] | None = None,
        many: BatchHandler | None = None,
        prepare: BatchHandler | None = None,
    ) -> None:
        super().__init__(f"consumer:{name}")
        self.name = name
        self._pool = pool
        self._producer_factory = producer_factory
        self._applier = BatchApplier(name, pool, handler, metrics, owners, many, prepare)
        self._kafka = kafka
        self._group_id = group_id
        self._topics = tuple(topics)
        self._deadletter_topic = deadletter_topic
        self._batch_size = batch_size
        self._metrics = metrics
        self._lag = LagGauges(name, metrics)
        metrics.consumes(name, topics)
        self._log = structlog.get_logger().bind(component="consumer", consumer=name)
        self._failing = False
        self._joined = False  # a member of its group, with its partitions (maybe none)

    @property
    def in_group(self) -> bool:
        """Reading, as a member of its consumer group that has been given its partitions:
        what ``/readyz`` asks of a consumer. False while it joins, rebalances, or retries."""
        return self.reading and self._joined

    @property
    def reading(self) -> bool:
        """Running and not retrying after a failure (still connecting counts as reading):
        a view this consumer keeps can catch up only while it reads."""
        return self.running and not self._failing

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - a consumer must outlive any outage
                self._failing = True
                self._log.warning("consumer_retrying", error=repr(error), backoff_seconds=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _consume(self) -> None:
        self._joined = False
        consumer = new_consumer(self._kafka, self._group_id, self.name)
        producer = self._producer_factory(self._kafka, f"{self.name}-deadletter")
        try:
            # Starts inside the try: a client that failed to start still has connections to close.
            await producer.start()
            consumer.subscribe(list(self._topics), listener=_SeekToStored(self, consumer))
            try:
                await consumer.start()
                self._failing = False
                await self._loop(consumer, producer)
            finally:
                await asyncio.shield(consumer.stop())
        finally:
            # Shielded: a stop cut short by cancellation still closes the connections.
            await asyncio.shield(producer.stop())

    async def _loop(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        await self._publish_due(producer)  # what a failure kept from the dead-letter topic
        await self.retry_parked()
        loop = asyncio.get_running_loop()
        retried_at = asked_at = loop.time()
        while not self._stopping:
            for partition, records in (await self._poll(consumer)).items():
                if await self._applier.apply(consumer, partition, records):
                    await self._publish_due(producer)
            await self._lag.observe(consumer)
            if loop.time() - asked_at > _RETRY_REQUESTS_SECONDS:
                asked_at = loop.time()
                if await retry_requested(self._applier):
                    retried_at = 0.0
            if loop.time() - retried_at > _RETRY_PARKED_SECONDS:
                await self.retry_parked()
                retried_at = loop.time()

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
        return await self._applier.stored_offsets()

    async def catch_up(
        self, targets: Mapping[TopicPartition, int], progress: Callable[[int], object]
    ) -> int:
        """Apply every record before ``targets`` outside any group (see :mod:`.catchup`)."""
        return await catch_up(self._applier, self._kafka, targets, progress, self._batch_size)

    async def retry_parked(self) -> int:
        """Try parked records again (see :mod:`.parking`); return how many were applied."""
        return await retry_parked(self._applier)

    async def _publish_due(self, producer: AIOKafkaProducer) -> None:
        await publish_due(self.name, self._pool, producer, self._deadletter_topic, self._metrics)

    async def seek_to_stored(
        self, consumer: AIOKafkaConsumer, assigned: Sequence[TopicPartition]
    ) -> None:
        """Start each newly assigned partition where this consumer's effects stand."""
        self._log.info("partitions_assigned", partitions=_names(assigned))
        # The lag of what another replica now holds is that replica's to show. Pruned here,
        # not only on revocation: until the new assignment is in place the consumer still
        # lists the old one, and lag observed in between would come back, frozen.
        self._lag.show_only_for(assigned)
        stored = await self.stored_offsets()
        for partition in assigned:
            offset = stored.get((partition.topic, partition.partition))
            if offset is not None:
                consumer.seek(partition, offset)
        # A partition with no stored offset starts at its beginning by itself: the group
        # commits no offsets to Kafka and ``auto_offset_reset`` is "earliest". Awaiting
        # ``seek_to_beginning`` here, inside the rebalance callback, took about 2.5 s (aiokafka
        # resets offsets through its fetcher): on every start, rebalance and stop.
        self._joined = True

    def release(self, revoked: Sequence[TopicPartition]) -> None:
        """Hand partitions over. Nothing to flush: progress is committed with each batch."""
        self._log.info("partitions_revoked", partitions=_names(revoked))
        self._joined = False  # until the group has given it its partitions again
        self._lag.release(revoked)


def _names(partitions: Sequence[TopicPartition]) -> list[str]:
    """Partitions as ops read them in logs: ``topic:partition``, sorted."""
    return sorted(f"{partition.topic}:{partition.partition}" for partition in partitions)


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
