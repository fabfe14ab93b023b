"""The outbox relay against real PostgreSQL and Kafka: late commits, outages, order."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections import defaultdict

import asyncpg
import pytest

from deploy.stack import ROOT, Kafka, free_port
from shared.contracts import allocation
from shared.core.commands import CommandResult, CommandRunner
from shared.core.db import Connection, dsn, open_pool
from shared.core.eventstore import PendingEvent, Stream
from shared.core.kafka import ensure_topics
from shared.core.metrics import Metrics
from shared.core.outbox import BATCH, OutboxRelay
from shared.core.settings import Settings
from shared.web.registry import ledger_topics, migrate
from tests.conftest import Infrastructure
from tests.integration.fixtures import CONTEXT, Noted, new_store, utcnow
from tests.support import read_topic, run_ledger, settings_env, wait_for

TOPIC = allocation.TOPIC


def relay_for(
    settings: Settings,
    metrics: Metrics | None = None,
    *,
    poll_seconds: float = 0.2,
    stall_seconds: float = 30.0,
    publish_timeout_seconds: float = 60.0,
) -> OutboxRelay:
    return OutboxRelay(
        dsn=dsn(settings, settings.database_of("allocation")),
        kafka=settings.kafka,
        topic=settings.topic(TOPIC),
        transactional_id=f"{settings.topic_prefix}relay-test",
        batch_size=50,
        poll_seconds=poll_seconds,
        metrics=metrics or Metrics("test"),
        clock=utcnow,
        stall_seconds=stall_seconds,
        publish_timeout_seconds=publish_timeout_seconds,
    )


async def append_slowly(
    runner: CommandRunner, stream_id: str, number: int, rng: random.Random
) -> None:
    """Append one event, then hold the transaction open 0-200 ms before committing."""
    store = new_store()
    delay = rng.uniform(0, 0.2)

    async def handle(conn: Connection) -> CommandResult:
        stream = await store.load(conn, stream_id)
        family = stream_id.rsplit(":", 1)[1]
        await store.append(conn, stream, [PendingEvent(Noted(number=number), "p", family)], CONTEXT)
        await asyncio.sleep(delay)
        return CommandResult(201, {})

    await runner.run(handle, None)


async def test_late_commits_are_never_skipped(settings: Settings) -> None:
    """16 writers committing out of order: every event reaches Kafka once, each stream in order."""
    await migrate(settings, ["allocation"])
    rng = random.Random(16)
    async with open_pool(
        dsn(settings, settings.database_of("allocation")), min_size=4, max_size=20
    ) as pool:
        runner = CommandRunner(pool, attempts=50)
        async with relay_for(settings):
            streams = [f"family:p:f{n}" for n in range(6)]

            async def writer(index: int) -> None:
                for step in range(8):
                    await append_slowly(
                        runner, streams[(index + step) % len(streams)], index * 100 + step, rng
                    )

            await asyncio.gather(*(writer(index) for index in range(16)))
            async with pool.acquire() as conn:
                stored = await conn.fetch("SELECT envelope FROM events ORDER BY position")
                await wait_for(lambda: _outbox_empty(pool), timeout=20)
    records = await read_topic(settings, TOPIC, expect=len(stored))
    assert len(stored) == 16 * 8
    published_ids = [r.value["id"] for r in records]
    assert sorted(published_ids) == sorted(row["envelope"]["id"] for row in stored)
    assert len(set(published_ids)) == len(published_ids)
    versions: dict[str, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        versions[record.envelope.stream_id].append(record.envelope.stream_version)
    for stream_versions in versions.values():
        assert stream_versions == list(range(1, len(stream_versions) + 1))


async def test_an_append_wakes_the_relay(settings: Settings) -> None:
    """An idle relay publishes a committed event at once, told by the append's notification,
    not at its next poll (an hour away here)."""
    await migrate(settings, ["allocation"])
    store = new_store()
    async with (
        open_pool(
            dsn(settings, settings.database_of("allocation")), min_size=1, max_size=2
        ) as pool,
        relay_for(settings, poll_seconds=3600),
    ):
        await asyncio.sleep(1)  # the relay has drained the (empty) outbox and waits
        async with pool.acquire() as conn, conn.transaction():
            stream = await store.load(conn, "family:p:woken")
            await store.append(conn, stream, [PendingEvent(Noted(number=1), "p", "woken")], CONTEXT)
        await wait_for(lambda: _outbox_empty(pool), timeout=20)
    [record] = await read_topic(settings, TOPIC, expect=1)
    assert record.value["data"]["number"] == 1


async def _outbox_empty(pool: asyncpg.Pool[asyncpg.Record]) -> bool:
    async with pool.acquire() as conn:
        return bool(await conn.fetchval("SELECT count(*) = 0 FROM outbox"))


@pytest.mark.faults
async def test_commands_are_accepted_while_kafka_is_down(
    infra: Infrastructure, settings: Settings
) -> None:
    """With the broker stopped, appends still commit; the relay publishes them when it is back."""
    await migrate(settings, ["allocation"])
    metrics = Metrics("test")
    store = new_store()
    async with open_pool(
        dsn(settings, settings.database_of("allocation")), min_size=1, max_size=4
    ) as pool:
        runner = CommandRunner(pool)

        async def append(number: int) -> None:
            async def handle(conn: Connection) -> CommandResult:
                stream = await store.load(conn, "family:p:outage")
                await store.append(
                    conn, stream, [PendingEvent(Noted(number=number), "p", "outage")], CONTEXT
                )
                return CommandResult(201, {})

            await runner.run(handle, None)

        relay = relay_for(settings, metrics)
        async with relay:
            for number in range(5):
                await append(number)
            await wait_for(lambda: _outbox_empty(pool))
            infra.kafka.stop()
            try:
                for number in range(5, 25):
                    await append(number)
                async with pool.acquire() as conn:
                    assert await conn.fetchval("SELECT count(*) FROM outbox") == 20
                assert relay.running
            finally:
                infra.kafka.start()
            await wait_for(lambda: _outbox_empty(pool), timeout=90)
    records = await read_topic(settings, TOPIC, expect=25)
    assert [r.value["data"]["number"] for r in records] == list(range(25))
    assert [r.envelope.stream_version for r in records] == list(range(1, 26))


@pytest.mark.faults
async def test_a_relay_killed_between_kafka_commit_and_outbox_delete(settings: Settings) -> None:
    """The batch is published again by the next relay. Kafka then holds each event twice:
    replay prints each once, and verify finds nothing broken and says how many repeat."""
    await migrate(settings, ["allocation", "spending", "approval"])
    store = new_store()
    async with open_pool(
        dsn(settings, settings.database_of("allocation")), min_size=1, max_size=2
    ) as pool:
        async with pool.acquire() as conn, conn.transaction():
            pending = [PendingEvent(Noted(number=n), "p", "twice") for n in range(5)]
            await store.append(conn, await store.load(conn, "family:p:twice"), pending, CONTEXT)
        transactional_id = f"{settings.topic_prefix}relay-test"
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.relay_worker",
            settings.topic(TOPIC),
            transactional_id,
            cwd=ROOT,
            env={**settings_env(settings), "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert await asyncio.wait_for(worker.wait(), 60) == -signal.SIGKILL
        assert len(await read_topic(settings, TOPIC, expect=5)) == 5
        assert await _outbox_count(pool) == 5  # published, and still waiting: the worst moment
        async with relay_for(settings):
            await wait_for(lambda: _outbox_empty(pool), timeout=30)
    records = await read_topic(settings, TOPIC, expect=10)
    assert len(records) == 10
    assert len({record.value["id"] for record in records}) == 5
    code, output = await run_ledger(settings, "audit", "replay", "--pilot", "p")
    assert code == 0
    assert [json.loads(line)["data"]["number"] for line in output.splitlines()] == list(range(5))
    code, output = await run_ledger(settings, "audit", "verify", "--pilot", "p")
    assert code == 0, output
    assert "the topics repeat 5 of them" in output


async def _outbox_count(pool: asyncpg.Pool[asyncpg.Record]) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM outbox"))


async def test_the_relay_reads_a_batch_without_walking_what_it_published(
    settings: Settings,
) -> None:
    """With most of a long backlog published, reading the next batch touches about a batch
    of events, not every event published before it. (The planner drove the join from the
    events' index, walking every published event for each batch: a 1,000,000-event backlog
    slowed from 6,600 to 750 events/s.)"""
    await migrate(settings, ["allocation"])
    store = new_store()
    async with open_pool(
        dsn(settings, settings.database_of("allocation")), min_size=1, max_size=2
    ) as pool:
        async with pool.acquire() as conn, conn.transaction():
            for stream in range(40):
                pending = [PendingEvent(Noted(number=n), "p", f"f{stream}") for n in range(100)]
                await store.append(conn, Stream(f"s:{stream}", ()), pending, CONTEXT)
        async with pool.acquire() as conn:
            # Statistics from when the backlog was whole (a drain outruns autovacuum), then
            # all but the last 400 of the 4,000 published, as the relay deletes them.
            await conn.execute("ANALYZE outbox; ANALYZE events")
            await conn.execute(
                "DELETE FROM outbox WHERE position < (SELECT max(position) - 399 FROM outbox)"
            )
            plan = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {BATCH}", 100)
    touched = _rows_read(plan[0]["Plan"], "events")  # the pool decodes JSON
    assert touched <= 100, f"the batch read {touched} events to find 100"


def _rows_read(node: dict[str, object], relation: str) -> int:
    """Rows the plan's scans of ``relation`` returned, over all their loops."""
    rows = 0
    if node.get("Relation Name") == relation:
        rows += int(node["Actual Rows"]) * int(node["Actual Loops"])  # type: ignore[call-overload]
    for child in node.get("Plans", []):  # type: ignore[attr-defined]
        rows += _rows_read(child, relation)
    return rows


async def test_relay_lag_grows_while_kafka_cannot_be_reached_and_the_relay_says_it_stalled(
    settings: Settings,
) -> None:
    """With the broker away, ledger_relay_lag_seconds stayed at the figure set before the
    publishing transaction that then hung (0.0049 s through a 2.5-minute outage): it is now
    the age of the oldest unpublished event, measured apart from publishing, and the relay's
    readiness check fails once that passes the stall threshold."""
    await migrate(settings, ["allocation"])
    away = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    metrics = Metrics("test")
    relay = relay_for(away, metrics, stall_seconds=2.0)
    async with open_pool(
        dsn(settings, settings.database_of("allocation")), min_size=1, max_size=2
    ) as pool:
        await append_slowly(CommandRunner(pool), "family:p:f1", 1, random.Random(1))
        async with relay:

            def lag() -> float:
                value = metrics.registry.get_sample_value("ledger_relay_lag_seconds")
                return value or 0.0

            await wait_for(lambda: lag() >= 2.5, timeout=20)
            assert not relay.healthy
        # Nothing was lost: the event still waits in the outbox for a broker.
        async with pool.acquire() as conn:
            assert await relay.pending(conn) == 1


async def test_a_batch_the_broker_never_answers_is_given_up_and_sent_again(
    infra: Infrastructure, own_kafka: Kafka
) -> None:
    """With three brokers and one stalled, a relay's Kafka commit once never returned, and
    its service published nothing more (``make faults``, a follower stalled: 23 commands
    acknowledged and never seen by reporting). A batch not on Kafka within the publish
    timeout is now given up while the broker is still stalled -- before the producer's own
    request timeout (15 s) would say anything -- and sent again once it answers."""
    settings = infra.settings(
        kafka_bootstrap=own_kafka.bootstrap, kafka_password=own_kafka.password
    )
    await ensure_topics(settings, ledger_topics())
    await migrate(settings, ["allocation"])
    # Readiness here says only whether the relay still trusts Kafka: no stall threshold.
    relay = relay_for(settings, stall_seconds=600.0, publish_timeout_seconds=2.0)
    pid = own_kafka.pid()
    assert pid is not None
    rng = random.Random(3)
    async with open_pool(
        dsn(settings, settings.database_of("allocation")), min_size=1, max_size=2
    ) as pool:
        runner = CommandRunner(pool)
        async with relay:
            await append_slowly(runner, "family:p:f1", 1, rng)
            await wait_for(lambda: _outbox_empty(pool), timeout=30)
            os.kill(pid, signal.SIGSTOP)  # answers nothing, closes nothing
            try:
                await append_slowly(runner, "family:p:f1", 2, rng)
                await wait_for(lambda: not relay.healthy, timeout=8)
            finally:
                os.kill(pid, signal.SIGCONT)
            await wait_for(lambda: _outbox_empty(pool), timeout=90)
    records = await read_topic(settings, TOPIC, expect=2)
    assert sorted({r.value["data"]["number"] for r in records}) == [1, 2]
