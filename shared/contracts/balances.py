"""The balance projection: allocated, committed (held), spent and available per family period.

It reads the published events of all three services, typed by their contracts:

- :class:`BudgetAllocated`, :class:`BudgetAdjusted`: allocated := the period's total
  (``period_allocated_pence``);
- :class:`RequestApproved`: held += ``approved_pence``;
- :class:`HoldReleased`: held -= ``released_pence``;
- :class:`PurchaseRecorded`: held -= ``amount_pence``, spent += ``amount_pence``;
- :class:`PurchaseRefunded`: spent -= ``amount_pence``.

Each names its period in ``period_start`` and ``period_end``.

Allocation events set a total (its stream is consumed in order); everything else is a sum
of facts, so reading the topics in any interleaving gives the same balances. Approval
applies its own decisions here in the transaction that records them and locks the row
first (:func:`lock`): two decisions on one period never see the same ``available``. That
guards holds only: allocation checks a budget cut against its own copy of these balances,
which may lag approval's, so a cut and an approval that race can leave ``available`` below
zero (a known gap, for the invariants work: the balance's owner must decide cuts too).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import asyncpg

from shared.contracts import decode
from shared.contracts.allocation import BudgetAdjusted, BudgetAllocated
from shared.contracts.approval import HoldReleased, RequestApproved
from shared.contracts.spending import PurchaseRecorded, PurchaseRefunded
from shared.core.db import Connection
from shared.core.events import DomainEvent, Envelope, Frozen

__all__ = [
    "Balance",
    "Movement",
    "apply",
    "apply_envelope",
    "balance_of",
    "fold",
    "lock",
    "movement",
    "of_family",
]

_ENSURE = """
INSERT INTO balances (pilot_id, family_id, period_start, period_end) VALUES ($1, $2, $3, $4)
ON CONFLICT (pilot_id, family_id, period_start) DO NOTHING
"""
_SET_ALLOCATED = """
UPDATE balances SET allocated_pence = $4
WHERE pilot_id = $1 AND family_id = $2 AND period_start = $3
"""
_ADD = """
UPDATE balances SET held_pence = held_pence + $4, spent_pence = spent_pence + $5
WHERE pilot_id = $1 AND family_id = $2 AND period_start = $3
"""
_LOCK = """
SELECT allocated_pence, held_pence, spent_pence, period_end FROM balances
WHERE pilot_id = $1 AND family_id = $2 AND period_start = $3 FOR UPDATE
"""
_FAMILY = """
SELECT period_start, allocated_pence, held_pence, spent_pence, period_end FROM balances
WHERE pilot_id = $1 AND family_id = $2
"""
_READ = """
SELECT allocated_pence, held_pence, spent_pence, period_end FROM balances
WHERE pilot_id = $1 AND family_id = $2 AND period_start = $3
"""


class Balance(Frozen):
    """A family's money in one period."""

    period_start: date
    period_end: date
    allocated_pence: int
    committed_pence: int
    spent_pence: int

    @classmethod
    def nothing(cls, period_start: date, period_end: date) -> Balance:
        """A period with no facts yet."""
        return cls(
            period_start=period_start,
            period_end=period_end,
            allocated_pence=0,
            committed_pence=0,
            spent_pence=0,
        )

    @property
    def available_pence(self) -> int:
        """What may still be committed: allocated minus committed minus spent."""
        return self.allocated_pence - self.committed_pence - self.spent_pence


@dataclass(frozen=True)
class Movement:
    """What one event does to one period's balance."""

    period_start: date
    period_end: date
    allocated_pence: int | None  # the period's new total, for allocation events
    held_pence: int = 0
    spent_pence: int = 0


def movement(event: DomainEvent | None) -> Movement | None:
    """The balance movement of an event; None for events that move no money."""
    match event:
        case BudgetAllocated() | BudgetAdjusted():
            return Movement(event.period_start, event.period_end, event.period_allocated_pence)
        case RequestApproved():
            return Movement(event.period_start, event.period_end, None, event.approved_pence)
        case HoldReleased():
            return Movement(event.period_start, event.period_end, None, -event.released_pence)
        case PurchaseRecorded():
            amount = event.amount_pence
            return Movement(event.period_start, event.period_end, None, -amount, amount)
        case PurchaseRefunded():
            return Movement(event.period_start, event.period_end, None, 0, -event.amount_pence)
    return None


def fold(envelopes: Iterable[Envelope]) -> dict[date, Balance]:
    """The balances that a sequence of facts adds up to, by period start (pure).

    The same rules as :func:`apply`: reporting answers ``as_of`` questions with it, and the
    tests hold the SQL projection to it.
    """
    totals: dict[date, list[int]] = {}
    ends: dict[date, date] = {}
    for envelope in envelopes:
        move = movement(decode(envelope))
        if move is None:
            continue
        ends[move.period_start] = move.period_end
        row = totals.setdefault(move.period_start, [0, 0, 0])
        if move.allocated_pence is not None:
            row[0] = move.allocated_pence
        row[1] += move.held_pence
        row[2] += move.spent_pence
    return {
        start: Balance(
            period_start=start,
            period_end=ends[start],
            allocated_pence=allocated,
            committed_pence=held,
            spent_pence=spent,
        )
        for start, (allocated, held, spent) in totals.items()
    }


async def apply(
    conn: Connection, pilot_id: str, family_id: str | None, event: DomainEvent | None
) -> None:
    """Apply one event of a family to its balances (events that move no money are ignored)."""
    move = movement(event)
    if move is None:
        return
    assert family_id is not None  # every money event belongs to a family
    key = (pilot_id, family_id, move.period_start)
    await conn.execute(_ENSURE, *key, move.period_end)
    if move.allocated_pence is not None:
        await conn.execute(_SET_ALLOCATED, *key, move.allocated_pence)
        return
    await conn.execute(_ADD, *key, move.held_pence, move.spent_pence)


async def apply_envelope(conn: Connection, envelope: Envelope) -> None:
    """A consumer's handler: apply one published event to the balances."""
    await apply(conn, envelope.pilot_id, envelope.family_id, decode(envelope))


async def lock(
    conn: Connection, pilot_id: str, family_id: str, period_start: date, period_end: date
) -> Balance:
    """The period's balance, locked until the transaction ends (decisions serialise here)."""
    await conn.execute(_ENSURE, pilot_id, family_id, period_start, period_end)
    row = await conn.fetchrow(_LOCK, pilot_id, family_id, period_start)
    assert row is not None
    return _balance(period_start, row)


async def balance_of(
    conn: Connection, pilot_id: str, family_id: str, period_start: date, period_end: date
) -> Balance:
    """The period's balance as it stands (zero for a period with no facts yet)."""
    row = await conn.fetchrow(_READ, pilot_id, family_id, period_start)
    if row is None:
        return Balance.nothing(period_start, period_end)
    return _balance(period_start, row)


async def of_family(conn: Connection, pilot_id: str, family_id: str) -> dict[date, Balance]:
    """Every period of the family that has facts, by period start."""
    rows = await conn.fetch(_FAMILY, pilot_id, family_id)
    return {row["period_start"]: _balance(row["period_start"], row) for row in rows}


def _balance(period_start: date, row: asyncpg.Record) -> Balance:
    return Balance(
        period_start=period_start,
        period_end=row["period_end"],
        allocated_pence=row["allocated_pence"],
        committed_pence=row["held_pence"],
        spent_pence=row["spent_pence"],
    )
