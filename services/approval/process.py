"""Approval's process state: pilots' policies, families, and each request's progress.

Not a view: the consumer records what approval has learnt from allocation and spending,
and approval's own commands (decisions, releases) move each request through ``waiting``,
``referred``, ``approved``, ``rejected``, ``withdrawn`` and ``closed`` here, in the
transactions that record them. The family's stream version is the shared view
(:mod:`shared.contracts.views`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from services.approval.decisions import Policy, RequestFacts
from shared.contracts import views
from shared.contracts.allocation import FamilyEnrolled, PilotConfig, PilotConfigured
from shared.contracts.approval import (
    DecisionMade,
    HoldReleased,
    RequestApproved,
    RequestReferred,
    RequestRejected,
)
from shared.contracts.spending import SpendRequested
from shared.core.db import Connection, model_of
from shared.core.events import DomainEvent, Envelope

__all__ = [
    "Waiting",
    "pending",
    "record_decision",
    "record_family",
    "record_policy",
    "record_purchase",
    "record_request",
    "request_facts",
    "request_row",
    "set_status",
    "waiting",
    "waiting_families",
]

_POLICY = """
INSERT INTO policy_view (pilot_id, version, config) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING
"""
_READ_POLICY = "SELECT version, config FROM policy_view WHERE pilot_id = $1 AND version = $2"
_ENROLLED = """
INSERT INTO family_view (pilot_id, family_id, team, stream_version) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
"""

_REQUEST = """
INSERT INTO requests (request_id, pilot_id, family_id, team, amount_pence, category, requested_by,
    family_involved, policy_version, allocation_version, period_start, period_end, requested_at,
    received_at, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'waiting')
ON CONFLICT DO NOTHING
"""
# With each, the policy it is judged by (if seen) and how far the family has been read.
_WAITING = """
SELECT r.*, p.config AS policy_config, coalesce(
    (SELECT stream_version FROM family_view f WHERE f.pilot_id = $1 AND f.family_id = $2), 0
) AS family_version
FROM requests r
LEFT JOIN policy_view p ON p.pilot_id = r.pilot_id AND p.version = r.policy_version
WHERE r.pilot_id = $1 AND r.family_id = $2 AND r.status = 'waiting'
ORDER BY r.requested_at, r.request_id FOR UPDATE OF r
"""
_WAITING_FAMILIES = (
    "SELECT DISTINCT family_id FROM requests WHERE pilot_id = $1 AND status = 'waiting'"
)
_ROW = "SELECT * FROM requests WHERE request_id = $1 AND pilot_id = $2 FOR UPDATE"
_STATUS = """
UPDATE requests SET status = $2, approved_pence = $3, decided_at = COALESCE($4, decided_at)
WHERE request_id = $1
"""
_PURCHASE = "UPDATE requests SET purchased_pence = purchased_pence + $2 WHERE request_id = $1"
_RELEASED = "UPDATE requests SET status = $2 WHERE request_id = $1"
_DECIDED: dict[type[DecisionMade], str] = {
    RequestReferred: "referred",
    RequestApproved: "approved",
    RequestRejected: "rejected",
}
_PENDING = """
SELECT * FROM requests
WHERE pilot_id = $1 AND status = 'referred' AND ($2::text IS NULL OR team = $2)
ORDER BY requested_at, request_id
"""


async def record_policy(conn: Connection, pilot_id: str, event: PilotConfigured) -> None:
    """A pilot configuration version, kept for the requests it will judge."""
    await conn.execute(_POLICY, pilot_id, event.version, event.config.model_dump(mode="json"))


async def backdating_days(conn: Connection, pilot_id: str, version: int) -> int | None:
    """How far back occurred_at may go under one configuration version (None if unseen)."""
    row = await conn.fetchrow(_READ_POLICY, pilot_id, version)
    return None if row is None else PilotConfig.model_validate(row["config"]).backdating_days


async def record_family(
    conn: Connection, pilot_id: str, family_id: str, event: DomainEvent | None, version: int
) -> None:
    """A family's team (on enrolment) and how far approval has read its allocation stream."""
    if isinstance(event, FamilyEnrolled):
        await conn.execute(_ENROLLED, pilot_id, family_id, event.team, version)
    await views.advance_family(conn, pilot_id, family_id, version)


async def record_request(
    conn: Connection, envelope: Envelope, event: SpendRequested, received_at: datetime
) -> None:
    """A spend request, waiting for approval's decision; ``received_at`` is approval's clock."""
    await conn.execute(
        _REQUEST,
        event.request_id,
        envelope.pilot_id,
        event.family_id,
        event.team,
        event.amount_pence,
        event.category,
        event.requested_by,
        event.family_involved,
        event.pilot_version,
        event.allocation_version,
        event.period_start,
        event.period_end,
        envelope.occurred_at,
        received_at,
    )


@dataclass(frozen=True)
class Waiting:
    """An undecided request: its row, the policy it is judged by (None until approval has
    seen that configuration) and the family's allocation stream version approval has read."""

    row: asyncpg.Record
    policy: Policy | None
    family_version: int


async def waiting(conn: Connection, pilot_id: str, family_id: str) -> list[Waiting]:
    """The family's undecided requests, oldest first, locked; one statement for them all."""
    found = []
    for row in await conn.fetch(_WAITING, pilot_id, family_id):
        config = row["policy_config"]
        policy = None
        if config is not None:
            tiers = PilotConfig.model_validate(config).approval_tiers
            policy = Policy(version=row["policy_version"], tiers=tiers)
        found.append(Waiting(row, policy, row["family_version"]))
    return found


async def waiting_families(conn: Connection, pilot_id: str) -> list[str]:
    """Families of the pilot with undecided requests."""
    return [row["family_id"] for row in await conn.fetch(_WAITING_FAMILIES, pilot_id)]


async def request_row(conn: Connection, pilot_id: str, request_id: UUID) -> asyncpg.Record | None:
    """One request, locked."""
    return await conn.fetchrow(_ROW, request_id, pilot_id)


def request_facts(row: asyncpg.Record) -> RequestFacts:
    """The decider's view of a request row."""
    return model_of(RequestFacts, row)


async def set_status(
    conn: Connection,
    request_id: UUID,
    status: str,
    approved_pence: int,
    decided_at: datetime | None,
) -> None:
    """Where the request now stands."""
    await conn.execute(_STATUS, request_id, status, approved_pence, decided_at)


async def record_decision(conn: Connection, event: DecisionMade | HoldReleased) -> None:
    """Move the request's row as one of approval's own events on it says: a decision, or a
    hold given back when the request was withdrawn or closed. (No row: the request is not
    recorded yet; see ``Approval._decide`` for how its row then catches up.)"""
    if isinstance(event, HoldReleased):
        await conn.execute(_RELEASED, event.request_id, event.cause)
        return
    approved = event.approved_pence if isinstance(event, RequestApproved) else 0
    status = _DECIDED[type(event)]
    await set_status(conn, event.request_id, status, approved, event.decided_at)


async def record_purchase(conn: Connection, request_id: UUID, amount_pence: int) -> None:
    """Money bought against the request (what a release will not give back)."""
    await conn.execute(_PURCHASE, request_id, amount_pence)


async def pending(conn: Connection, pilot_id: str, team: str | None) -> list[asyncpg.Record]:
    """Requests awaiting a manager, oldest first (one team's, or all)."""
    return list(await conn.fetch(_PENDING, pilot_id, team))
