"""Reporting's projections: the history of every event, families, pilots and balances.

One handler for all three topics. Each effect is keyed (history by event id, families by
id, pilots by version) or a sum over facts (:mod:`shared.contracts.balances`), so reading the
topics in any interleaving, with redeliveries, gives the same projections. History keeps
every event, also of a type no contract names; the other projections read the typed events.
A batch of events is applied at once (:func:`apply_many`), with set-based statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.contracts import TOPICS, balances, decode, views
from shared.contracts.allocation import FamilyEnrolled, PilotConfigured
from shared.core.db import Connection
from shared.core.events import Envelope, wire_dumps
from shared.web.service import ConsumerSpec

__all__ = ["CONSUMER", "TABLES", "apply", "apply_many"]

# The tables the projections consumer writes, and nothing else writes: what a rebuild replaces.
TABLES = ("history", "family_view", "pilot_view", "balances")

_HISTORY = """
INSERT INTO history (event_id, pilot_id, family_id, stream_id, stream_version, type, source,
    recorded_at, occurred_at, envelope)
SELECT e, p, f, s, v, t, src, r, o, j::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::integer[], $6::text[],
            $7::text[], $8::timestamptz[], $9::timestamptz[], $10::text[])
    AS u(e, p, f, s, v, t, src, r, o, j)
ON CONFLICT (event_id) DO NOTHING
"""
_FAMILIES = """
INSERT INTO family_view (pilot_id, family_id, team, arm, stratum, enrolled_on)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::date[])
ON CONFLICT DO NOTHING
"""


async def apply(conn: Connection, envelope: Envelope) -> None:
    """Apply one event of any service to reporting's projections."""
    await apply_many(conn, [envelope])


async def apply_many(conn: Connection, envelopes: Sequence[Envelope]) -> None:
    """Apply events of any service to reporting's projections, in order: one statement for
    their history, one for their families, one for their balances, one per pilot
    configured."""
    columns: list[list[Any]] = [[] for _ in range(10)]
    for envelope in envelopes:
        row = (
            envelope.id,
            envelope.pilot_id,
            envelope.family_id,
            envelope.stream_id,
            envelope.stream_version,
            envelope.type,
            envelope.source,
            envelope.time,
            envelope.occurred_at,
            wire_dumps(envelope.to_json_dict()),
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    await conn.execute(_HISTORY, *columns)
    events = [(envelope, decode(envelope)) for envelope in envelopes]
    families = [
        (e.pilot_id, e.family_id, event.team, event.arm, event.stratum, event.enrolled_on)
        for e, event in events
        if isinstance(event, FamilyEnrolled)
    ]
    if families:  # a list per column, as unnest takes them
        await conn.execute(_FAMILIES, *map(list, zip(*families, strict=True)))
    for envelope, event in events:
        if isinstance(event, PilotConfigured):
            await views.record_pilot(conn, envelope.pilot_id, event)
    await balances.apply_many(conn, ((e.pilot_id, e.family_id, event) for e, event in events))


CONSUMER = ConsumerSpec("reporting.projections", TOPICS, apply, apply_many)
