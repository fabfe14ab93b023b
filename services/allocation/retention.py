"""Retention on a schedule: a family's free text erased when its pilot's policy says.

A pilot whose configuration has a retention policy has each exited family's free text
erased ``free_text_months_after_exit`` months after its exit date, through the same command
as an administrator's erasure (basis ``retention_expired``), so that it is recorded as
``family.personal_data_erased`` in the family's history and spending and approval erase
theirs. A family is due when its latest exit is old enough and no erasure was recorded
after it; the erasure's idempotency key names the family and its exit, so a sweep that runs
twice (two replicas, or the task and ``ledger retention run``) erases once.

The allocation service sweeps every ``LEDGER_RETENTION_INTERVAL_SECONDS``; the clock is the
service's, so tests move time by giving it another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Protocol

import asyncpg
import structlog
from prometheus_client import Counter

from shared.contracts.periods import add_months
from shared.core.background import BackgroundTask
from shared.core.db import Connection
from shared.core.metrics import Metrics

__all__ = ["Due", "RetentionSweep", "Sweeper", "due", "sweep"]

_PILOTS = "SELECT DISTINCT pilot_id FROM events WHERE type = 'pilot.configured' ORDER BY 1"
_EXITED = """
SELECT DISTINCT ON (e.family_id) e.family_id, (e.envelope->'data'->>'exited_on')::date AS exited_on
FROM events e
WHERE e.pilot_id = $1 AND e.type = 'family.exited'
  AND NOT EXISTS (
    SELECT 1 FROM events x
    WHERE x.pilot_id = e.pilot_id AND x.family_id = e.family_id
      AND x.type = 'family.personal_data_erased' AND x.position > e.position
  )
ORDER BY e.family_id, e.position DESC
"""


@dataclass(frozen=True)
class Due:
    """A family whose free text the policy says to erase now."""

    pilot_id: str
    family_id: str
    exited_on: date
    due_on: date


async def due(conn: Connection, pilot_id: str, months: int, today: date) -> list[Due]:
    """The pilot's exited families not erased since, whose exit is ``months`` or more ago."""
    rows = await conn.fetch(_EXITED, pilot_id)
    found = [
        Due(pilot_id, row["family_id"], row["exited_on"], add_months(row["exited_on"], months))
        for row in rows
    ]
    return [item for item in found if item.due_on <= today]


class Sweeper(Protocol):
    """What a sweep needs of the allocation service: the pilots' policies and the erasure."""

    async def retention_months(self, conn: Connection, pilot_id: str) -> int | None:
        """The pilot's retention policy in force, in months after exit; None: none."""
        ...

    async def erase_expired(self, item: Due, today: date) -> None:
        """Erase the family's free text, basis ``retention_expired``."""
        ...


async def sweep(
    pool: asyncpg.Pool[asyncpg.Record],
    service: Sweeper,
    today: date,
    *,
    dry_run: bool = False,
) -> list[Due]:
    """Every family due for erasure in every pilot with a policy; erased unless ``dry_run``."""
    found: list[Due] = []
    async with pool.acquire() as conn:
        for row in await conn.fetch(_PILOTS):
            months = await service.retention_months(conn, row["pilot_id"])
            if months is not None:
                found += await due(conn, row["pilot_id"], months, today)
    if not dry_run:
        for item in found:
            await service.erase_expired(item, today)
    return found


class RetentionSweep(BackgroundTask):
    """Sweeps every ``interval`` seconds until stopped."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        service: Sweeper,
        metrics: Metrics,
        clock: Callable[[], datetime],
        interval: float,
    ) -> None:
        super().__init__("retention")
        self._pool = pool
        self._service = service
        # Allocation's own metric: only the service that erases exports it.
        self._erasures = Counter(
            "ledger_retention_erasures",
            "Families whose free text a retention policy erased.",
            registry=metrics.registry,
        )
        self._clock = clock
        self._interval = interval
        self._log = structlog.get_logger().bind(component="retention")

    async def _run(self) -> None:
        while not self._stopping:
            try:
                erased = await sweep(
                    self._pool, self._service, self._clock().astimezone(UTC).date()
                )
            except Exception as error:  # noqa: BLE001 - a database outage: the next sweep
                self._log.warning("retention_sweep_failed", error=repr(error))
            else:
                self._erasures.inc(len(erased))
                for item in erased:
                    self._log.info(
                        "retention_erased",
                        pilot_id=item.pilot_id,
                        family_id=item.family_id,
                        exited_on=item.exited_on.isoformat(),
                    )
            await self._pause(self._interval)
