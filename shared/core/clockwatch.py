"""How far a service's clock is from its database's: ``ledger_clock_offset_seconds``.

A service stamps what it records with its own clock (``recorded_at``, a decision's time), and
a figure made of two services' stamps is only as true as their clocks agree: with approval
five minutes slow, decisions seemed to come before their requests. Every service measures
its clock against PostgreSQL's (one clock for the whole ledger) every half minute, the
round trip halved, so that an alert fires when any drifts past a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import asyncpg
import structlog

from shared.core.background import BackgroundTask
from shared.core.db import Connection, is_transient
from shared.core.metrics import Metrics

__all__ = ["ClockWatch", "offset_seconds"]

_EVERY_SECONDS = 30.0


async def offset_seconds(conn: Connection, clock: Callable[[], datetime]) -> float:
    """This clock less the database's, the round trip taken off (half before, half after)."""
    started = time.monotonic()
    before = clock()
    database: datetime = await conn.fetchval("SELECT clock_timestamp()")
    half = (time.monotonic() - started) / 2
    return (before - database).total_seconds() + half


class ClockWatch(BackgroundTask):
    """Measures the offset every half minute into ``ledger_clock_offset_seconds``."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        clock: Callable[[], datetime],
        metrics: Metrics,
        every: float = _EVERY_SECONDS,
    ) -> None:
        super().__init__("clock-watch")
        self._pool = pool
        self._clock = clock
        self._metrics = metrics
        self._every = every
        self._log = structlog.get_logger().bind(component="clock")

    async def _run(self) -> None:
        while not self._stopping:
            try:
                async with self._pool.acquire() as conn:
                    offset = await offset_seconds(conn, self._clock)
            except Exception as error:
                if not is_transient(error):
                    raise
            else:
                self._metrics.clock_offset_seconds.set(offset)
                if abs(offset) > 1:
                    self._log.warning("clock_off_the_databases", offset_seconds=round(offset, 3))
            await self._pause(self._every)
