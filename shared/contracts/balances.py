"""The balance projection: allocated, committed (held), spent and available per family period.

It reads the published events of all three services, typed by their contracts. Every event
adds to a period's figures; none sets them:

- :class:`BudgetAllocated`: allocated += ``amount_pence``;
- :class:`BudgetAdjusted`: allocated += ``delta_pence`` (a top-up);
- :class:`BudgetReduced`: allocated -= ``amount_pence`` (a cut approval accepted);
- :class:`RequestApproved`: held += ``approved_pence``;
- :class:`HoldReleased`: held -= ``released_pence``;
- :class:`PurchaseRecorded`: held -= ``amount_pence``, spent += ``amount_pence``;
- :class:`PurchaseRefunded`: spent -= ``amount_pence``.

Each names its period in ``period_start`` and ``period_end``.

Why ``available`` never falls below zero. Only two kinds of fact lower it: a hold
(:class:`RequestApproved`) and a cut (:class:`BudgetReduced`), and approval alone decides
both, each after locking the period's row (:func:`lock`) in the transaction that records the
decision and applies it here, and each only if what is available covers it. Every other fact
leaves ``available`` as it was (a purchase moves money from held to spent, and spending never
lets purchases exceed what was approved) or raises it (allocations, top-ups, releases,
refunds). Allocation events reach approval in the order of the family's stream, so a cut is
judged against every allocation recorded before it. Hence approval's balance is never below
zero after any decision, whatever the interleaving. The other services' balances are sums of
the same facts, and sums do not depend on the order they arrive in: once a service has read
every fact approval had read, its figures equal approval's. (A service still catching up
can show an intermediate sum, say a refund not yet read beside a hold approved after it.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from shared.contracts import decode
from shared.contracts.allocation import BudgetAdjusted, BudgetAllocated
from shared.contracts.approval import BudgetReduced, HoldReleased, RequestApproved
from shared.contracts.spending import PurchaseRecorded, PurchaseRefunded
from shared.core.db import Connection
from shared.core.events import DomainEvent, Envelope, Frozen

__all__ = [
    "Balance",
    "Movement",
    "apply",
    "apply_many",
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
# Each row once per statement: the caller sums a batch's movements per period first.
_ADD = """
INSERT INTO balances AS b
    (pilot_id, family_id, period_start, period_end, allocated_pence, held_pence, spent_pence)
SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::date[], $5::bigint[],
                     $6::bigint[], $7::bigint[])
ON CONFLICT (pilot_id, family_id, period_start) DO UPDATE
SET allocated_pence = b.allocated_pence + excluded.allocated_pence,
    held_pence = b.held_pence + excluded.held_pence,
    spent_pence = b.spent_pence + excluded.spent_pence
"""
_LOCK = """
SELECT allocated_pence, held_pence, spent_pence, period_end FROM balances
WHERE pilot_id = $1 AND family_id = $2 AND period_start = $3 FOR UPDATE
"""
# The row made if it is new (this transaction then holds it), else read and locked: one
# statement. A row another transaction makes meanwhile is in neither half (the insert waits
# for it and does nothing; the read's snapshot was taken before it): no row comes back.
_ENSURE_AND_LOCK = f"""
WITH made AS ({_ENSURE} RETURNING allocated_pence, held_pence, spent_pence, period_end),
found AS ({_LOCK})
SELECT * FROM made UNION ALL SELECT * FROM found
"""  # noqa: S608 - composed of constant statements
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
    allocated_pence: int = 0
    held_pence: int = 0
    spent_pence: int = 0


def movement(event: DomainEvent | None) -> Movement | None:
    """The balance movement of an event; None for events that move no money."""
    change: tuple[int, int, int]  # allocated, held, spent
    match event:
        case BudgetAllocated():
            change = (event.amount_pence, 0, 0)
        case BudgetAdjusted():
            change = (event.delta_pence, 0, 0)
        case BudgetReduced():
            change = (-event.amount_pence, 0, 0)
        case RequestApproved():
            change = (0, event.approved_pence, 0)
        case HoldReleased():
            change = (0, -event.released_pence, 0)
        case PurchaseRecorded():
            change = (0, -event.amount_pence, event.amount_pence)
        case PurchaseRefunded():
            change = (0, 0, -event.amount_pence)
        case _:
            return None
    return Movement(event.period_start, event.period_end, *change)


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
        row[0] += move.allocated_pence
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
    await apply_many(conn, [(pilot_id, family_id, event)])


async def apply_many(
    conn: Connection, events: Iterable[tuple[str, str | None, DomainEvent | None]]
) -> None:
    """Apply events (pilot, family, event) to their balances in one statement: each
    period's movements summed, then added to its row (made if it is new)."""
    totals: dict[tuple[str, str, date], list[Any]] = {}
    for pilot_id, family_id, event in events:
        move = movement(event)
        if move is None:
            continue
        assert family_id is not None  # every money event belongs to a family
        row = totals.setdefault(
            (pilot_id, family_id, move.period_start), [move.period_end, 0, 0, 0]
        )
        row[1] += move.allocated_pence
        row[2] += move.held_pence
        row[3] += move.spent_pence
    if totals:
        keys, rows = list(totals), list(totals.values())
        columns = [[key[i] for key in keys] for i in range(3)] + [
            [row[i] for row in rows] for i in range(4)
        ]
        await conn.execute(_ADD, *columns)


async def lock(
    conn: Connection, pilot_id: str, family_id: str, period_start: date, period_end: date
) -> Balance:
    """The period's balance, locked until the transaction ends (decisions serialise here)."""
    row = await conn.fetchrow(_ENSURE_AND_LOCK, pilot_id, family_id, period_start, period_end)
    if row is None:  # made by another transaction meanwhile: committed now, so read it
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
