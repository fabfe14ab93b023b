"""Approval's consumers lock what a batch may wake in one order (real PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import date
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import asyncpg

from services.approval.handlers import lock_in_order
from shared.contracts import balances
from shared.core.db import Connection, dsn
from shared.core.settings import Settings
from tests.integration.fixtures import migrated_pool

if TYPE_CHECKING:
    from shared.core.events import Envelope


def event(family: str | None) -> Envelope:
    return cast("Envelope", SimpleNamespace(pilot_id="wigan", family_id=family))


_HELD = """
SELECT mode, granted FROM pg_locks WHERE locktype = 'advisory' AND pid = $1 ORDER BY mode
"""


async def test_a_batch_waits_before_it_holds_any_family_so_two_batches_cannot_deadlock(
    settings: Settings,
) -> None:
    """approval.allocation and approval.spending once deadlocked: each held a family the
    other's batch named next. Taken up front in one order, the second batch waits for the
    first family it needs holding none, whatever order its events came in."""
    first = await asyncpg.connect(dsn(settings, "postgres"))
    second = await asyncpg.connect(dsn(settings, "postgres"))
    try:
        async with first.transaction():
            await lock_in_order(first, [event("fam-y"), event("fam-x")])
            waiting = asyncio.create_task(_locked(second, [event("fam-x"), event("fam-y")]))
            await asyncio.sleep(0.5)
            assert not waiting.done()
            held = await first.fetch(_HELD, second.get_server_pid())
            # The pilot, shared; and one family waited for, none held.
            assert [row["mode"] for row in held if row["granted"]] == ["ShareLock"]
            assert [row["mode"] for row in held if not row["granted"]] == ["ExclusiveLock"]
        await asyncio.wait_for(waiting, timeout=5)
    finally:
        await first.close()
        await second.close()


async def _locked(conn: asyncpg.Connection, events: list[Envelope]) -> None:
    async with conn.transaction():
        await lock_in_order(conn, events)


async def test_a_period_made_by_another_decision_meanwhile_is_locked_as_it_stands(
    settings: Settings,
) -> None:
    """Two decisions lock a period's balance that neither found: the one whose insert
    waited for the other's finds nothing in its own statement (its snapshot is older than
    the row) and reads the row again once the other has committed, with its money."""
    start, end = date(2026, 1, 5), date(2027, 1, 4)
    async with (
        migrated_pool(settings, "approval", max_size=2) as pool,
        pool.acquire() as first,
        pool.acquire() as second,
    ):
        async with first.transaction():
            await balances.lock(first, "wigan", "fam-new", start, end)
            await first.execute(
                "UPDATE balances SET allocated_pence = 500 WHERE family_id = 'fam-new'"
            )
            later = asyncio.create_task(_locked_balance(second, start, end))
            await asyncio.sleep(0.5)
            assert not later.done()  # its insert waits for the first's row
        balance = await asyncio.wait_for(later, timeout=5)
    assert balance.available_pence == 500


async def _locked_balance(conn: Connection, start: date, end: date) -> balances.Balance:
    async with conn.transaction():
        return await balances.lock(conn, "wigan", "fam-new", start, end)
