"""How many statements each database ran, from ``pg_stat_statements``: a request's round
trips, counted rather than timed. Unlike CPU time, the count does not move with what the
neighbours on a noisy machine are doing, so a change that saves a round trip shows as one.
The benchmark's server loads the module (``shared_preload_libraries``); a statement is one
the client sent, BEGIN and COMMIT included, each statement of a multi-statement string apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import asyncpg

__all__ = ["StatementCounter", "per_unit"]

_COUNTS = """
SELECT d.datname, sum(s.calls)::bigint AS calls
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
GROUP BY d.datname
"""


class StatementCounter:
    """Statements run so far in some databases of one server, by the name each is given."""

    def __init__(self, dsn: str, databases: Mapping[str, str]) -> None:
        self._dsn = dsn
        self._databases = databases  # database -> the name it is reported under

    async def counts(self) -> dict[str, int]:
        conn = await asyncpg.connect(self._dsn)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            rows = await conn.fetch(_COUNTS)
        finally:
            await conn.close()
        found = dict.fromkeys(self._databases.values(), 0)
        for row in rows:
            if row["datname"] in self._databases:
                found[self._databases[row["datname"]]] = int(row["calls"])
        return found

    async def rate(self, seconds: float) -> dict[str, float]:
        """Statements per second in each database over the next ``seconds`` (at idle: the
        relays' polls, the lag and clock watches)."""
        before, started = await self.counts(), time.monotonic()
        await asyncio.sleep(seconds)
        after = await self.counts()
        elapsed = time.monotonic() - started
        return {name: (after[name] - before.get(name, 0)) / elapsed for name in after}


def per_unit(
    before: Mapping[str, int],
    after: Mapping[str, int],
    idle: Mapping[str, float],
    seconds: float,
    units: float,
) -> dict[str, float]:
    """Statements per unit of work in each database, what idle would have run taken off."""
    return {
        name: round((after[name] - before.get(name, 0) - idle.get(name, 0.0) * seconds) / units, 1)
        for name in after
        if units
    }
