"""The consumer runner against real PostgreSQL and Kafka: exactly-once effects, poison records."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
import pytest
import structlog.testing
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from deploy.stack import ROOT
from shared.core.consumer import BatchHandler, ConsumerRunner, EventHandler
from shared.core.db import Connection
from shared.core.events import Envelope, canonical_json
from shared.core.kafka import connection, new_producer
from shared.core.metrics import Metrics
from shared.core.settings import KafkaAccess, Settings
from tests.integration.fixtures import envelopes_for, migrated_pool
from tests.support import read_topic, settings_env, wait_for

TOPIC = "ledger.spending"


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    async with migrated_pool(settings, "allocation", max_size=6) as pool:
        yield pool


async def produce(
    settings: Settings, items: list[tuple[bytes, bytes]], partition: int | None = None
) -> None:
    producer = AIOKafkaProducer(**connection(settings.kafka), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(
                settings.topic(TOPIC), value=value, key=key, partition=partition
            )
    finally:
        await producer.stop()


def records_of(envelopes: tuple[Envelope, ...]) -> list[tuple[bytes, bytes]]:
    return [(e.partition_key(), canonical_json(e.to_json_dict())) for e in envelopes]


async def count(pool: asyncpg.Pool[asyncpg.Record], sql: str) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval(sql))


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.consumer_worker",
            settings.topic(TOPIC),
        ],
        cwd=ROOT,
        env={**settings_env(settings), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.faults
async def test_killed_mid_batch_applies_every_effect_once(
    settings: Settings, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    """SIGKILL a consumer mid-batch and start another: every record's effect exists exactly once."""
    families = [envelopes_for("p", f"f{n}", list(range(1, 31))) for n in range(10)]
    items = [item for family in families for item in records_of(family)]
    # Redeliveries, as a relay that crashed after publishing would cause: dropped by version.
    items += records_of(families[0][:5])
    await produce(settings, items)
    first = start_worker(settings)
    try:
        await wait_for(lambda: _table_has_rows(pool, 40), timeout=60)
        await asyncio.sleep(0.3)
    finally:
        kill(first)
    applied_before = await count(pool, "SELECT count(*) FROM effects")
    assert 0 < applied_before < 300
    second = start_worker(settings)
    try:
        await wait_for(lambda: _table_has_rows(pool, 300), timeout=90)
        await asyncio.sleep(1.0)  # anything applied twice would arrive now
    finally:
        kill(second)
    assert await count(pool, "SELECT count(*) FROM effects") == 300
    assert await count(pool, "SELECT count(DISTINCT event_id) FROM effects") == 300


async def _table_has_rows(pool: asyncpg.Pool[asyncpg.Record], wanted: int) -> bool:
    async with pool.acquire() as conn:
        exists = await conn.fetchval("SELECT to_regclass('effects') IS NOT NULL")
        return bool(exists) and int(await conn.fetchval("SELECT count(*) FROM effects")) >= wanted


def runner_for(
    settings: Settings,
    pool: asyncpg.Pool[asyncpg.Record],
    name: str,
    handler: EventHandler,
    producer_factory: Callable[[KafkaAccess, str], AIOKafkaProducer] = new_producer,
    many: BatchHandler | None = None,
) -> ConsumerRunner:
    """A consumer of the test's topic, in a group of its own, dead-lettering as services do."""
    return ConsumerRunner(
        name=name,
        pool=pool,
        kafka=settings.kafka,
        group_id=f"{settings.topic_prefix}{name}",
        topics=[settings.topic(TOPIC)],
        handler=handler,
        deadletter_topic=settings.topic("ledger.deadletter"),
        batch_size=100,
        metrics=Metrics("test"),
        producer_factory=producer_factory,
        many=many,
    )


class Recorder:
    """A handler that records numbers and refuses poison until it is fixed."""

    def __init__(self) -> None:
        self.fixed = False
        self.batches: list[int] = []  # the size of each batch the batch handler was given

    async def __call__(self, conn: Connection, envelope: Envelope) -> None:
        await conn.execute(
            "INSERT INTO applied VALUES ($1, $2)", envelope.family_id, envelope.data["number"]
        )
        if envelope.data["poison"] and not self.fixed:
            raise ValueError("cannot apply this record")

    async def many(self, conn: Connection, envelopes: Sequence[Envelope]) -> None:
        """The same, for a batch at once: one statement, refused whole for any poison."""
        self.batches.append(len(envelopes))
        await conn.execute(
            "INSERT INTO applied SELECT * FROM unnest($1::text[], $2::integer[])",
            [e.family_id for e in envelopes],
            [e.data["number"] for e in envelopes],
        )
        if any(e.data["poison"] for e in envelopes) and not self.fixed:
            raise ValueError("cannot apply this record")


@pytest.mark.parametrize("at_once", [False, True], ids=["one-by-one", "batch-handler"])
async def test_poison_record_is_deadlettered_and_its_family_parked(
    settings: Settings, pool: asyncpg.Pool[asyncpg.Record], at_once: bool
) -> None:
    """A bad record is dead-lettered with its origin; its family's later ones wait; others flow.
    With a batch handler, the batch it refuses is redone record by record, to the same end."""
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE applied (family text, number integer)")
    sick = envelopes_for("p", "sick", [1, 2, 3], poison=frozenset({2}))
    well = envelopes_for("p", "well", [1, 2])
    garbage = [(b"p:junk", b"not json at all")]
    # One partition for all of them: the partition must keep moving past the poison.
    await produce(
        settings,
        records_of(sick[:2]) + garbage + records_of(well) + records_of(sick[2:]),
        partition=0,
    )
    recorder = Recorder()
    many = recorder.many if at_once else None
    runner = runner_for(settings, pool, "poison-test", recorder, many=many)

    async def applied() -> list[tuple[str, int]]:
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT family, number FROM applied ORDER BY family, number")
        return [(row["family"], row["number"]) for row in rows]

    async with runner:
        await wait_for(lambda: _parked(pool, 3), timeout=30)
        assert await applied() == [("sick", 1), ("well", 1), ("well", 2)]
        dead = await read_topic(settings, "ledger.deadletter", expect=2)
        assert len(dead) == 2
        by_offset = {int(r.headers["origin_offset"]): r for r in dead}
        poison = by_offset[1]
        assert poison.headers["origin_topic"] == settings.topic(TOPIC)
        assert poison.headers["origin_partition"] == "0"
        assert "cannot apply this record" in poison.headers["error"]
        assert poison.value["data"]["number"] == 2
        assert "not a ledger event" in by_offset[2].headers["error"]
    recorder.fixed = True
    assert await runner.retry_parked() == 2
    assert await applied() == [("sick", 1), ("sick", 2), ("sick", 3), ("well", 1), ("well", 2)]
    assert await count(pool, "SELECT count(*) FROM consumer_parked") == 1  # the garbage stays
    # The batch handler was given the checked records (not the garbage) and refused them.
    assert (max(recorder.batches, default=0) > 1) == at_once


async def test_a_record_that_is_no_event_holds_nothing_back(
    settings: Settings, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    """Garbage under a family's key is dead-lettered and holds none of the family's events
    back: it has no place in the family's stream (it used to park the family for good)."""
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE applied (family text, number integer)")
    family = envelopes_for("p", "hit", [1, 2])
    items = [*records_of(family[:1]), (b"p:hit", b"not json at all"), *records_of(family[1:])]
    await produce(settings, items, partition=0)
    async with runner_for(settings, pool, "garbage-test", Recorder()):
        await wait_for(lambda: _applied(pool, 2), timeout=30)
        dead = await read_topic(settings, "ledger.deadletter", expect=1)
    assert [r.headers["error"].startswith("rejected: not a ledger event") for r in dead] == [True]
    async with pool.acquire() as conn:
        parked = await conn.fetch("SELECT record_key, error FROM consumer_parked")
    assert [row["error"].startswith("rejected: ") for row in parked] == [True]
    assert parked[0]["record_key"] != "p:hit"  # under a key of its own


async def test_a_batch_handler_applies_a_clean_batch_at_once(
    settings: Settings, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    """Records without a problem, with redeliveries among them, are given to the batch
    handler together, each once, and never to the one-at-a-time handler."""
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE applied (family text, number integer)")
    first, second = envelopes_for("p", "a", [1, 2, 3]), envelopes_for("p", "b", [1, 2])
    items = records_of(first) + records_of(second) + records_of(first[:2])  # two redelivered
    await produce(settings, items, partition=0)
    recorder = Recorder()
    singles: list[Envelope] = []

    async def one(conn: Connection, envelope: Envelope) -> None:
        singles.append(envelope)
        await recorder(conn, envelope)

    async with runner_for(settings, pool, "batch-test", one, many=recorder.many):
        await wait_for(lambda: _applied(pool, 5), timeout=30)
        await asyncio.sleep(0.5)  # a redelivery applied would arrive now
    assert await count(pool, "SELECT count(*) FROM applied") == 5
    assert singles == []
    assert sum(recorder.batches) == 5


async def _applied(pool: asyncpg.Pool[asyncpg.Record], wanted: int) -> bool:
    return await count(pool, "SELECT count(*) FROM applied") >= wanted


async def _parked(pool: asyncpg.Pool[asyncpg.Record], wanted: int) -> bool:
    return await count(pool, "SELECT count(*) FROM consumer_parked") >= wanted


async def test_gap_in_a_stream_parks_the_family(
    settings: Settings, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    """A missing version is never papered over: the later event waits for it."""
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE applied (family text, number integer)")
    family = envelopes_for("p", "gappy", [1, 2, 3])
    await produce(settings, records_of((family[0], family[2])))
    runner = runner_for(settings, pool, "gap-test", Recorder())
    async with runner:
        await wait_for(lambda: _parked(pool, 1), timeout=30)
        await produce(settings, records_of((family[1],)))
        await asyncio.sleep(1.0)
    async with pool.acquire() as conn:
        parked = await conn.fetchrow(
            'SELECT error, value FROM consumer_parked ORDER BY "offset" LIMIT 1'
        )
        numbers = [
            row["number"] for row in await conn.fetch("SELECT number FROM applied ORDER BY number")
        ]
    assert parked is not None
    assert "jumped from version 1 to 3" in parked["error"]
    assert Envelope.model_validate_json(parked["value"]).stream_version == 3
    # Version 2 arrived later and waits behind version 3; a retry applies both, in order.
    assert numbers == [1]
    assert await runner.retry_parked() == 2
    async with pool.acquire() as conn:
        numbers = [
            row["number"] for row in await conn.fetch("SELECT number FROM applied ORDER BY number")
        ]
        assert await conn.fetchval("SELECT count(*) FROM consumer_parked") == 0
    assert numbers == [1, 2, 3]


class FlakyRecorder(Recorder):
    """Refuses poison for good, and meets one transient database error on a given record."""

    def __init__(self, flaky: int) -> None:
        super().__init__()
        self.flaky = flaky
        self.failed_once = False

    async def __call__(self, conn: Connection, envelope: Envelope) -> None:
        if envelope.data["number"] == self.flaky and not self.failed_once:
            self.failed_once = True
            raise asyncpg.DeadlockDetectedError("deadlock detected (a passing fault)")
        await super().__call__(conn, envelope)


async def test_a_transient_error_on_the_careful_path_retries_the_batch(
    settings: Settings, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    """A poison record sends the batch down the record-by-record path; a deadlock there is
    transient: the batch is read again and applied, and the consumer is not restarted."""
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE applied (family text, number integer)")
    envelopes = envelopes_for("p", "f", [1, 2, 3], poison=frozenset({1}))
    others = envelopes_for("p", "g", [1, 2, 3])
    await produce(settings, records_of(envelopes) + records_of(others), partition=0)
    # The deadlock hits family g's second record, on the careful pass the poison caused.
    recorder = FlakyRecorder(flaky=2)
    runner = runner_for(settings, pool, "flaky-test", recorder)
    with structlog.testing.capture_logs() as logs:
        async with runner:
            await wait_for(lambda: _table_has_rows_of(pool, "g", 3), timeout=30)
    events = [line["event"] for line in logs]
    assert recorder.failed_once
    assert "consumer_batch_retry" in events
    assert "consumer_retrying" not in events  # the consumer itself never restarted
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT family, number FROM applied ORDER BY family, number")
    assert [(row["family"], row["number"]) for row in rows] == [("g", 1), ("g", 2), ("g", 3)]


async def _table_has_rows_of(pool: asyncpg.Pool[asyncpg.Record], family: str, wanted: int) -> bool:
    async with pool.acquire() as conn:
        found = await conn.fetchval("SELECT count(*) FROM applied WHERE family = $1", family)
    return int(found) >= wanted


class FirstSendFails:
    """A real producer whose first dead letter meets an unreachable broker."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self.failed = False

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send_and_wait(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise KafkaConnectionError("the broker went away after the batch committed")
        return await self._producer.send_and_wait(*args, **kwargs)


async def test_a_record_parked_while_kafka_is_away_is_dead_lettered_later(
    settings: Settings, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    """The poison record's batch commits (parked), then its dead letter cannot be sent: the
    consumer starts again and sends it then, once (before the fix it was never sent)."""
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE applied (family text, number integer)")
    await produce(settings, records_of(envelopes_for("p", "sick", [1], poison=frozenset({1}))))
    producers: list[FirstSendFails] = []

    def producer(kafka: KafkaAccess, client_id: str) -> AIOKafkaProducer:
        if not producers:
            producers.append(FirstSendFails(new_producer(kafka, client_id)))
            return producers[0]
        return new_producer(kafka, client_id)

    runner = runner_for(settings, pool, "due-test", Recorder(), producer_factory=producer)
    async with runner:
        dead = await read_topic(settings, "ledger.deadletter", expect=1, timeout=30)
    assert producers[0].failed
    assert [record.headers["origin_offset"] for record in dead] == ["0"]
    assert "cannot apply this record" in dead[0].headers["error"]
    assert await count(pool, "SELECT count(*) FROM consumer_parked WHERE deadletter_due") == 0
