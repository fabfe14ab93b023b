"""Consumer lag on ``/metrics``: shown for the partitions this replica holds, and only those."""

from __future__ import annotations

from collections.abc import Collection

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError

from shared.core.metrics import Metrics

__all__ = ["LagGauges"]


class LagGauges:
    """The ``ledger_consumer_lag`` gauges of one consumer."""

    def __init__(self, consumer_name: str, metrics: Metrics) -> None:
        self._name = consumer_name
        self._metrics = metrics
        self._shown: set[TopicPartition] = set()

    async def observe(self, consumer: AIOKafkaConsumer) -> None:
        """Records behind the end of each partition the consumer holds."""
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
                    self._name, partition.topic, str(partition.partition)
                ).set(max(0, highwater - position))
                self._shown.add(partition)

    def show_only_for(self, partitions: Collection[TopicPartition]) -> None:
        """Drop the gauges of every other partition (another replica shows those)."""
        for partition in self._shown - set(partitions):
            self._metrics.consumer_lag.remove(self._name, partition.topic, str(partition.partition))
        self._shown &= set(partitions)

    def release(self, revoked: Collection[TopicPartition]) -> None:
        """Partitions given up in a rebalance."""
        self.show_only_for(self._shown - set(revoked))
