"""A relay process that dies at the worst moment: ``python -m tests.integration.relay_worker``.

Its producer is a real one; the process kills itself (SIGKILL) right after the first Kafka
transaction commits, before the relay deletes the batch's outbox rows. The next relay then
publishes the same batch again: the case consumers and the audit must take in their stride.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.core.db import dsn
from shared.core.kafka import new_producer
from shared.core.metrics import Metrics
from shared.core.outbox import OutboxRelay
from shared.core.settings import KafkaAccess, Settings


class DiesAfterCommit:
    """A real producer whose process dies the moment a transaction has committed."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        return await self._producer.send(*args, **kwargs)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self._producer.transaction():
            yield
        os.kill(os.getpid(), signal.SIGKILL)  # committed on Kafka; the outbox rows remain


def producer(kafka: KafkaAccess, client_id: str, transactional_id: str) -> AIOKafkaProducer:
    return DiesAfterCommit(new_producer(kafka, client_id, transactional_id))


async def main(settings: Settings, topic: str, transactional_id: str) -> None:
    relay = OutboxRelay(
        dsn=dsn(settings, settings.database_of("allocation")),
        kafka=settings.kafka,
        topic=topic,
        transactional_id=transactional_id,
        batch_size=500,
        poll_seconds=0.2,
        metrics=Metrics("worker"),
        clock=lambda: datetime.now(UTC),
        producer_factory=producer,
    )
    async with relay:
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Settings(), sys.argv[1], sys.argv[2]))  # settings from the environment
