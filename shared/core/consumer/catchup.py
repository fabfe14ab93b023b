"""Reading to exact offsets outside any consumer group, for rebuilding projections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.core.consumer.batches import BatchApplier
from shared.core.kafka import new_consumer
from shared.core.settings import KafkaAccess

__all__ = ["catch_up"]


async def catch_up(
    applier: BatchApplier,
    kafka: KafkaAccess,
    targets: Mapping[TopicPartition, int],
    progress: Callable[[int], object],
    batch_size: int,
) -> int:
    """Apply every record before ``targets``, outside any group; return how many were read.

    ``progress`` is told how many offsets each step passed (transaction markers take
    offsets too), so that it adds up to the targets minus the stored offsets.

    Each partition starts where the applier's effects stand and stops exactly at its
    target, so the result can be compared with, and swapped for, a live consumer's at the
    same offsets. A record that cannot be applied is parked as usual but not dead-lettered
    again: the live consumer did that already. Nor is each event applied logged. A batch
    that meets a transient error is read again from the stored offset.
    """
    stored = await applier.stored_offsets()
    pending = {
        partition: target
        for partition, target in targets.items()
        if stored.get((partition.topic, partition.partition), 0) < target
    }
    if not pending:
        return 0
    consumer = new_consumer(kafka, None, applier.name)
    try:
        await consumer.start()
        consumer.assign(list(pending))
        for partition in pending:
            offset = stored.get((partition.topic, partition.partition))
            if offset is None:
                await consumer.seek_to_beginning(partition)
            else:
                consumer.seek(partition, offset)
        return await _read_until(consumer, applier, pending, progress, batch_size)
    finally:
        await asyncio.shield(consumer.stop())


async def _read_until(
    consumer: AIOKafkaConsumer,
    applier: BatchApplier,
    pending: dict[TopicPartition, int],
    progress: Callable[[int], object],
    batch_size: int,
) -> int:
    read = 0
    positions = {partition: await consumer.position(partition) for partition in pending}
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=500, max_records=batch_size)
        for partition, records in batches.items():
            wanted = [record for record in records if record.offset < pending[partition]]
            if not wanted:
                continue
            if await applier.apply(consumer, partition, wanted, live=False) is not None:
                read += len(wanted)
        for partition in list(pending):
            position = min(await consumer.position(partition), pending[partition])
            progress(max(0, position - positions[partition]))
            positions[partition] = max(position, positions[partition])
            if position >= pending[partition]:
                consumer.pause(partition)
                del pending[partition]
    return read
