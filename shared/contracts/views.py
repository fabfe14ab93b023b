"""Views of allocation's facts that more than one service keeps, each written once here.

- ``pilot_view`` (spending, reporting): the pilot's configuration in force, the highest
  version seen winning, so the order of redeliveries does not matter.
- ``family_view.stream_version`` (spending, approval): how far the service has read the
  family's allocation stream, which callers' ``allocation_version`` is compared with.

Each service creates the tables in its own migrations (they also hold columns of its own).
"""

from __future__ import annotations

import asyncpg

from shared.contracts.allocation import PilotConfig, PilotConfigured
from shared.contracts.periods import ALWAYS, PeriodLength
from shared.core.db import Connection
from shared.core.events import Frozen

__all__ = [
    "PilotInForce",
    "advance_family",
    "pilot_in_force",
    "pilot_of_row",
    "record_pilot",
]

_PILOT = """
INSERT INTO pilot_view (pilot_id, version, config, period_lengths) VALUES ($1, $2, $3, $4)
ON CONFLICT (pilot_id) DO UPDATE
SET version = excluded.version, config = excluded.config,
    period_lengths = excluded.period_lengths
WHERE pilot_view.version < excluded.version
"""
_READ_PILOT = "SELECT version, config, period_lengths FROM pilot_view WHERE pilot_id = $1"
_FAMILY_VERSION = """
UPDATE family_view SET stream_version = GREATEST(stream_version, $3)
WHERE pilot_id = $1 AND family_id = $2
"""


class PilotInForce(Frozen):
    """A pilot's configuration in force, as a service has seen it."""

    version: int
    config: PilotConfig
    period_lengths: tuple[PeriodLength, ...]


async def record_pilot(conn: Connection, pilot_id: str, event: PilotConfigured) -> None:
    """A configuration version; an older one arriving late changes nothing."""
    await conn.execute(
        _PILOT,
        pilot_id,
        event.version,
        event.config.model_dump(mode="json"),
        [length.model_dump(mode="json") for length in event.period_lengths],
    )


async def pilot_in_force(conn: Connection, pilot_id: str) -> PilotInForce | None:
    """The pilot, if this service has seen it configured."""
    return pilot_of_row(await conn.fetchrow(_READ_PILOT, pilot_id))


def pilot_of_row(row: asyncpg.Record | None) -> PilotInForce | None:
    """The pilot from a row with ``pilot_view``'s ``version``, ``config`` and
    ``period_lengths`` (NULL where it has not been seen)."""
    if row is None or row["version"] is None:
        return None
    config = PilotConfig.model_validate(row["config"])
    lengths = tuple(PeriodLength.model_validate(length) for length in row["period_lengths"])
    return PilotInForce(
        version=row["version"],
        config=config,
        period_lengths=lengths or (PeriodLength(since=ALWAYS, months=config.period_months),),
    )


async def advance_family(
    conn: Connection, pilot_id: str, family_id: str, stream_version: int
) -> None:
    """The family's allocation stream has been read up to ``stream_version``."""
    await conn.execute(_FAMILY_VERSION, pilot_id, family_id, stream_version)
