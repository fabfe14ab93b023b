"""Helpers the integration and e2e tests share: serving an app, reading a topic."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer

from deploy.stack import Kafka, Postgres, free_port
from shared.core.db import dsn
from shared.core.events import Actor, DomainEvent, Envelope, canonical_json
from shared.core.eventstore import CommandContext, EventStore, PendingEvent, Stream
from shared.core.kafka import connection
from shared.core.settings import Settings
from shared.web.registry import migrate, services

__all__ = [
    "SERVICE_NAMES",
    "Record",
    "connect_service_db",
    "forged_record",
    "quiet",
    "read_topic",
    "reporting_caught_up",
    "run_ledger",
    "serve",
    "settings_env",
    "wait_for",
]

LEDGER = str(Path(sys.executable).parent / "ledger")
SERVICE_NAMES = tuple(definition.name for definition in services())
"""The installed services, as the registry finds them."""


@asynccontextmanager
async def serve(
    settings: Settings, service: str, create_app: Callable[[Settings], web.Application]
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The service's real app on a real port, its database migrated first."""
    await migrate(settings, [service])
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


@asynccontextmanager
async def connect_service_db(settings: Settings, service: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to a service's database, for looking behind the API."""
    conn = await asyncpg.connect(dsn(settings, settings.database_of(service)))
    try:
        yield conn
    finally:
        await conn.close()


@dataclass(frozen=True)
class Record:
    """A Kafka record as the tests look at it."""

    partition: int
    offset: int
    key: str
    value: dict[str, Any]  # as published: an envelope in its wire format
    headers: dict[str, str]

    @property
    def envelope(self) -> Envelope:
        """The value as the ledger reads it (field names, whatever its wire format)."""
        return Envelope.model_validate(self.value)


async def read_topic(
    settings: Settings, topic: str, *, expect: int | None = None, timeout: float = 15.0
) -> list[Record]:
    """Every committed record on a topic, from the start (waiting for ``expect`` of them)."""
    consumer = AIOKafkaConsumer(
        settings.topic(topic),
        **connection(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        group_id=None,
    )
    await consumer.start()
    records: list[Record] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet_since = loop.time()
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for items in batch.values():
                records.extend(_record(item) for item in items)
                quiet_since = loop.time()
            if expect is not None and len(records) >= expect:
                # Linger briefly: anything beyond the expected count is a finding too.
                if loop.time() - quiet_since > 0.5:
                    break
            elif expect is None and loop.time() - quiet_since > 1.5:
                break
    finally:
        await consumer.stop()
    return records


def _record(item: Any) -> Record:
    value = item.value or b""
    return Record(
        item.partition,
        item.offset,
        (item.key or b"").decode(),
        json.loads(value) if value[:1] == b"{" else {"raw": value.decode(errors="replace")},
        {key: header.decode(errors="replace") for key, header in item.headers},
    )


async def wait_for(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Await ``check()`` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a ``ledger`` process these settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LEDGER_")}
    return env | settings.as_environment()


async def run_ledger(settings: Settings, *args: str) -> tuple[int, str]:
    """The CLI as an auditor runs it, against this test's databases and topics (stdout)."""
    process = await asyncio.create_subprocess_exec(
        LEDGER,
        *args,
        env=settings_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def quiet(settings: Settings) -> bool:
    """Reporting holds every stored event, and no store takes a new one for half a second
    (a decision still to come after a request counts as movement)."""
    before = await stored_events(settings)
    await asyncio.sleep(0.5)
    return await stored_events(settings) == before and await reporting_caught_up(settings)


async def stored_events(settings: Settings) -> int:
    """How many events the three stores hold together."""
    stored = 0
    for service in ("allocation", "spending", "approval"):
        async with connect_service_db(settings, service) as conn:
            stored += await conn.fetchval("SELECT count(*) FROM events")
    return stored


async def reporting_caught_up(settings: Settings) -> bool:
    """Reporting's history holds every event the three stores hold."""
    stored = await stored_events(settings)
    async with connect_service_db(settings, "reporting") as conn:
        return bool(await conn.fetchval("SELECT count(*) FROM history") == stored)


def forged_record(
    source: str, event: DomainEvent, stream_id: str, pilot_id: str, family_id: str | None
) -> tuple[bytes, bytes]:
    """A Kafka record (key, value) as the store of ``source`` would seal ``event``: a true
    hash, version 1 of its stream. What a holder of a service's credentials could publish."""
    context = CommandContext(actor=Actor(sub="forger", role="admin"), correlation_id="forged")
    [envelope] = EventStore(source, lambda: datetime.now(UTC), uuid4).seal(
        Stream(stream_id, ()), [PendingEvent(event, pilot_id, family_id)], context
    )
    return envelope.partition_key(), canonical_json(envelope.to_json_dict())


@contextmanager
def own_broker(home: Path, heap: str) -> Iterator[Kafka]:
    """A single broker of a test's own in ``home``, on free ports with a fresh password:
    started; stopped at once (its data is thrown away) and ``home`` deleted on the way out."""
    broker = Kafka(
        home, free_port(), free_port(), password=secrets.token_urlsafe(24), heap=heap, partitions=3
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop(grace=0)
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def own_postgres(server: Postgres) -> Iterator[Postgres]:
    """``server`` started; stopped at once (its data is thrown away) and the folder that
    holds its home deleted on the way out."""
    try:
        server.start()
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(server.home.parent, ignore_errors=True)
