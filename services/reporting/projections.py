"""Reporting's projections: the history of every event, families, pilots and balances.

One handler for all three topics. Each effect is keyed (history by event id, families by
id, pilots by version) or a sum over facts (``shared.balances``), so reading the topics in
any interleaving, with redeliveries, gives the same projections.
"""

from __future__ import annotations

from datetime import date

from shared import balances
from shared.db import Connection
from shared.events import Envelope
from shared.kafka import SERVICE_TOPICS
from shared.service import ConsumerSpec

__all__ = ["CONSUMER", "TABLES", "apply"]

# The tables the projections consumer writes, and nothing else writes: what a rebuild replaces.
TABLES = ("history", "family_view", "pilot_view", "balances")

_HISTORY = """
INSERT INTO history (event_id, pilot_id, family_id, stream_id, stream_version, type, source,
    recorded_at, occurred_at, envelope)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (event_id) DO NOTHING
"""
_FAMILY = """
INSERT INTO family_view (pilot_id, family_id, team, arm, stratum, enrolled_on)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING
"""
_PILOT = """
INSERT INTO pilot_view (pilot_id, version, config) VALUES ($1, $2, $3)
ON CONFLICT (pilot_id) DO UPDATE SET version = excluded.version, config = excluded.config
WHERE pilot_view.version < excluded.version
"""


async def apply(conn: Connection, envelope: Envelope) -> None:
    """Apply one event of any service to reporting's projections."""
    await conn.execute(
        _HISTORY,
        envelope.id,
        envelope.pilot_id,
        envelope.family_id,
        envelope.stream_id,
        envelope.stream_version,
        envelope.type,
        envelope.source,
        envelope.time,
        envelope.occurred_at,
        envelope.to_json_dict(),
    )
    data = envelope.data
    if envelope.type == "family.enrolled":
        await conn.execute(
            _FAMILY,
            envelope.pilot_id,
            envelope.family_id,
            data["team"],
            data["arm"],
            data["stratum"],
            date.fromisoformat(data["enrolled_on"]),
        )
    elif envelope.type == "pilot.configured":
        await conn.execute(_PILOT, envelope.pilot_id, data["version"], data["config"])
    await balances.apply(conn, envelope)


CONSUMER = ConsumerSpec("reporting.projections", tuple(SERVICE_TOPICS.values()), apply)
