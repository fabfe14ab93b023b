"""A database outage is "unavailable, retry" to a client, not a bug.

The allocation database stops taking connections and its open ones are cut, as in a
restart or a failover: requests answer 503 ``unavailable`` with Retry-After (a client that
retries only on 503 keeps going), and once the database is back the same request with the
same Idempotency-Key is recorded once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from shared.core.settings import Settings
from tests.e2e.system import System, running_system
from tests.support import connect_service_db, wait_for

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
        ready = await system.allocation.get("/readyz")
        assert ready.status == 503, await ready.text()  # red while the database is away
        assert (await ready.json())["checks"]["database"] is False
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
