"""A consumer reads another service's events through the contracts, and is explicit about
event types no contract names and schema versions newer than it reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import ClassVar

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from services.spending import views
from shared.contracts import allocation
from shared.core.consumer import ConsumerRunner
from shared.core.events import DomainEvent, Envelope, canonical_json
from shared.core.eventstore import PendingEvent, Stream
from shared.core.kafka import DEADLETTER_TOPIC, connection
from shared.core.metrics import Metrics
from shared.core.settings import Settings
from tests.integration.fixtures import CONTEXT, migrated_pool, new_store
from tests.support import read_topic, wait_for


class FamilyRehoused(DomainEvent):
    """A type a newer allocation might publish, which no contract here names."""

    event_type: ClassVar[str] = "family.rehoused"
    moved_on: date


class FamilyEnrolledV2(DomainEvent):
    """``family.enrolled`` as a newer allocation might write it: version 2."""

    event_type: ClassVar[str] = "family.enrolled"
    schema_version: ClassVar[int] = 2
    family_id: str
    household: str


def enrolled(family_id: str) -> allocation.FamilyEnrolled:
    return allocation.FamilyEnrolled(
        family_id=family_id,
        team="t-1",
        worker="w-1",
        enrolled_on=date(2026, 1, 5),
        stratum=None,
        arm="treatment",
        pilot_version=1,
    )


def exited(on: date) -> allocation.FamilyExited:
    return allocation.FamilyExited(
        reason="sealed",
        exited_on=on,
        period_start=None,
        period_end=None,
        allocated_pence=0,
        committed_pence=0,
        spent_pence=0,
        available_pence=0,
    )


def family_stream(family_id: str, *events: DomainEvent) -> tuple[Envelope, ...]:
    stream = Stream(f"{allocation.FAMILY_STREAM}:p:{family_id}", ())
    return new_store().seal(stream, [PendingEvent(e, "p", family_id) for e in events], CONTEXT)


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    async with migrated_pool(settings, "spending", max_size=4) as pool:
        yield pool


async def test_unknown_types_are_passed_over_and_newer_versions_parked(
    settings: Settings, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    """Family a's stream has a type no contract names between its enrolment and its exit:
    the consumer passes it over and applies the exit. Family b's enrolment is schema version
    2: it is parked and dead-lettered (naming the version), and b's later exit waits behind
    it, while family c, a plain version 1 family, is applied."""
    a = family_stream(
        "a", enrolled("a"), FamilyRehoused(moved_on=date(2026, 2, 1)), exited(date(2026, 3, 1))
    )
    b = family_stream("b", FamilyEnrolledV2(family_id="b", household="h"), exited(date(2026, 3, 2)))
    c = family_stream("c", enrolled("c"))
    producer = AIOKafkaProducer(**connection(settings.kafka), acks="all")
    await producer.start()
    try:
        for envelope in (*a, *b, *c):
            await producer.send_and_wait(
                settings.topic(allocation.TOPIC),
                value=canonical_json(envelope.to_json_dict()),
                key=envelope.partition_key(),
            )
    finally:
        await producer.stop()
    runner = ConsumerRunner(
        name="contracts-test",
        pool=pool,
        kafka=settings.kafka,
        group_id=f"{settings.topic_prefix}contracts-test",
        topics=[settings.topic(allocation.TOPIC)],
        handler=views.apply,
        deadletter_topic=settings.topic(DEADLETTER_TOPIC),
        batch_size=100,
        metrics=Metrics("test"),
    )

    async def families() -> dict[str, asyncpg.Record]:
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT * FROM family_view")
        return {row["family_id"]: row for row in rows}

    async def parked() -> list[asyncpg.Record]:
        async with pool.acquire() as conn:
            return list(await conn.fetch('SELECT * FROM consumer_parked ORDER BY "offset"'))

    async def settled() -> bool:
        found, held = await families(), await parked()
        return "c" in found and "a" in found and found["a"]["exited_on"] and len(held) == 2

    async with runner:
        await wait_for(settled, timeout=30)
    found = await families()
    assert set(found) == {"a", "c"}
    assert found["a"]["exited_on"] == date(2026, 3, 1)
    assert found["a"]["stream_version"] == 3  # the unknown event counted towards the version
    held = await parked()
    assert [row["record_key"] for row in held] == ["p:b", "p:b"]
    assert "version 2 is newer than this code reads" in held[0]["error"]
    assert "held behind" in held[1]["error"]
    dead = await read_topic(settings, DEADLETTER_TOPIC, expect=1)
    assert [record.key for record in dead] == ["p:b"]
    assert "newer than this code reads" in dead[0].headers["error"]
