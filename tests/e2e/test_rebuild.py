"""``ledger projections rebuild``: from the topics, while reporting answers, equal to live."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from services.reporting.projections import TABLES
from shared.core.db import dsn
from shared.core.schema import apply_migrations, migrations_of
from shared.core.settings import Settings
from shared.web.registry import core_migrations
from shared.web.service import CONSUMERS
from tests.e2e.system import System, running_system
from tests.support import connect_service_db, quiet, reporting_caught_up, run_ledger, wait_for

FAMILIES = [f"fam-{n}" for n in range(6)]


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token, reporting=True) as system:
        await system.configure()
        yield system


async def digests(settings: Settings) -> dict[str, str]:
    """Every projection table's rows, hashed in an order-independent way."""
    async with connect_service_db(settings, "reporting") as conn:
        return {
            table: await conn.fetchval(
                f"SELECT count(*) || ':' || md5(coalesce(string_agg(md5(t::text), '' "  # noqa: S608
                f"ORDER BY md5(t::text)), '')) FROM {table} t"
            )
            for table in TABLES
        }


def verdicts(output: str) -> dict[str, str]:
    """Each table's verdict as the rebuild printed it."""
    found = re.findall(r"^(\w+): \d+ rows live, \d+ rebuilt: (\w+)", output, re.MULTILINE)
    return dict(found)


async def test_rebuild_under_traffic_switches_to_projections_equal_to_live(
    system: System, settings: Settings
) -> None:
    """A drifted row makes the rebuild refuse to switch (live rows untouched, exit 1); with
    --accept-differences it is repaired, the rest compare equal, nothing is lost."""
    assert system.reporting is not None
    for family in FAMILIES:
        version = await system.enrol(family, allocate=100_000)
        await system.request(family, 2_500, version=version)
    await wait_for(lambda: reporting_caught_up(settings), timeout=30)
    async with connect_service_db(settings, "reporting") as conn:
        # A projection that drifted from the facts: the rebuild must put it right.
        await conn.execute(
            "UPDATE balances SET spent_pence = spent_pence + 7 WHERE family_id = 'fam-0'"
        )

    statuses: list[int] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        """Requests keep arriving and reporting keeps being asked while the rebuild runs."""
        count = 0
        while not stop.is_set():
            family = FAMILIES[count % len(FAMILIES)]
            await system.request(family, 100)
            assert system.reporting is not None
            response = await system.reporting.get(
                f"/pilots/wigan/families/{family}/balance", headers=system.admin()
            )
            statuses.append(response.status)
            count += 1

    code, output = await run_ledger(settings, "projections", "rebuild")
    assert code == 1, output
    assert "refused: balances differ from the live projections" in output
    async with connect_service_db(settings, "reporting") as conn:
        drifted = await conn.fetchval("SELECT spent_pence FROM balances WHERE family_id = 'fam-0'")
    assert drifted == 7

    moving = asyncio.create_task(traffic())
    try:
        code, output = await run_ledger(settings, "projections", "rebuild", "--accept-differences")
    finally:
        stop.set()
        await moving
    assert code == 0, output
    assert "switched" in output
    assert verdicts(output) == {
        "history": "equal",
        "family_view": "equal",
        "pilot_view": "equal",
        "balances": "different",
    }, output
    assert statuses
    assert set(statuses) == {200}

    # Quiet, not merely caught up: a request of the traffic may still be decided.
    await wait_for(lambda: quiet(settings), timeout=30)
    async with connect_service_db(settings, "reporting") as conn:
        spent = await conn.fetchval("SELECT spent_pence FROM balances WHERE family_id = 'fam-0'")
    assert spent == 0

    # From scratch again, with nothing moving: the live consumer carried on from the switch
    # without losing or repeating an event, so a second rebuild finds the same rows.
    before = await digests(settings)
    code, output = await run_ledger(settings, "projections", "rebuild")
    assert code == 0, output
    assert verdicts(output) == dict.fromkeys(TABLES, "equal"), output
    assert await digests(settings) == before


async def test_rebuild_ahead_of_a_stopped_consumer_hands_over_its_offsets(
    system: System, settings: Settings
) -> None:
    """The live consumer resumes from the rebuilt offsets, not its own older ones."""
    assert system.reporting is not None
    for family in FAMILIES[:3]:
        await system.enrol(family, allocate=50_000)
    await wait_for(lambda: reporting_caught_up(settings), timeout=30)
    live = system.reporting.app[CONSUMERS]["reporting.projections"]
    await live.stop()
    for family in FAMILIES[:3]:
        request_id = (await system.request(family, 1_000))["request_id"]
        await system.settled(request_id, "approved")

    code, output = await run_ledger(settings, "projections", "rebuild")
    assert code == 0, output
    assert "not compared: the live consumer was behind" in output
    await live.start()
    await wait_for(lambda: reporting_caught_up(settings), timeout=30)
    async with connect_service_db(settings, "reporting") as conn:
        held = await conn.fetch("SELECT held_pence FROM balances")
    assert [row["held_pence"] for row in held] == [1_000] * 3

    before = await digests(settings)
    code, output = await run_ledger(settings, "projections", "rebuild")
    assert verdicts(output) == dict.fromkeys(TABLES, "equal"), output
    assert await digests(settings) == before


async def test_a_rebuild_run_as_a_superuser_leaves_tables_the_service_can_read(
    settings: Settings,
) -> None:
    """An operator runs the rebuild as PostgreSQL's superuser (compose's tools service
    does), while reporting runs as the role that owns its database. The tables switched in
    belonged to the superuser, and every read of reporting's then failed with `permission
    denied for table family_view` (found by the first real compose run)."""
    owner = f"{settings.database_prefix}reporting_owner"
    database = settings.database_of("reporting")
    admin = await asyncpg.connect(dsn(settings, "postgres"))
    try:
        await admin.execute(f'CREATE ROLE "{owner}"')
        await admin.execute(f'CREATE DATABASE "{database}" OWNER "{owner}"')
    finally:
        await admin.close()
    async with connect_service_db(settings, "reporting") as conn:
        await conn.execute(f'SET ROLE "{owner}"')  # as the service migrates it
        await apply_migrations(conn, core_migrations() + migrations_of("services.reporting"))

    code, output = await run_ledger(settings, "projections", "rebuild")
    assert code == 0, output
    assert "switched" in output

    async with connect_service_db(settings, "reporting") as conn:
        await conn.execute(f'SET ROLE "{owner}"')  # as the service reads it
        for table in TABLES:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0  # noqa: S608
