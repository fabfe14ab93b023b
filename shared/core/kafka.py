"""Kafka clients configured as a ledger needs them, topic creation, and partition bounds."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import TopicAlreadyExistsError

from shared.core.background import BackgroundTask
from shared.core.settings import KafkaAccess, Settings

__all__ = [
    "DEADLETTER_TOPIC",
    "SASL_MECHANISM",
    "KafkaWatch",
    "connection",
    "ensure_topics",
    "new_admin",
    "new_consumer",
    "new_producer",
    "partitions_of",
    "reachable",
    "topic_bounds",
]

DEADLETTER_TOPIC = "ledger.deadletter"
# Salted and iterated on the broker, never sent in the clear: a broker's copy of the
# credentials cannot be replayed as a password.
SASL_MECHANISM = "SCRAM-SHA-512"


def connection(kafka: KafkaAccess) -> dict[str, Any]:
    """The options every aiokafka client of the ledger connects with."""
    tls: dict[str, Any] = {}
    if kafka.ca_file is not None:
        # The broker's certificate and its name are checked against the CA given.
        tls = {"ssl_context": ssl.create_default_context(cafile=kafka.ca_file)}
    if kafka.username is None:
        return {
            "bootstrap_servers": kafka.bootstrap,
            "security_protocol": "SSL" if tls else "PLAINTEXT",
            **tls,
        }
    return {
        "bootstrap_servers": kafka.bootstrap,
        "security_protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
        "sasl_mechanism": SASL_MECHANISM,
        "sasl_plain_username": kafka.username,
        "sasl_plain_password": kafka.password,
        **tls,
    }


class KafkaWatch(BackgroundTask):
    """Whether Kafka can be reached, asked every ``every`` seconds in the background: what
    ``/readyz`` says of Kafka. A probe reads the last answer instead of connecting itself:
    a connection resolves its address in the loop's thread pool, where it waited seconds
    behind a large statement's import. The relay and the consumers only retry, quietly,
    while the broker is away; a stalled broker that still accepts connections shows in the
    relay's check."""

    def __init__(self, bootstrap: str, every: float = 2.0) -> None:
        super().__init__("kafka-watch")
        self._bootstrap = bootstrap
        self._every = every
        self.reachable = True  # until asked: a service starting is not degraded by default

    async def check(self) -> bool:
        """The last answer, for ``/readyz``."""
        return self.reachable

    async def _run(self) -> None:
        while not self._stopping:
            self.reachable = await reachable(self._bootstrap)
            await self._pause(self._every)


async def reachable(bootstrap: str) -> bool:
    """Whether any broker of ``bootstrap`` (``host:port,…``) accepts a connection now."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            async with asyncio.timeout(1.0):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except (OSError, TimeoutError, ValueError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


def new_producer(
    kafka: KafkaAccess, client_id: str, transactional_id: str | None = None
) -> AIOKafkaProducer:
    """A producer that loses nothing it acknowledged and writes nothing twice per session."""
    return AIOKafkaProducer(
        **connection(kafka),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        transactional_id=transactional_id,
        linger_ms=2,
        max_batch_size=256 * 1024,
        request_timeout_ms=15_000,
    )


def new_consumer(kafka: KafkaAccess, group_id: str | None, client_id: str) -> AIOKafkaConsumer:
    """A consumer whose position lives with its effects, not in auto-committed offsets.

    Without a ``group_id`` it joins no group: partitions are assigned to it directly.
    """
    return AIOKafkaConsumer(
        **connection(kafka),
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        max_poll_records=None,
        # Co-partitioned topics (same key, same partition count) land on the same consumer:
        # a family's allocation and spending events are handled by one replica.
        partition_assignment_strategy=(RangePartitionAssignor,),
        session_timeout_ms=10_000,
        # Leaving the group waits for the next heartbeat: a short interval makes stops quick.
        heartbeat_interval_ms=500,
        # Where a partition's leader moved while the group rebalanced, aiokafka's fetcher
        # asks the old leader for a start offset, is told NotLeaderForPartition, and asks it
        # again without refreshing its metadata, stalling every partition it fetches until
        # the metadata's age runs out (5 minutes by default; seen with three brokers and a
        # follower stalled: reporting applied nothing for 3 minutes). Kept fresh instead.
        metadata_max_age_ms=5_000,
    )


async def ensure_topics(settings: Settings, topics: Sequence[str]) -> list[str]:
    """Create the topics (unprefixed names) where missing; return the names created."""
    admin = new_admin(settings.kafka)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        wanted = [name for name in map(settings.topic, topics) if name not in existing]
        if wanted:
            # Another process may create them between our listing and our request.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=settings.topic_partitions,
                            replication_factor=settings.topic_replicas,
                        )
                        for name in wanted
                    ]
                )
        return wanted
    finally:
        await admin.close()


def new_admin(kafka: KafkaAccess) -> AIOKafkaAdminClient:
    """An admin client (topics and their partitions)."""
    return AIOKafkaAdminClient(**connection(kafka))


async def topic_bounds(
    kafka: KafkaAccess, topics: list[str]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """The first and the next offset of every partition of ``topics`` (committed records)."""
    partitions = [
        TopicPartition(topic, number)
        for topic in topics
        for number in await partitions_of(kafka, topic)
    ]
    consumer = new_consumer(kafka, None, "ledger-topic-bounds")
    try:
        await consumer.start()
        beginnings: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return beginnings, ends
    finally:
        await asyncio.shield(consumer.stop())


async def partitions_of(kafka: KafkaAccess, topic: str) -> list[int]:
    """The partition numbers of a topic, as the broker describes it."""
    admin = new_admin(kafka)
    try:
        await admin.start()
        [description] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(partition["partition"] for partition in description["partitions"])
