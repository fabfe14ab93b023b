"""Spending's views of allocation (pilots, families) and approval (decisions).

Fed by spending's consumer, each event once; reads are plain SQL for the handlers.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

from pydantic import Field

from services.spending.requests import Decision
from shared.db import Connection
from shared.events import Envelope, Frozen
from shared.personal import Sealer, subject_of

__all__ = ["FamilyView", "PilotView", "apply", "decision_of", "family_of", "pilot_of"]

_PILOT = """
INSERT INTO pilot_view (pilot_id, version, config) VALUES ($1, $2, $3)
ON CONFLICT (pilot_id) DO UPDATE SET version = excluded.version, config = excluded.config
WHERE pilot_view.version < excluded.version
"""
_ENROLLED = """
INSERT INTO family_view
    (pilot_id, family_id, team, arm, enrolled_on, pilot_version, stream_version)
VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING
"""
_FAMILY_VERSION = """
UPDATE family_view SET stream_version = GREATEST(stream_version, $3)
WHERE pilot_id = $1 AND family_id = $2
"""
_EXITED = "UPDATE family_view SET exited_on = $3 WHERE pilot_id = $1 AND family_id = $2"
_DECISION = """
INSERT INTO decision_view (request_id, outcome, approved_pence, decided_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (request_id) DO UPDATE
SET outcome = excluded.outcome, approved_pence = excluded.approved_pence,
    decided_at = excluded.decided_at
"""
_READ_PILOT = "SELECT version, config FROM pilot_view WHERE pilot_id = $1"
_READ_FAMILY = "SELECT * FROM family_view WHERE pilot_id = $1 AND family_id = $2"
_READ_DECISION = (
    "SELECT outcome, approved_pence, decided_at FROM decision_view WHERE request_id = $1"
)
_OUTCOMES = {
    "decision.referred": "referred",
    "decision.approved": "approved",
    "decision.rejected": "rejected",
}


class PilotView(Frozen):
    """The pilot's configuration in force, as spending knows it."""

    version: int
    categories: tuple[str, ...]
    period_months: int


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
    data: dict[str, Any] = envelope.data
    kind = envelope.type
    if kind == "pilot.configured":
        await conn.execute(_PILOT, envelope.pilot_id, data["version"], data["config"])
    elif kind in _OUTCOMES:
        approved = data.get("approved_pence", 0) if kind == "decision.approved" else 0
        await conn.execute(
            _DECISION, UUID(data["request_id"]), _OUTCOMES[kind], approved, envelope.time
        )
    elif envelope.family_id is not None and kind.startswith("family."):
        if kind == "family.enrolled":
            await conn.execute(
                _ENROLLED,
                envelope.pilot_id,
                envelope.family_id,
                data["team"],
                data["arm"],
                date.fromisoformat(data["enrolled_on"]),
                data["pilot_version"],
                envelope.stream_version,
            )
        elif kind == "family.personal_data_erased":
            # The family's purposes and reasons here are sealed with spending's own keys.
            await Sealer().erase(conn, subject_of(envelope.pilot_id, envelope.family_id))
        elif kind == "family.exited":
            await conn.execute(
                _EXITED,
                envelope.pilot_id,
                envelope.family_id,
                date.fromisoformat(data["exited_on"]),
            )
        await conn.execute(
            _FAMILY_VERSION, envelope.pilot_id, envelope.family_id, envelope.stream_version
        )


async def pilot_of(conn: Connection, pilot_id: str) -> PilotView | None:
    """The pilot, if spending has seen it configured."""
    row = await conn.fetchrow(_READ_PILOT, pilot_id)
    if row is None:
        return None
    config = row["config"]
    return PilotView(
        version=row["version"],
        categories=tuple(config["categories"]),
        period_months=config["period_months"],
    )


async def family_of(conn: Connection, pilot_id: str, family_id: str) -> FamilyView | None:
    """The family, if spending has seen it enrolled."""
    row = await conn.fetchrow(_READ_FAMILY, pilot_id, family_id)
    if row is None:
        return None
    return FamilyView(
        team=row["team"],
        arm=row["arm"],
        enrolled_on=row["enrolled_on"],
        pilot_version=row["pilot_version"],
        exited_on=row["exited_on"],
        stream_version=row["stream_version"],
    )


async def decision_of(conn: Connection, request_id: UUID) -> Decision | None:
    """Approval's decision on a request, if spending has seen one."""
    row = await conn.fetchrow(_READ_DECISION, request_id)
    if row is None:
        return None
    return Decision(
        outcome=row["outcome"], approved_pence=row["approved_pence"], decided_at=row["decided_at"]
    )
