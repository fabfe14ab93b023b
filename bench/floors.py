"""Floors: what the machine does with no ledger in the way, measured in the same run as the
ledger's figures, so that a goal is a ratio to a floor and not a number a noisy machine sets.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import asyncpg

from shared.core.db import connect, dsn
from shared.core.schema import ensure_database
from shared.core.settings import Settings

_TABLE = """
CREATE TABLE IF NOT EXISTS floor_events (
    id uuid PRIMARY KEY, stream_id text NOT NULL, version int NOT NULL, envelope jsonb NOT NULL,
    UNIQUE (stream_id, version)
)"""


def _rows(count: int) -> list[tuple[uuid.UUID, str, int, str]]:
    """Rows the size and shape of a ledger event (a ~600-byte JSON envelope), each new."""
    body = json.dumps({"type": "family.budget_allocated", "data": {"note": "x" * 400}})
    return [(uuid.uuid4(), f"family:floor:{uuid.uuid4()}", 1, body) for _ in range(count)]


async def asyncpg_appends(settings: Settings, count: int = 5_000) -> dict[str, Any]:
    """Inserts of event-sized rows: one per transaction, 100 per transaction, and COPY."""
    await ensure_database(dsn(settings, "postgres"), settings.database_of("floors"))
    conn: asyncpg.Connection = await connect(dsn(settings, settings.database_of("floors")))
    try:
        await conn.execute(_TABLE)
        # COPY is binary: jsonb's binary form is a version byte, then the text.
        await conn.set_type_codec(
            "jsonb",
            schema="pg_catalog",
            encoder=lambda text: b"\x01" + text.encode(),
            decoder=lambda data: data[1:].decode(),
            format="binary",
        )
        insert = "INSERT INTO floor_events VALUES ($1, $2, $3, $4)"
        rates = {}
        rows = _rows(count // 5)
        started = time.perf_counter()
        for row in rows:
            async with conn.transaction():
                await conn.execute(insert, *row)
        rates["one_per_transaction"] = len(rows) / (time.perf_counter() - started)
        rows = _rows(count)
        started = time.perf_counter()
        for first in range(0, len(rows), 100):
            async with conn.transaction():
                await conn.executemany(insert, rows[first : first + 100])
        rates["hundred_per_transaction"] = len(rows) / (time.perf_counter() - started)
        rows = _rows(count * 4)
        started = time.perf_counter()
        await conn.copy_records_to_table("floor_events", records=rows)
        rates["copy"] = len(rows) / (time.perf_counter() - started)
        return {name: round(rate) for name, rate in rates.items()}
    finally:
        await conn.close()
