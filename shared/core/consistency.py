"""Reading your writes across services: wait, boundedly, for a view to catch up.

A service's views of other services' facts follow their topics by milliseconds. Where a
caller has seen a newer fact than a view holds (it passes the version it saw), the service
waits for the view rather than answering from the past; past the bound it says so (503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from shared.core.commands import together_connection
from shared.core.db import Connection
from shared.core.errors import LedgerError

__all__ = ["NotYetConsistentError", "wait_for_view"]


class NotYetConsistentError(LedgerError):
    """A view has not caught up with what the caller has seen; retry shortly."""

    status = 503
    code = "not_yet_consistent"
    title = "Not yet consistent"
    retry_after = 1  # seconds: views follow their topics by milliseconds when all is well


async def wait_for_view(
    pool: asyncpg.Pool[asyncpg.Record],
    ready: Callable[[Connection], Awaitable[bool]],
    *,
    seconds: float,
    interval: float = 0.02,
) -> bool:
    """Poll ``ready`` until it holds or ``seconds`` pass; whether it held. In a batch's
    transaction it is asked once, on that transaction's connection, and never waited for
    (:func:`~shared.core.commands.together_connection`)."""
    held = together_connection()
    if held is not None:
        return await ready(held)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        async with pool.acquire() as conn:
            if await ready(conn):
                return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(interval)
