"""Approval's consumers lock what a batch may wake in one order (real PostgreSQL)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import asyncpg

from services.approval.handlers import lock_in_order
from shared.core.db import dsn
from shared.core.settings import Settings

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
