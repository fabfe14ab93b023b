"""Spending's views of allocation (pilots, families) and approval (decisions).

Fed by spending's consumer, each event once, decoded through the contracts; reads are plain
SQL for the handlers. The pilot view and the family's stream version are the shared ones
(:mod:`shared.contracts.views`).
"""

from __future__ import annotations

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

__all__ = ["CONSUMER", "FamilyView", "apply", "decision_of", "family_of", "pilot_of"]

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


async def decision_of(conn: Connection, request_id: UUID) -> Decision | None:
    """Approval's decision on a request, if spending has seen one."""
    row = await conn.fetchrow(_READ_DECISION, request_id)
    if row is None:
        return None
    return model_of(Decision, row)
