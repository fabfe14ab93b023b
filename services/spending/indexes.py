"""Spending's lookups of its own: the team each request is for, the request each purchase
is against. Written with the events spending records (in their transaction, or their one
statement of writes), and again from the same events when ``ledger recover`` puts them
back into a restored store (:mod:`services.spending.recovery`): both ways leave the same
rows."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from shared.contracts.spending import PurchaseRecorded, SpendRequested
from shared.core.db import Connection
from shared.core.events import DomainEvent
from shared.core.writes import Write, write

__all__ = ["record", "request_of_purchase", "team_of"]

_REQUEST = """
INSERT INTO request_index (request_id, pilot_id, family_id, team) VALUES ($1, $2, $3, $4)
"""
_PURCHASE = "INSERT INTO purchase_index (purchase_id, pilot_id, request_id) VALUES ($1, $2, $3)"
_TEAM = "SELECT team FROM request_index WHERE request_id = $1 AND pilot_id = $2"
_REQUEST_OF_PURCHASE = (
    "SELECT request_id FROM purchase_index WHERE purchase_id = $1 AND pilot_id = $2"
)


async def record(
    conn: Connection, pilot_id: str, family_id: str | None, events: Iterable[DomainEvent]
) -> None:
    """Index what these events of one family's stream make: a request, a purchase (with
    the command's other writes, where they are gathered)."""
    for event in events:
        if isinstance(event, SpendRequested):
            await write(conn, Write.of(_REQUEST, event.request_id, pilot_id, family_id, event.team))
        elif isinstance(event, PurchaseRecorded):
            await write(conn, Write.of(_PURCHASE, event.purchase_id, pilot_id, event.request_id))


async def team_of(conn: Connection, pilot_id: str, request_id: UUID) -> str | None:
    team: str | None = await conn.fetchval(_TEAM, request_id, pilot_id)
    return team


async def request_of_purchase(conn: Connection, pilot_id: str, purchase_id: UUID) -> UUID | None:
    request_id: UUID | None = await conn.fetchval(_REQUEST_OF_PURCHASE, purchase_id, pilot_id)
    return request_id
