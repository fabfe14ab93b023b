"""Measure the write path: HTTP command latency and throughput, commit-to-Kafka latency,
the outbox relay's catch-up rate, and the rate of rebuilding reporting's projections from
the topics. Starts its own PostgreSQL and Kafka like the tests.

    python -m bench                        # the goals: floors, peer, P1 to P6 (make bench)
    python -m bench --scenario write-path [--commands 2000] [--concurrency 16] [--backlog 20000]
    python -m bench --scenario pilot-size   # a family command at 100 and 10,000 families
    python -m bench --scenario batches      # P5 alone, with audit verify
    python -m bench --scenario audit [--backlog 1000000] [--through-batches]  # P3, P4 at size
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr
from tqdm import tqdm

from bench.batches import batch_ingest, sync_ledger
from bench.floors import asyncpg_appends
from bench.goals import measure_goals
from deploy.stack import (
    KAFKA_SUPERUSER,
    LOCAL,
    Kafka,
    Postgres,
    ensure_kafka_jars,
    free_port,
    unique_name,
)
from services.allocation.app import create_app
from services.reporting.rebuild import rebuild
from shared.cli.main import replay, verify
from shared.cli.progress import ProgressBar
from shared.core.custody import new_kek
from shared.core.db import dsn, open_pool
from shared.core.events import Actor, DomainEvent
from shared.core.eventstore import CommandContext, EventStore, PendingEvent, Stream
from shared.core.kafka import connection, ensure_topics
from shared.core.logging import configure_logging
from shared.core.metrics import Metrics
from shared.core.outbox import OutboxRelay
from shared.core.settings import Settings
from shared.web.auth import mint_token
from shared.web.registry import ledger_topics, migrate
from shared.web.service import source_of

SECRET = "bench-secret-long-enough-for-any-hmac-algorithm-0123456789abcdefghij"  # noqa: S105


class Filler(DomainEvent):
    """A backlog event for the relay benchmark; ``padding`` makes it as large as a real one."""

    event_type = "bench.filler"
    number: int
    padding: str = ""


# A spend request's envelope is about 1,100 bytes; this brings a filler's to about that.
REAL_SIZE_PADDING = "x" * 560


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def http_commands(  # noqa: PLR0915 - one scenario, read top to bottom
    settings: Settings, commands: int, concurrency: int, interval: float = 0.0
) -> dict[str, Any]:
    """Allocations through HTTP at a given concurrency; a consumer times each event's arrival."""
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    port = settings.port_of("allocation", 8081)
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    base = f"http://127.0.0.1:{port}"
    token = mint_token(
        SECRET, sub="bench", role="admin", pilot="bench", team=None, now=datetime.now(UTC)
    )
    headers = {"Authorization": f"Bearer {token}"}
    families = 200
    consumer = AIOKafkaConsumer(
        settings.topic("ledger.allocation"),
        **connection(settings.kafka),
        auto_offset_reset="latest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    arrivals: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession(base, headers=headers) as http:
            await http.put(
                "/pilots/bench",
                json={
                    "name": "Bench",
                    "period_months": 12,
                    "family_cap_pence": 10**10,
                    "categories": ["other"],
                },
            )
            for number in range(families):
                await http.post(
                    "/pilots/bench/families",
                    json={
                        "family_id": f"f{number}",
                        "team": "t",
                        "worker": "w",
                        "enrolled_on": "2026-01-01",
                    },
                )
            await consumer.start()
            await asyncio.sleep(1.0)  # let the consumer's position settle at the end

            async def consume() -> None:
                while True:
                    batch = await consumer.getmany(timeout_ms=100)
                    now = time.perf_counter()
                    for records in batch.values():
                        for record in records:
                            arrivals[json.loads(record.value)["id"]] = now

            reader = asyncio.create_task(consume())
            latencies: list[float] = []
            committed: dict[str, float] = {}
            queue: asyncio.Queue[int] = asyncio.Queue()
            for number in range(commands):
                queue.put_nowait(number)
            progress = tqdm(total=commands, desc="allocations over HTTP", unit="cmd")

            async def worker() -> None:
                while not queue.empty():
                    number = queue.get_nowait()
                    started = time.perf_counter()
                    async with http.post(
                        f"/pilots/bench/families/f{number % families}/allocations",
                        json={"amount_pence": 1 + number % 5000},
                    ) as response:
                        body = await response.json()
                        assert response.status == 201, body
                    done = time.perf_counter()
                    latencies.append(done - started)
                    committed[body["event_id"]] = done
                    progress.update()
                    if interval:
                        await asyncio.sleep(interval)

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            progress.close()
            await _settle(lambda: all(i in arrivals for i in committed), seconds=30)
            reader.cancel()
            delays = [arrivals[i] - t for i, t in committed.items() if i in arrivals]
    finally:
        await consumer.stop()
        await runner.cleanup()
    return {
        "commands": commands,
        "concurrency": concurrency,
        "pause_between_commands_ms": round(interval * 1000),
        "throughput_per_s": round(commands / elapsed, 1),
        "latency_ms_p50": round(percentile(latencies, 0.5) * 1000, 1),
        "latency_ms_p99": round(percentile(latencies, 0.99) * 1000, 1),
        "response_to_consumer_ms_p50": round(percentile(delays, 0.5) * 1000, 1),
        "response_to_consumer_ms_p99": round(percentile(delays, 0.99) * 1000, 1),
        "events_seen_by_consumer": len(delays),
    }


async def command_by_pilot_size(settings: Settings, sizes: tuple[int, ...]) -> dict[str, Any]:
    """One family command's latency in pilots of different sizes (randomised, two strata).

    Families are enrolled 16 at a time; then 300 allocations, one at a time, to families
    spread over the pilot. A command loads the pilot's stream and the family's: its cost
    must not grow with the number of families.
    """
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    port = settings.port_of("allocation", 8081)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    results: dict[str, Any] = {}
    try:
        for size in sizes:
            pilot = f"size-{size}"
            token = mint_token(
                SECRET, sub="bench", role="admin", pilot=pilot, team=None, now=datetime.now(UTC)
            )
            headers = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as http:
                await http.put(
                    f"/pilots/{pilot}",
                    json={
                        "name": pilot,
                        "period_months": 12,
                        "family_cap_pence": 10**10,
                        "categories": ["other"],
                        "allocation": {
                            "mode": "randomised",
                            "treatment_ratio": 0.5,
                            "strata": ["a", "b"],
                        },
                    },
                )
                enrolled = await _enrol(http, pilot, size)
                treated = [family for family, arm in enrolled.items() if arm == "treatment"]
                latencies = []
                for number in range(300):
                    family = treated[number * len(treated) // 300]
                    started = time.perf_counter()
                    response = await http.post(
                        f"/pilots/{pilot}/families/{family}/allocations", json={"amount_pence": 1}
                    )
                    latencies.append((time.perf_counter() - started) * 1000)
                    assert response.status == 201, await response.text()
            results[f"families_{size}"] = {
                "allocate_p50_ms": round(percentile(latencies, 0.5), 2),
                "allocate_p99_ms": round(percentile(latencies, 0.99), 2),
            }
    finally:
        await runner.cleanup()
    return results


async def _enrol(http: aiohttp.ClientSession, pilot: str, size: int) -> dict[str, str]:
    """Enrol ``size`` families, 16 at a time; their arms."""
    arms: dict[str, str] = {}
    numbers = iter(range(size))

    async def worker() -> None:
        for number in numbers:
            family = f"f{number}"
            async with http.post(
                f"/pilots/{pilot}/families",
                json={
                    "family_id": family,
                    "team": "t",
                    "worker": "w",
                    "enrolled_on": "2026-01-01",
                    "stratum": ("a", "b")[number % 2],
                },
            ) as response:
                assert response.status == 201, await response.text()
                arms[family] = (await response.json())["arm"]

    with tqdm(total=size, desc=f"enrolling {size}", disable=None) as bar:

        async def tick() -> None:
            while len(arms) < size:
                bar.n = len(arms)
                bar.refresh()
                await asyncio.sleep(0.5)

        ticking = asyncio.create_task(tick())
        await asyncio.gather(*(worker() for _ in range(16)))
        await ticking
    return arms


async def _settle(done: Callable[[], bool], seconds: float) -> None:
    """Wait until ``done()`` or the timeout; a benchmark reports what arrived by then."""
    deadline = time.perf_counter() + seconds
    while not done() and time.perf_counter() < deadline:  # noqa: ASYNC110 - polls another task's dict
        await asyncio.sleep(0.05)


async def relay_backlog(settings: Settings, backlog: int, padding: str = "") -> dict[str, Any]:
    """Commit a backlog while no relay runs, then time one relay publishing all of it."""
    # The source of the topic it is published on: consumers reject events of any other.
    store = EventStore(source_of("allocation"), lambda: datetime.now(UTC), uuid.uuid4)
    context = CommandContext(actor=Actor(sub="bench", role="admin"), correlation_id="bench")
    database = dsn(settings, settings.database_of("allocation"))
    async with open_pool(database, min_size=1, max_size=4) as pool:
        per_stream = 50
        for start in tqdm(range(0, backlog, per_stream), desc="committing backlog", unit="stream"):
            async with pool.acquire() as conn, conn.transaction():
                stream = Stream(f"bench:{start}", ())
                pending = [
                    PendingEvent(Filler(number=n, padding=padding), "bench", f"s{start}")
                    for n in range(per_stream)
                ]
                await store.append(conn, stream, pending, context)
        relay = OutboxRelay(
            dsn=database,
            kafka=settings.kafka,
            topic=settings.topic("ledger.allocation"),
            transactional_id=f"{settings.topic_prefix}bench-relay",
            batch_size=settings.relay_batch_size,
            poll_seconds=0.2,
            metrics=Metrics("bench"),
            clock=lambda: datetime.now(UTC),
        )
        started = time.perf_counter()
        await relay.start()
        with tqdm(total=backlog, desc="relay publishing", unit="event") as progress:
            left = backlog
            while left:
                async with pool.acquire() as conn:
                    now_left = int(await conn.fetchval("SELECT count(*) FROM outbox"))
                progress.update(left - now_left)
                left = now_left
                # Not more often: a count of a large outbox is a scan of it, and at 20 a
                # second it took a core from the relay being measured.
                await asyncio.sleep(1.0)
        elapsed = time.perf_counter() - started
        await relay.stop()
    return {
        "backlog": backlog,
        "seconds": round(elapsed, 2),
        "events_per_s": round(backlog / elapsed),
    }


async def projections_rebuild(settings: Settings) -> dict[str, Any]:
    """Time ``ledger projections rebuild`` over everything on the settings' topics."""
    await migrate(settings, ["reporting"])
    with tqdm(desc="rebuilding projections", unit="offset", total=0) as bar:
        report = await rebuild(settings, ProgressBar(bar))
    return {
        "events": report.records,
        "seconds": round(report.seconds, 2),
        "events_per_s": round(report.records_per_second),
    }


async def audit_verify(settings: Settings) -> dict[str, Any]:
    """``ledger audit verify`` over the whole ledger: every store and every topic."""
    await asyncio.sleep(2)  # the relays publish what the last batch recorded
    started = time.perf_counter()
    found = await verify(settings, None)
    seconds = time.perf_counter() - started
    assert not found.problems, found.problems[:3]
    return {
        "events": found.events,
        "seconds": round(seconds, 2),
        "events_per_s": round(found.events / seconds),
    }


async def large_ledger(settings: Settings, events: int, *, synced: bool) -> dict[str, Any]:
    """P3 and P4 on a ledger of ``events`` events, then rebuilt, verified and replayed. The
    ledger is made through allocation's batch endpoint (``synced``: enrolments and
    allocations, as a case system's sync), or else committed through the event store (events
    of a real event's size) and published by the relay as one backlog."""
    if synced:
        made = {"batches": await sync_ledger(settings, events)}
    else:
        made = {"relay": await relay_backlog(settings, events, REAL_SIZE_PADDING)}
    await migrate(settings, ["spending", "approval", "reporting"])  # their stores: empty
    rebuilt = await projections_rebuild(settings)
    verified = await audit_verify(settings)
    started = time.perf_counter()
    replayed = len((await replay(settings, None, None, None)).events)
    seconds = time.perf_counter() - started
    return {
        **made,
        "p3_rebuild": rebuilt,
        "p4_verify": verified,
        "p4_replay": {
            "events": replayed,
            "seconds": round(seconds, 2),
            "events_per_s": round(replayed / seconds),
        },
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    home = LOCAL / f"bench-{unique_name()}"
    ensure_kafka_jars()
    # Statement statistics: how many statements a spend request costs each database (P1).
    counted = ("shared_preload_libraries=pg_stat_statements",)
    postgres = Postgres(home / "postgres", free_port(), durable=True, settings=counted)
    kafka = Kafka(
        home / "kafka", free_port(), free_port(), password=secrets.token_urlsafe(24), partitions=6
    )
    postgres.start()
    kafka.start()
    try:
        settings = Settings(
            pg_port=postgres.port,
            kafka_bootstrap=kafka.bootstrap,
            kafka_username=KAFKA_SUPERUSER,
            kafka_password=SecretStr(kafka.password),
            jwt_secret=SecretStr(SECRET),
            key_encryption_keys=SecretStr(new_kek("bench")),
            ports={"allocation": free_port()},
            log_format="json",
            log_level="WARNING",
            relay_poll_seconds=0.5,
        )
        await ensure_topics(settings, ledger_topics())
        await migrate(settings, ["allocation"])
        if args.scenario == "goals":
            floors = await asyncpg_appends(settings)
            kafka_pid = int(kafka.pid_file.read_text().split()[0])
            return await measure_goals(
                settings, postgres, kafka_pid, home / "logs", floors, args.families
            )
        if args.scenario == "pilot-size":
            return {"pilot_size": await command_by_pilot_size(settings, (100, 10_000))}
        if args.scenario == "audit":
            floors = await asyncpg_appends(settings)
            ledger = await large_ledger(settings, args.backlog, synced=args.through_batches)
            return {"asyncpg_floors_per_s": floors, **ledger}
        if args.scenario == "batches":
            batch_settings = settings.model_copy(
                update={"ports": {"allocation": free_port(), "spending": free_port()}}
            )
            await migrate(batch_settings, ["spending", "approval"])
            floors = await asyncpg_appends(settings)
            ingest = await batch_ingest(batch_settings, args.families)
            return {
                "asyncpg_floors_per_s": floors,
                "batch_ingest": ingest,
                "audit_verify": await audit_verify(batch_settings),
            }
        results = {
            "sustained": await http_commands(settings, args.commands, args.concurrency),
            "sparse": await http_commands(settings, args.sparse, 1, interval=0.05),
        }
        backlog_settings = settings.model_copy(
            update={"database_prefix": "backlog_", "topic_prefix": "backlog."}
        )
        await ensure_topics(backlog_settings, ledger_topics())
        await migrate(backlog_settings, ["allocation"])
        results["relay"] = await relay_backlog(backlog_settings, args.backlog)
        results["rebuild_sustained_events"] = await projections_rebuild(settings)
        await migrate(backlog_settings, ["reporting"])
        results["rebuild_backlog"] = await projections_rebuild(backlog_settings)
        return results
    finally:
        kafka.stop()
        postgres.stop()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backlog", type=int, default=20000)
    parser.add_argument("--sparse", type=int, default=200, help="commands 50 ms apart")
    parser.add_argument(
        "--scenario",
        choices=("goals", "write-path", "pilot-size", "batches", "audit"),
        default="goals",
        help="goals: every floor, the peer and P1 to P6 (make bench); pilot-size: a family "
        "command at 100 and at 10,000 families only",
    )
    parser.add_argument(
        "--families", type=int, default=3_000, help="goals, batches: families synced (P5)"
    )
    parser.add_argument(
        "--through-batches",
        action="store_true",
        help="audit: make the ledger through allocation's batch endpoint (enrolments and "
        "allocations), not as a relay backlog",
    )
    args = parser.parse_args()
    configure_logging("bench", "json", "WARNING")
    results = asyncio.run(run(args))
    for goal in results.get("goals", []):
        verdict = "PASS" if goal["passed"] else "FAIL"
        ratio = "" if goal["ratio"] is None else f" ({goal['ratio']:.3g}x)"
        print(
            f"{goal['name']} {verdict}: {goal['measured']}{ratio}; goal {goal['target']}",
            file=sys.stderr,
        )
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    results["date"] = datetime.now(UTC).date().isoformat()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
