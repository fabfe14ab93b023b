"""Each service measures its clock against PostgreSQL's: with approval five minutes slow,
decisions seemed to come before their requests, and nothing said the clocks disagreed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest

from shared.core.clockwatch import ClockWatch, offset_seconds
from shared.core.metrics import Metrics
from shared.core.settings import Settings
from tests.integration.fixtures import migrated_pool
from tests.support import wait_for


def _slow() -> datetime:
    return datetime.now(UTC) - timedelta(minutes=5)


async def test_a_clock_five_minutes_slow_is_measured_and_exported(settings: Settings) -> None:
    async with migrated_pool(settings, "approval") as pool:
        async with pool.acquire() as conn:
            assert abs(await offset_seconds(conn, lambda: datetime.now(UTC))) < 0.5
            assert abs(await offset_seconds(conn, _slow) + 300) < 0.5
        metrics = Metrics("approval")
        async with ClockWatch(pool, _slow, metrics, every=0.1):

            async def exported() -> bool:
                text = generate_latest(metrics.registry).decode()
                line = next(
                    line for line in text.splitlines()
                    if line.startswith("ledger_clock_offset_seconds ")
                )  # fmt: skip
                return abs(float(line.split()[1]) + 300) < 0.5

            await wait_for(exported, timeout=5)
