"""A database outage is "unavailable, retry" to a client, not a bug.

The allocation database stops taking connections and its open ones are cut, as in a
restart or a failover; and PostgreSQL itself is killed under load and restarted. Requests
answer 503 ``unavailable`` with Retry-After (a client that retries only on 503 keeps going),
and once the database is back the same request with the same Idempotency-Key is recorded once.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from deploy.stack import LOCAL, Postgres, free_port, unique_name
from shared.core.kafka import ensure_topics
from shared.core.settings import Settings
from shared.web.registry import ledger_topics
from tests.conftest import Infrastructure
from tests.e2e.system import System, running_system
from tests.support import connect_service_db, read_topic, wait_for

pytestmark = pytest.mark.faults


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token) as system:
        await system.configure()
        await system.enrol("fam-1")
        yield system


async def _allow_connections(settings: Settings, allowed: bool) -> None:
    database = settings.database_of("allocation")
    async with connect_service_db(settings, "spending") as conn:  # from another database
        await conn.execute(
            f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}'
        )
        if not allowed:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )


async def test_a_database_outage_answers_503_and_a_retry_converges(
    system: System, settings: Settings
) -> None:
    """While the database is away: 503 unavailable with Retry-After (500 before) and
    /readyz red; after, /readyz green, the same request and key is recorded once, and the
    OpenAPI document says so."""
    path = "/pilots/wigan/families/fam-1/allocations"
    headers = {**system.admin(), "Idempotency-Key": "outage-1"}
    await _allow_connections(settings, allowed=False)
    try:
        during = await system.allocation.post(path, json={"amount_pence": 700}, headers=headers)
        assert during.status == 503, await during.text()
        problem = await during.json()
        assert problem["code"] == "unavailable"
        assert int(during.headers["Retry-After"]) >= 1

        await wait_for(lambda: _database_red(system), timeout=10, interval=0.2)
    finally:
        await _allow_connections(settings, allowed=True)

    async def green() -> bool:
        return (await system.allocation.get("/readyz")).status == 200

    await wait_for(green, timeout=30, interval=0.5)

    async def recorded() -> bool:
        after = await system.allocation.post(path, json={"amount_pence": 700}, headers=headers)
        return after.status == 201

    await wait_for(recorded, timeout=30, interval=0.5)
    again = await system.allocation.post(path, json={"amount_pence": 700}, headers=headers)
    assert again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    family = await system.allocation.get("/pilots/wigan/families/fam-1", headers=system.admin())
    assert [p["allocated_pence"] for p in (await family.json())["periods"]] == [700]
    document = await (await system.allocation.get("/openapi.json")).json()
    answers = document["paths"]["/pilots/{pilot_id}/families/{family_id}/allocations"]["post"]
    assert "Retry-After" in answers["responses"]["503"]["headers"]


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A PostgreSQL of this test's own, durable as in production: killing it harms no other
    test of the session."""
    postgres = Postgres(LOCAL / f"test-{unique_name()}" / "postgres", free_port(), durable=True)
    postgres.start()
    try:
        yield postgres
    finally:
        postgres.stop(mode="immediate")
        shutil.rmtree(postgres.home.parent, ignore_errors=True)


@dataclass
class Load:
    """Clients that enrol families, each request retried with its key until it is recorded."""

    system: System
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: set[str] = field(default_factory=set)
    recorded: set[str] = field(default_factory=set)

    async def enrol(self, family: str) -> None:
        headers = {**self.system.admin(), "Idempotency-Key": f"kill-{family}"}
        body = {"family_id": family, "team": "t-1", "worker": "sw-1", "enrolled_on": "2026-01-05"}
        while True:
            response = await self.system.allocation.post(
                "/pilots/wigan/families", json=body, headers=headers
            )
            self.statuses[response.status] += 1
            if response.status == 201:
                self.recorded.add(family)
                return
            assert response.status == 503, await response.text()  # never a 500
            self.retry_after.add(response.headers["Retry-After"])
            await asyncio.sleep(0.2)  # a client that retries on 503, sooner than it is told

    async def run(self, client: int, families: int) -> None:
        for number in range(families):
            await self.enrol(f"fam-{client}-{number}")


async def test_postgresql_killed_under_load_answers_503_then_every_retry_converges(
    own_postgres: Postgres, infra: Infrastructure, token: Callable[..., str]
) -> None:
    """PostgreSQL is killed (an immediate stop: no checkpoint, crash recovery on restart)
    while eight clients enrol families: they get 503 with Retry-After, never a 500; /readyz is
    red while it is down and green once it is back; every family is recorded once, and
    published once."""
    settings = infra.settings(pg_port=own_postgres.port)
    await ensure_topics(settings, ledger_topics())
    async with running_system(settings, token) as system:
        await system.configure()
        load = Load(system)
        clients = [asyncio.create_task(load.run(client, 15)) for client in range(8)]
        await wait_for(lambda: len(load.recorded) >= 10, timeout=30)
        await asyncio.to_thread(own_postgres.stop, "immediate")
        try:
            await wait_for(lambda: load.statuses[503] >= 8, timeout=30)

            await wait_for(lambda: _database_red(system), timeout=10, interval=0.2)
            assert not any(client.done() for client in clients)  # still retrying
        finally:
            await asyncio.to_thread(own_postgres.start)

        async def green() -> bool:
            return (await system.allocation.get("/readyz")).status == 200

        await wait_for(green, timeout=60, interval=0.5)
        await asyncio.wait_for(asyncio.gather(*clients), timeout=120)

        families = {f"fam-{client}-{number}" for client in range(8) for number in range(15)}
        assert load.recorded == families
        assert set(load.statuses) == {201, 503}
        assert load.retry_after == {"2"}
        async with connect_service_db(settings, "allocation") as conn:
            enrolled = await conn.fetch(
                "SELECT family_id FROM events WHERE type = 'family.enrolled'"
            )
        assert sorted(row["family_id"] for row in enrolled) == sorted(families)  # once each

        async def published() -> bool:
            records = await read_topic(settings, "ledger.allocation")
            ids = {r.envelope.family_id for r in records if r.envelope.type == "family.enrolled"}
            return ids == families

        await wait_for(published, timeout=60, interval=1)


async def _database_red(system: System) -> bool:
    """/readyz says the database is away (within its check's interval, 1 s)."""
    ready = await system.allocation.get("/readyz")
    return ready.status == 503 and (await ready.json())["checks"]["database"] is False
