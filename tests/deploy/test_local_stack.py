"""The local stack's PostgreSQL: no local user connects without its password."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from deploy.stack import LOCAL, Postgres, free_port, unique_name


async def _connects(postgres: Postgres, password: str | None) -> bool:
    try:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=postgres.port,
            user=postgres.user,
            database="postgres",
            password=password or "",
        )
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
        return False
    await conn.close()
    return True


@pytest.fixture
def home() -> Iterator[Path]:
    folder = LOCAL / f"test-{unique_name()}" / "postgres"
    yield folder
    shutil.rmtree(folder.parent, ignore_errors=True)


async def test_the_local_postgres_asks_every_connection_for_its_password(home: Path) -> None:
    """A cluster made with a password refuses a connection without it; one made before the
    stack had a password (it trusted every local user, any of whom could read every store)
    is given the password and refuses the same, once started again."""
    older = Postgres(home, free_port(), durable=False)  # as the stack made them before
    await asyncio.to_thread(older.start)
    try:
        assert await _connects(older, None)
    finally:
        await asyncio.to_thread(older.stop, "immediate")
    secured = Postgres(home, older.port, durable=False, password="pw-" + unique_name())
    await asyncio.to_thread(secured.start)
    try:
        assert not await _connects(secured, None)
        assert not await _connects(secured, "a guess")
        assert await _connects(secured, secured.password)
    finally:
        await asyncio.to_thread(secured.stop, "immediate")
    fresh = Postgres(home.parent / "fresh", free_port(), durable=False, password="pw-fresh")
    await asyncio.to_thread(fresh.start)
    try:
        assert not await _connects(fresh, None)
        assert await _connects(fresh, "pw-fresh")
    finally:
        await asyncio.to_thread(fresh.stop, "immediate")
