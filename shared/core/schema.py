"""Numbered SQL migrations, applied once per database and recorded in ``schema_migrations``."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from shared.core.db import Connection

__all__ = ["Migration", "apply_migrations", "ensure_database", "migrations_of"]

_LOCK_ID = 7_346_001  # one migrator per database at a time

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name        text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
_APPLIED = "SELECT name FROM schema_migrations"
_RECORD = "INSERT INTO schema_migrations (name) VALUES ($1)"
_DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = $1"


@dataclass(frozen=True)
class Migration:
    """One SQL file: ``package/NNN_name.sql``."""

    name: str
    sql: str


def migrations_of(package: str, label: str | None = None) -> tuple[Migration, ...]:
    """The migrations shipped in ``<package>/migrations``, in file-name order.

    Each is recorded as ``<label>/<file>`` (the package by default): a name, once applied
    to a database, must never change.
    """
    folder = resources.files(package).joinpath("migrations")
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return tuple(
        Migration(f"{label or package}/{entry.name}", entry.read_text()) for entry in files
    )


async def ensure_database(admin_dsn: str, database: str) -> bool:
    """Create ``database`` if it does not exist; True when it was created."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        if await conn.fetchval(_DATABASE_EXISTS, database):
            return False
        try:
            # Identifiers cannot be parameters; the name comes from settings, not from requests.
            await conn.execute(f'CREATE DATABASE "{database}"')
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await conn.close()


async def apply_migrations(conn: Connection, migrations: tuple[Migration, ...]) -> int:
    """Apply the migrations not yet recorded, each in its own transaction; return how many."""
    log = structlog.get_logger()
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(_CREATE_TABLE)
        applied = {row["name"] for row in await conn.fetch(_APPLIED)}
        count = 0
        for migration in migrations:
            if migration.name in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(_RECORD, migration.name)
            log.info("migration_applied", migration=migration.name)
            count += 1
        return count
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
