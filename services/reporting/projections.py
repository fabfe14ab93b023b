"""Reporting's projections: the history of every event, families, pilots and balances.

One handler for all three topics. Each effect is keyed (history by event id, families by
id, pilots by version) or a sum over facts (:mod:`shared.contracts.balances`), so reading the
topics in any interleaving, with redeliveries, gives the same projections. History keeps
every event, also of a type no contract names; the other projections read the typed events.
"""

from __future__ import annotations

from shared.contracts import TOPICS, balances, decode, views
from shared.contracts.allocation import FamilyEnrolled, PilotConfigured
from shared.core.db import Connection
from shared.core.events import Envelope
from shared.web.service import ConsumerSpec

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
    event = decode(envelope)
    if isinstance(event, FamilyEnrolled):
        await conn.execute(
            _FAMILY,
            envelope.pilot_id,
            envelope.family_id,
            event.team,
            event.arm,
            event.stratum,
            event.enrolled_on,
        )
    elif isinstance(event, PilotConfigured):
        await views.record_pilot(conn, envelope.pilot_id, event)
    await balances.apply(conn, envelope.pilot_id, envelope.family_id, event)


CONSUMER = ConsumerSpec("reporting.projections", TOPICS, apply)
