"""Continuous archiving: a base backup and the archived write-ahead log restore the local
stack's PostgreSQL to a moment, on a new cluster."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from deploy.stack import LOCAL, Postgres, free_port, unique_name
from tests.support import wait_for


@pytest.fixture
def home() -> Iterator[Path]:
    folder = LOCAL / f"test-{unique_name()}"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


async def _connect(postgres: Postgres) -> asyncpg.Connection[asyncpg.Record]:
    return await asyncpg.connect(
        host="127.0.0.1", port=postgres.port, user=postgres.user, database="postgres"
    )


async def test_a_base_backup_and_the_archive_restore_the_cluster_to_a_moment(home: Path) -> None:
    """Rows committed before the moment are in the restored cluster; rows after, not."""
    archive = home / "archive"
    live = Postgres(home / "live", free_port(), archive=archive)
    restored = Postgres(home / "restored", free_port())
    await asyncio.to_thread(live.start)
    try:
        conn = await _connect(live)
        try:
            await conn.execute("CREATE TABLE facts (n int PRIMARY KEY)")
            await conn.execute("INSERT INTO facts SELECT generate_series(1, 10)")
            await asyncio.to_thread(live.base_backup, home / "backup")
            await conn.execute("INSERT INTO facts SELECT generate_series(11, 20)")
            await asyncio.sleep(0.1)  # commit timestamps on either side of the moment
            moment = await conn.fetchval("SELECT clock_timestamp()::text")
            await asyncio.sleep(0.1)
            await conn.execute("INSERT INTO facts SELECT generate_series(21, 30)")
            segment = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")

            async def archived() -> bool:
                done = await conn.fetchval("SELECT last_archived_wal FROM pg_stat_archiver")
                return bool(done is not None and done >= segment)

            await wait_for(archived, timeout=30)
        finally:
            await conn.close()
        assert (archive / segment).exists()

        await asyncio.to_thread(restored.restore, home / "backup", archive, moment)
        conn = await _connect(restored)
        try:
            found = [row["n"] for row in await conn.fetch("SELECT n FROM facts ORDER BY n")]
            await conn.execute("INSERT INTO facts VALUES (31)")  # promoted: it takes writes
        finally:
            await conn.close()
        assert found == list(range(1, 21))
    finally:
        await asyncio.to_thread(restored.stop)
        await asyncio.to_thread(live.stop)
