"""Where each adjustment stands, and the cuts approval accepted (table ``adjustments``).

A top-up is in force once allocation records it. A cut is recorded here as ``pending`` in
the transaction that appends its request, and settled by allocation's consumer when
approval's decision arrives on ``ledger.approval``. Each row is made from its event, so
that ``ledger recover``, putting events back from the topic into a restored store, makes
the same rows (:mod:`services.allocation.recovery`).
"""

from __future__ import annotations

from uuid import UUID

from services.allocation.families import Reduced
from services.allocation.schemas import AdjustmentStatus, AdjustmentView
from shared.contracts.allocation import BudgetAdjusted, BudgetReductionRequested
from shared.contracts.approval import BudgetReduced, ReductionDecided
from shared.core.db import Connection, model_of
from shared.core.events import Envelope

__all__ = ["record", "reduced", "settle", "view"]

_RECORD = """
INSERT INTO adjustments (adjustment_id, pilot_id, family_id, period_start, period_end,
                         delta_pence, status, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
_SETTLE = """
UPDATE adjustments SET status = $2, available_pence = $3, decided_at = $4
WHERE adjustment_id = $1 AND status = 'pending'
"""
_REDUCED = """
SELECT period_start, -sum(delta_pence) AS reduced FROM adjustments
WHERE pilot_id = $1 AND family_id = $2 AND status = 'accepted'
GROUP BY period_start
"""
_VIEW = """
SELECT * FROM adjustments WHERE pilot_id = $1 AND family_id = $2 AND adjustment_id = $3
"""


async def record(
    conn: Connection, envelope: Envelope, event: BudgetAdjusted | BudgetReductionRequested
) -> AdjustmentStatus:
    """Record an adjustment just decided: a top-up is applied, a cut pending."""
    status: AdjustmentStatus
    if isinstance(event, BudgetAdjusted):
        adjustment_id, delta_pence, status = event.adjustment_id, event.delta_pence, "applied"
    else:
        adjustment_id, delta_pence, status = event.reduction_id, -event.amount_pence, "pending"
    await conn.execute(
        _RECORD,
        adjustment_id,
        envelope.pilot_id,
        envelope.family_id,
        event.period_start,
        event.period_end,
        delta_pence,
        status,
        envelope.time,
    )
    return status


async def settle(conn: Connection, decision: ReductionDecided) -> None:
    """Approval decided a cut (a repeated decision changes nothing)."""
    status = "accepted" if isinstance(decision, BudgetReduced) else "refused"
    await conn.execute(
        _SETTLE, decision.reduction_id, status, decision.available_pence, decision.decided_at
    )


async def reduced(conn: Connection, pilot_id: str, family_id: str) -> Reduced:
    """The family's accepted cuts by period start."""
    rows = await conn.fetch(_REDUCED, pilot_id, family_id)
    return {row["period_start"]: row["reduced"] for row in rows}


async def view(
    conn: Connection, pilot_id: str, family_id: str, adjustment_id: UUID
) -> AdjustmentView | None:
    """One adjustment of the family, if there is one."""
    row = await conn.fetchrow(_VIEW, pilot_id, family_id, adjustment_id)
    return None if row is None else model_of(AdjustmentView, row)
