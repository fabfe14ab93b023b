"""A consumer process for the kill-mid-batch test: ``python -m tests.integration.consumer_worker``.

It applies every record of a topic to an ``effects`` table without any uniqueness, slowly,
so that the test can kill it with SIGKILL in the middle of a batch and count duplicates.
"""

from __future__ import annotations

import asyncio
import sys

from shared.core.consumer import ConsumerRunner
from shared.core.db import Connection, dsn, open_pool
from shared.core.events import Envelope
from shared.core.metrics import Metrics
from shared.core.settings import Settings

CREATE_EFFECTS = """
CREATE TABLE IF NOT EXISTS effects (
    event_id uuid NOT NULL, stream_id text NOT NULL, version integer NOT NULL
)
"""


async def apply_slowly(conn: Connection, envelope: Envelope) -> None:
    """Record the effect, then dawdle so that batches take a while."""
    await conn.execute(
        "INSERT INTO effects VALUES ($1, $2, $3)",
        envelope.id,
        envelope.stream_id,
        envelope.stream_version,
    )
    await asyncio.sleep(0.01)


async def main(settings: Settings, topic: str) -> None:
    async with open_pool(
        dsn(settings, settings.database_of("allocation")), min_size=1, max_size=2
    ) as pool:
        async with pool.acquire() as conn:
            await conn.execute(CREATE_EFFECTS)
        runner = ConsumerRunner(
            name="kill-test",
            pool=pool,
            kafka=settings.kafka,
            group_id=f"{settings.topic_prefix}kill-test",
            topics=[topic],
            handler=apply_slowly,
            deadletter_topic=settings.topic("ledger.deadletter"),
            batch_size=100,
            metrics=Metrics("worker"),
        )
        async with runner:
            await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Settings(), sys.argv[1]))  # settings from the environment
