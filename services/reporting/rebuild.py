"""Rebuilding reporting's projections from the start of the topics while reporting answers.

Blue/green inside reporting's database:

1. A fresh schema gets reporting's migrations, so its tables are twins of the live ones.
2. A :class:`ConsumerRunner` with the live consumer's name, on a pool whose search path is
   the fresh schema, reads every topic from the start to its end, outside any consumer
   group, so the live service is not disturbed. Its offsets, stream versions and parked
   records land in the fresh schema too.
3. It catches up with where the live consumer stands, until a pass has little to do, and
   waits (up to 10 s) for the live consumer wherever it has itself read further.
4. The switch, one transaction on the live schema: ``LOCK consumer_offsets IN SHARE MODE``
   holds the live consumer's next batch at its first statement (readers carry on). The
   rebuild catches up to the live consumer's exact offsets, every projection table is
   compared with its live twin (row count and a hash over the rows), the live tables move
   to a retired schema and the rebuilt ones take their place, and the live consumer's
   offsets, stream versions and parked records are replaced by the rebuilt ones. The held
   batch then finds its records below the stored offsets, already applied, and the live
   consumer carries on from there.

A rebuilt partition is never behind the live consumer at the switch: the live consumer's
fetch position is past the records in between and would never read them again. Ahead is
safe (the live consumer drops what is below the stored offset), but then the comparison
of that moment is not like for like, and the report says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from aiokafka import TopicPartition

from services.reporting.projections import CONSUMER, TABLES
from shared.core.consumer import ConsumerRunner
from shared.core.db import Connection, act_as_database_owner, connect, dsn, open_pool, quote_ident
from shared.core.kafka import topic_bounds
from shared.core.metrics import Metrics
from shared.core.schema import apply_migrations, migrations_of
from shared.core.settings import Settings
from shared.web.registry import core_migrations, topic_owners
from shared.web.service import consumer_runner

__all__ = ["Progress", "RebuildReport", "TableComparison", "rebuild"]

_FRESH = "reporting_rebuild"
_RETIRED = "reporting_retired"
_TRACKING = ("consumer_offsets", "consumer_streams", "consumer_parked")
_LOCK_ID = 7_346_084  # one rebuild per database at a time
_SMALL_GAP = 200  # records: a catch-up pass this short is followed by the switch
_MAX_PASSES = 5
# How long the switch waits for a live consumer that is behind the rebuild: 10 s.
_LIVE_WAITS = 50
_LIVE_WAIT_SECONDS = 0.2

_LIVE_OFFSETS = "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1"


class Progress(Protocol):
    """Where a rebuild reports how much it has to read and has read."""

    def expect(self, records: int) -> None: ...

    def advance(self, records: int) -> object: ...


@dataclass(frozen=True)
class TableComparison:
    """A projection table, live and rebuilt, at the moment of the switch."""

    table: str
    live_rows: int
    rebuilt_rows: int
    equal: bool


@dataclass(frozen=True)
class RebuildReport:
    """What a rebuild read and how the rebuilt projections compared with the live ones."""

    records: int
    seconds: float
    compared: bool  # False when the live consumer was behind: no like-for-like comparison
    tables: tuple[TableComparison, ...]
    switched: bool  # False when a rebuilt table differs from live and that was not accepted

    @property
    def differing(self) -> tuple[str, ...]:
        """The tables whose rebuilt rows are not the live ones."""
        return tuple(table.table for table in self.tables if not table.equal)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


async def rebuild(
    settings: Settings, progress: Progress, *, accept_differences: bool = False
) -> RebuildReport:
    """Rebuild reporting's projections from the topics and switch to them.

    Where a rebuilt table differs from its live twin the rebuild does not switch (the live
    projections stay as they are) unless ``accept_differences``: a difference is a finding
    for a person to look at, and replacing live rows is that person's decision.
    """
    started = time.monotonic()
    database_dsn = dsn(settings, settings.database_of("reporting"))
    live = await connect(database_dsn)
    try:
        owner = await act_as_database_owner(live)
        if not await live.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_ID):
            raise RuntimeError("another rebuild of reporting's projections is running")
        live_schema: str = await live.fetchval("SELECT current_schema()")
        await _drop_schemas(live)
        await live.execute(f"CREATE SCHEMA {_FRESH}")
        async with open_pool(
            database_dsn, min_size=1, max_size=2, schema=_FRESH, role=owner
        ) as pool:
            async with pool.acquire() as conn:
                await apply_migrations(
                    conn, core_migrations() + migrations_of("services.reporting")
                )
            owners = topic_owners(settings)
            runner = consumer_runner(CONSUMER, settings, pool, Metrics("reporting"), owners)
            records = await _bulk(settings, runner, progress)
            records += await _close_gap(live, runner, progress)
            await _live_reaches(live, runner)
            async with live.transaction():
                await live.execute("LOCK TABLE consumer_offsets IN SHARE MODE")
                targets = await _live_offsets(live, runner.name)
                rebuilt = await runner.stored_offsets()
                compared = all(
                    rebuilt.get(key, 0) <= targets.get(key, 0) for key in {*rebuilt, *targets}
                )
                records += await _catch_up(runner, targets, progress)
                tables = await _compare(live, live_schema) if compared else ()
                switched = accept_differences or all(table.equal for table in tables)
                if switched:
                    await _switch(live, live_schema, runner.name)
        await _drop_schemas(live)
    finally:
        await live.close()  # also releases the advisory lock
    return RebuildReport(records, time.monotonic() - started, compared, tables, switched)


async def _bulk(settings: Settings, runner: ConsumerRunner, progress: Progress) -> int:
    """Everything on the topics now, from the start."""
    topics = [settings.topic(topic) for topic in CONSUMER.topics]
    beginnings, ends = await topic_bounds(settings.kafka, topics)
    progress.expect(sum(ends[p] - beginnings[p] for p in ends))
    return await runner.catch_up(ends, progress.advance)


async def _close_gap(live: Connection, runner: ConsumerRunner, progress: Progress) -> int:
    """Follow the live consumer until one pass has little left to read."""
    records = 0
    for _ in range(_MAX_PASSES):
        read = await _catch_up(runner, await _live_offsets(live, runner.name), progress)
        records += read
        if read < _SMALL_GAP:
            break
    return records


async def _live_reaches(live: Connection, runner: ConsumerRunner) -> None:
    """Wait, a little, for the live consumer to reach the rebuild wherever the rebuild read
    further (the first pass reads to the topics' ends, which a busy live consumer may not
    have reached): compared at the switch, the two then stand at the same offsets. A live
    consumer that stays behind leaves the switch uncompared, as the report then says."""
    rebuilt = await runner.stored_offsets()
    for _ in range(_LIVE_WAITS):
        targets = await _live_offsets(live, runner.name)
        if all(offset <= targets.get(key, 0) for key, offset in rebuilt.items()):
            return
        await asyncio.sleep(_LIVE_WAIT_SECONDS)


async def _catch_up(
    runner: ConsumerRunner, targets: Mapping[tuple[str, int], int], progress: Progress
) -> int:
    rebuilt = await runner.stored_offsets()
    behind = {key: offset - rebuilt.get(key, 0) for key, offset in targets.items()}
    progress.expect(sum(gap for gap in behind.values() if gap > 0))  # offsets, not records
    return await runner.catch_up(
        {
            TopicPartition(topic, partition): offset
            for (topic, partition), offset in targets.items()
        },
        progress.advance,
    )


async def _live_offsets(live: Connection, consumer: str) -> dict[tuple[str, int], int]:
    rows = await live.fetch(_LIVE_OFFSETS, consumer)
    return {(row["topic"], row["partition"]): row["next_offset"] for row in rows}


async def _compare(live: Connection, live_schema: str) -> tuple[TableComparison, ...]:
    """Row count and an order-independent hash of every projection table, live and rebuilt."""
    comparisons = []
    for table in TABLES:
        was = tuple(await live.fetchrow(_digest(live_schema, table)) or ())
        rebuilt = tuple(await live.fetchrow(_digest(_FRESH, table)) or ())
        comparisons.append(TableComparison(table, was[0], rebuilt[0], was == rebuilt))
    return tuple(comparisons)


def _digest(schema: str, table: str) -> str:
    row_hash, rows = "md5(t::text)", _qualified(schema, table)
    digest = f"md5(coalesce(string_agg({row_hash}, '' ORDER BY {row_hash}), ''))"
    return f"SELECT count(*), {digest} FROM {rows} t"  # noqa: S608 - quoted names, none from input


def _qualified(schema: str, table: str) -> str:
    """A quoted ``schema.table``: identifiers cannot be query parameters."""
    return f"{quote_ident(schema)}.{quote_ident(table)}"


async def _switch(live: Connection, live_schema: str, consumer: str) -> None:
    """Put the rebuilt tables and tracking in the live ones' place (inside the caller's lock)."""
    await live.execute(f"CREATE SCHEMA {_RETIRED}")
    for table in TABLES:
        await live.execute(f"ALTER TABLE {_qualified(live_schema, table)} SET SCHEMA {_RETIRED}")
        await live.execute(
            f"ALTER TABLE {_qualified(_FRESH, table)} SET SCHEMA {quote_ident(live_schema)}"
        )
    for table in _TRACKING:
        target, source = _qualified(live_schema, table), _qualified(_FRESH, table)
        await live.execute(f"DELETE FROM {target} WHERE consumer = $1", consumer)  # noqa: S608
        await live.execute(
            f"INSERT INTO {target} SELECT * FROM {source} WHERE consumer = $1",  # noqa: S608
            consumer,
        )


async def _drop_schemas(live: Connection) -> None:
    """What a finished or interrupted rebuild leaves behind."""
    for schema in (_FRESH, _RETIRED):
        await live.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
