"""A reader outside the ledger (a council's warehouse) gets a Kafka principal of its own
from ``ledger readers create``: it reads every ledger topic in a consumer group under its
own prefix, each record a CloudEvent the official SDK reads, and can do nothing else (no
other group, no dead letters, no write); ``ledger readers revoke`` takes it all away."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat

from shared.contracts import allocation, approval, spending
from shared.core.kafka import DEADLETTER_TOPIC, connection
from shared.core.settings import KafkaAccess, Settings
from tests.e2e.system import running_system
from tests.support import run_ledger, wait_for

TOPICS = (allocation.TOPIC, spending.TOPIC, approval.TOPIC)


async def _read_all(access: KafkaAccess, topic: str, group: str, expect: int) -> list[object]:
    """Every record of ``topic`` from the start, in consumer group ``group`` (committed)."""
    consumer = AIOKafkaConsumer(
        topic,
        **connection(access),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[object] = []
    try:

        async def enough() -> bool:
            batches = await consumer.getmany(timeout_ms=500)
            records.extend(r for batch in batches.values() for r in batch)
            return len(records) >= expect

        await wait_for(enough, timeout=30)
        await consumer.commit()
    finally:
        await consumer.stop()
    return records


async def _refused(access: KafkaAccess, topic: str, group: str) -> KafkaError:
    """The error a consumer meets reading ``topic`` in ``group``."""
    consumer = AIOKafkaConsumer(
        topic, **connection(access), group_id=group, auto_offset_reset="earliest"
    )
    try:
        await consumer.start()
        await consumer.getmany(timeout_ms=5000)
        await consumer.getmany(timeout_ms=2000)
    except KafkaError as error:
        return error
    finally:
        await consumer.stop()
    raise AssertionError(f"reading {topic} in {group} was allowed")


async def test_a_reader_reads_every_topic_in_its_own_groups_and_nothing_else(
    settings: Settings, token: Callable[..., str]
) -> None:
    async with running_system(settings, token) as system:
        await system.configure()
        version = await system.enrol("fam-1", allocate=100_000)
        request = await system.request("fam-1", 1_000, version=version)
        await system.settled(request["request_id"], "approved")

    code, output = await run_ledger(settings, "readers", "create", "warehouse")
    assert code == 0, output
    made = json.loads(output)
    assert made["principal"] == "reader-warehouse"
    assert sorted(made["topics"]) == sorted(map(settings.topic, TOPICS))
    reader = KafkaAccess(settings.kafka_bootstrap, made["principal"], made["password"])
    group = f"{made['group_prefix']}events"

    for topic in TOPICS:
        records = await _read_all(reader, settings.topic(topic), group, expect=1)
        for record in records:
            message = KafkaMessage(
                headers=dict(record.headers),  # type: ignore[attr-defined]
                key=record.key,  # type: ignore[attr-defined]
                value=record.value,  # type: ignore[attr-defined]
            )
            event = from_kafka(message, JSONFormat())
            assert event.get_type().split(".")[0] in {"pilot", "family", "spend_request",
                                                      "decision"}, event.get_type()  # fmt: skip
            assert event.get_extension("pilotid") == "wigan"

    code, listed = await run_ledger(settings, "readers", "list")
    assert code == 0
    assert [json.loads(line)["principal"] for line in listed.splitlines()] == [made["principal"]]

    # Another group, the dead letters, writing: refused.
    other = await _refused(reader, settings.topic(allocation.TOPIC), settings.topic("approval.x"))
    assert isinstance(other, GroupAuthorizationFailedError), other
    dead = await _refused(reader, settings.topic(DEADLETTER_TOPIC), group)
    assert isinstance(dead, TopicAuthorizationFailedError), dead
    producer = AIOKafkaProducer(**connection(reader))  # not idempotent: that is refused first
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(settings.topic(allocation.TOPIC), b"{}")
    finally:
        await producer.stop()

    code, _ = await run_ledger(settings, "readers", "revoke", "warehouse")
    assert code == 0
    gone = await _refused(reader, settings.topic(allocation.TOPIC), group)
    assert isinstance(gone, KafkaConnectionError | TopicAuthorizationFailedError), gone
    code, listed = await run_ledger(settings, "readers", "list")
    assert (code, listed) == (0, "")
