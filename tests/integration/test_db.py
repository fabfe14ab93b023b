"""The pool every service uses: no acquire waits for ever."""

from __future__ import annotations

import asyncio

from shared.core.db import dsn, is_transient, open_pool
from shared.core.settings import Settings
from shared.web.registry import migrate


async def test_an_acquire_from_a_used_up_pool_gives_up(settings: Settings) -> None:
    """With every connection held, the next acquire fails after its timeout with an error
    the services treat as transient (503 to a caller, a retry to a consumer); it used to
    wait for ever, which is how ten batches waiting on views stopped spending for good."""
    await migrate(settings, ["allocation"])
    database = dsn(settings, settings.database_of("allocation"))
    async with open_pool(database, min_size=1, max_size=1, acquire_timeout=0.3) as pool:
        async with pool.acquire():
            second = asyncio.ensure_future(pool.acquire().__aenter__())
            await asyncio.wait({second}, timeout=10)  # a guard, not a measure
            assert second.done(), "the acquire is still waiting"
            error = second.exception()
        assert isinstance(error, TimeoutError)
        assert is_transient(error)
        async with pool.acquire() as conn:  # given back, it is there again
            assert await conn.fetchval("SELECT 1") == 1
