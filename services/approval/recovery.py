"""What approval's own events write besides its store, written again for each event that
``ledger recover`` puts back from approval's topic into a restored store
(``ServiceDefinition.effects``): the family's balances each moves, and the request's row.

A request spending published after the moment restored to has no row yet: approval's
consumer, going on from the offsets restored, records it again, finds its decision on its
stream and decides nothing again (``Approval._decide``), so that each decision is made once,
whichever way the row comes to hold it."""

from __future__ import annotations

from services.approval import process
from shared.contracts import balances, decode
from shared.contracts.approval import DecisionMade, HoldReleased
from shared.core.db import Connection
from shared.core.events import Envelope

__all__ = ["put_back"]


async def put_back(conn: Connection, envelope: Envelope) -> None:
    event = decode(envelope)
    if event is None or envelope.family_id is None:
        return
    await balances.apply(conn, envelope.pilot_id, envelope.family_id, event)
    if isinstance(event, DecisionMade | HoldReleased):
        await process.record_decision(conn, event)
