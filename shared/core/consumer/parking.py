"""Parked records, tried again family by family, in offset order."""

from __future__ import annotations

import structlog

from shared.core.consumer.batches import GAP, BatchApplier, StreamVersions, decode_record
from shared.core.eventstore import counted_once_committed

__all__ = ["retry_parked", "retry_requested"]

_PARKED_FAMILIES = "SELECT DISTINCT topic, record_key FROM consumer_parked WHERE consumer = $1"
_TAKE_REQUESTS = """
UPDATE consumer_parked SET retry_requested = false WHERE consumer = $1 AND retry_requested
"""
_REQUESTED = "SELECT EXISTS (SELECT 1 FROM consumer_parked WHERE consumer = $1 AND retry_requested)"
_PARKED_OF = """
SELECT partition, "offset", value FROM consumer_parked
WHERE consumer = $1 AND topic = $2 AND record_key = $3 ORDER BY "offset" FOR UPDATE
"""
_UNPARK = """DELETE FROM consumer_parked WHERE consumer = $1 AND topic = $2 AND "offset" = $3
AND partition = $4"""
_REPARK = """UPDATE consumer_parked SET error = $5, retried_at = now() WHERE consumer = $1
AND topic = $2 AND "offset" = $3 AND partition = $4"""


async def retry_parked(applier: BatchApplier) -> int:
    """Try a consumer's parked records again, family by family; return how many were applied.

    A family's records are tried in offset order. One that still fails stops its family,
    except a gap: the missing version may be parked further on, so the pass goes on and
    repeats while it makes progress.
    """
    name, applied = applier.name, 0
    async with applier.pool.acquire() as conn:
        await conn.execute(_TAKE_REQUESTS, name)  # this pass answers every request so far
        families = await conn.fetch(_PARKED_FAMILIES, name)
    for family in families:
        topic, key = family["topic"], family["record_key"]
        with counted_once_committed():
            applied += await _retry_family(applier, topic, key)
    if applied:
        structlog.get_logger().info("parked_records_applied", consumer=name, count=applied)
    return applied


async def _retry_family(applier: BatchApplier, topic: str, key: str) -> int:
    """One family's parked records, in offset order, in one transaction: how many applied."""
    name, applied = applier.name, 0
    async with applier.pool.acquire() as conn, conn.transaction():
        rows = list(await conn.fetch(_PARKED_OF, name, topic, key))
        envelopes = {row["offset"]: decode_record(row["value"]) for row in rows}
        versions = await StreamVersions.load(conn, name, list(envelopes.values()))
        progress = True
        while progress and rows:
            progress = False
            for row in list(rows):
                where = (name, topic, row["offset"], row["partition"])
                error = await applier.apply_one(
                    conn, envelopes[row["offset"]], versions, topic=topic, careful=True
                )
                if error is None:
                    await conn.execute(_UNPARK, *where)
                    rows.remove(row)
                    applied, progress = applied + 1, True
                    continue
                await conn.execute(_REPARK, *where, error)
                if not error.startswith(GAP):
                    break
        await versions.save(conn, name)
    return applied


async def retry_requested(applier: BatchApplier) -> bool:
    """Whether an operator asked for a parked record to be tried again (``ledger
    deadletters retry``, or a release that frees the records held behind one)."""
    async with applier.pool.acquire() as conn:
        return bool(await conn.fetchval(_REQUESTED, applier.name))
