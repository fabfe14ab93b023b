"""Spending's views of allocation (pilots, families) and approval (decisions).

Fed by spending's consumer, each event once, decoded through the contracts; reads are plain
SQL for the handlers. The pilot view and the family's stream version are the shared ones
(:mod:`shared.contracts.views`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from uuid import UUID

from pydantic import Field

from services.spending.requests import Decision
from shared.contracts import decode, views
from shared.contracts.allocation import (
    FamilyEnrolled,
    FamilyExited,
    PersonalDataErased,
    PilotConfigured,
    family_stream_version,
)
from shared.contracts.approval import RequestApproved, RequestReferred, RequestRejected
from shared.core import personal
from shared.core.db import Connection, model_of
from shared.core.events import Envelope, Frozen
from shared.core.personal import subject_of

__all__ = [
    "CONSUMER",
    "FamilyView",
    "ForRequest",
    "apply",
    "decision_of",
    "family_of",
    "for_request",
    "pilot_of",
]

CONSUMER = "spending.views"
"""The consumer that keeps these views (a request waits for it to catch up)."""

_ENROLLED = """
INSERT INTO family_view
    (pilot_id, family_id, team, arm, enrolled_on, pilot_version, stream_version)
VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING
"""
_EXITED = "UPDATE family_view SET exited_on = $3 WHERE pilot_id = $1 AND family_id = $2"
_DECISION = """
INSERT INTO decision_view (request_id, outcome, approved_pence, decided_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (request_id) DO UPDATE
SET outcome = excluded.outcome, approved_pence = excluded.approved_pence,
    decided_at = excluded.decided_at
"""
_READ_FAMILY = "SELECT * FROM family_view WHERE pilot_id = $1 AND family_id = $2"
# What a spend request reads, in one statement: the pilot, the family and the family's key.
_FOR_REQUEST = f"""
SELECT p.version, p.config, p.period_lengths,
    f.team, f.arm, f.enrolled_on, f.pilot_version, f.exited_on, f.stream_version,
    k.key_id, k.kek_id, k.wrapped
FROM (SELECT) AS one
LEFT JOIN pilot_view p ON p.pilot_id = $1
LEFT JOIN family_view f ON f.pilot_id = $1 AND f.family_id = $2
LEFT JOIN ({personal.live_key("$3")}) k ON true
"""  # noqa: S608 - composed of constant statements
_READ_DECISION = (
    "SELECT outcome, approved_pence, decided_at FROM decision_view WHERE request_id = $1"
)


class FamilyView(Frozen):
    """A family, as spending knows it."""

    team: str
    arm: str
    enrolled_on: date
    pilot_version: int = Field(description="The pilot configuration it was enrolled under.")
    exited_on: date | None
    stream_version: int


async def apply(conn: Connection, envelope: Envelope) -> None:
    """Apply one event of allocation or approval to the views."""
    event = decode(envelope)
    pilot_id, family_id = envelope.pilot_id, envelope.family_id
    match event:
        case PilotConfigured():
            await views.record_pilot(conn, pilot_id, event)
        case RequestReferred():
            await conn.execute(_DECISION, event.request_id, "referred", 0, envelope.time)
        case RequestApproved():
            await conn.execute(
                _DECISION, event.request_id, "approved", event.approved_pence, envelope.time
            )
        case RequestRejected():
            await conn.execute(_DECISION, event.request_id, "rejected", 0, envelope.time)
    version = family_stream_version(envelope)
    if family_id is None or version is None:
        return
    match event:
        case FamilyEnrolled():
            await conn.execute(
                _ENROLLED,
                pilot_id,
                family_id,
                event.team,
                event.arm,
                event.enrolled_on,
                event.pilot_version,
                envelope.stream_version,
            )
        case PersonalDataErased():
            # The family's purposes and reasons here are sealed with spending's own keys.
            await personal.erase(conn, subject_of(pilot_id, family_id))
        case FamilyExited():
            await conn.execute(_EXITED, pilot_id, family_id, event.exited_on)
    await views.advance_family(conn, pilot_id, family_id, version)


async def pilot_of(conn: Connection, pilot_id: str) -> views.PilotInForce | None:
    """The pilot, if spending has seen it configured."""
    return await views.pilot_in_force(conn, pilot_id)


async def family_of(conn: Connection, pilot_id: str, family_id: str) -> FamilyView | None:
    """The family, if spending has seen it enrolled."""
    row = await conn.fetchrow(_READ_FAMILY, pilot_id, family_id)
    if row is None:
        return None
    return model_of(FamilyView, row)


@dataclass(frozen=True)
class ForRequest:
    """What a spend request reads: the pilot and the family as spending has seen them, and
    the family's live key (None: not seen, or no key made yet)."""

    pilot: views.PilotInForce | None
    family: FamilyView | None
    key: personal.LiveKey | None


async def for_request(conn: Connection, pilot_id: str, family_id: str) -> ForRequest:
    """The pilot, the family and its key, in one statement."""
    row = await conn.fetchrow(_FOR_REQUEST, pilot_id, family_id, subject_of(pilot_id, family_id))
    assert row is not None  # one row, whatever it finds
    family = None if row["team"] is None else model_of(FamilyView, row)
    return ForRequest(views.pilot_of_row(row), family, personal.LiveKey.of(row))


async def decision_of(conn: Connection, request_id: UUID) -> Decision | None:
    """Approval's decision on a request, if spending has seen one."""
    row = await conn.fetchrow(_READ_DECISION, request_id)
    if row is None:
        return None
    return model_of(Decision, row)
