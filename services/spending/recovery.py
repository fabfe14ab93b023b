"""What spending's own events write besides its store, written again for each event that
``ledger recover`` puts back from spending's topic into a restored store
(``ServiceDefinition.effects``): the indexes, and a statement's erasure."""

from __future__ import annotations

from services.spending import indexes
from services.spending.reconciliation import statement_subject
from shared.contracts import decode
from shared.contracts.spending import StatementTextErased
from shared.core.db import Connection
from shared.core.events import Envelope
from shared.core.personal import erase

__all__ = ["put_back"]


async def put_back(conn: Connection, envelope: Envelope) -> None:
    event = decode(envelope)
    if isinstance(event, StatementTextErased):
        # The keys restored with the store opened the text again: erased as it was.
        await erase(conn, statement_subject(envelope.pilot_id, event.statement_id))
    elif event is not None:
        await indexes.record(conn, envelope.pilot_id, envelope.family_id, (event,))
