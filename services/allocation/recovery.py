"""What allocation's own events write besides its store, written again for each event that
``ledger recover`` puts back from allocation's topic into a restored store
(``ServiceDefinition.effects``): an adjustment's row, and a family's erasure."""

from __future__ import annotations

from services.allocation import adjustments
from shared.contracts import decode
from shared.contracts.allocation import (
    BudgetAdjusted,
    BudgetReductionRequested,
    PersonalDataErased,
)
from shared.core.db import Connection
from shared.core.events import Envelope
from shared.core.personal import erase, subject_of

__all__ = ["put_back"]


async def put_back(conn: Connection, envelope: Envelope) -> None:
    event = decode(envelope)
    if isinstance(event, BudgetAdjusted | BudgetReductionRequested):
        await adjustments.record(conn, envelope, event)
    elif isinstance(event, PersonalDataErased) and envelope.family_id is not None:
        # The keys restored with the store opened the family's text again: erased as it was.
        await erase(conn, subject_of(envelope.pilot_id, envelope.family_id))
