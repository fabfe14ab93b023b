"""Publishing parked records to the dead-letter topic, so that an alert sees each once.

A record is parked, and marked due, in the transaction that commits its batch; it is
published afterwards and then marked done. A consumer that fails in between (Kafka gone,
the process killed) finds it still due when it starts again, and publishes it then: a
record can be dead-lettered twice, never not at all.
"""

from __future__ import annotations

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from shared.core.metrics import Metrics

__all__ = ["publish_due"]

_DUE = """
SELECT topic, partition, "offset", coalesce(origin_key, record_key) AS record_key, value, error
FROM consumer_parked
WHERE consumer = $1 AND deadletter_due ORDER BY topic, partition, "offset"
"""
_DONE = """
UPDATE consumer_parked SET deadletter_due = false
WHERE consumer = $1 AND topic = $2 AND partition = $3 AND "offset" = $4
"""


async def publish_due(
    consumer: str,
    pool: asyncpg.Pool[asyncpg.Record],
    producer: AIOKafkaProducer,
    deadletter_topic: str,
    metrics: Metrics,
) -> int:
    """Publish every parked record of ``consumer`` still due; return how many."""
    log = structlog.get_logger().bind(component="consumer", consumer=consumer)
    async with pool.acquire() as conn:
        rows = await conn.fetch(_DUE, consumer)
    for row in rows:
        await producer.send_and_wait(
            deadletter_topic,
            value=bytes(row["value"]),
            key=row["record_key"].encode() or None,
            headers=[
                ("origin_topic", row["topic"].encode()),
                ("origin_partition", str(row["partition"]).encode()),
                ("origin_offset", str(row["offset"]).encode()),
                ("consumer", consumer.encode()),
                ("error", row["error"].encode()[:4000]),
            ],
        )
        async with pool.acquire() as conn:
            await conn.execute(_DONE, consumer, row["topic"], row["partition"], row["offset"])
        metrics.deadlettered.labels(consumer, row["topic"]).inc()
        log.error(
            "record_deadlettered",
            topic=row["topic"],
            partition=row["partition"],
            offset=row["offset"],
            error=row["error"],
        )
    return len(rows)
