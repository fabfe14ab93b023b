"""The balance projection: allocated, committed (held), spent and available per family period.

It reads the published events of all three services, by type and documented data fields:

- ``family.budget_allocated``, ``family.budget_adjusted``: allocated := the period's total
  (``period_allocated_pence``);
- ``decision.approved``: held += ``approved_pence``;
- ``decision.hold_released``: held -= ``released_pence``;
- ``purchase.recorded``: held -= ``amount_pence``, spent += ``amount_pence``;
- ``purchase.refunded``: spent -= ``amount_pence``.

Each names its period in ``period_start`` and ``period_end``.

Allocation events set a total (its stream is consumed in order); everything else is a sum
of facts, so reading the topics in any interleaving gives the same balances. Approval
applies its own decisions here in the transaction that records them and locks the row
first (:func:`lock`), which is what keeps ``available`` from going below zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import asyncpg

from shared.db import Connection
from shared.events import Envelope, Frozen

__all__ = ["BALANCE_EVENT_TYPES", "Balance", "apply", "balance_of", "fold", "lock", "of_family"]

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

    @property
    def available_pence(self) -> int:
        """What may still be committed: allocated minus committed minus spent."""
        return self.allocated_pence - self.committed_pence - self.spent_pence


# (held delta sign, spent delta sign, amount field) per summed event type.
_SUMS: dict[str, tuple[int, int, str]] = {
    "decision.approved": (1, 0, "approved_pence"),
    "decision.hold_released": (-1, 0, "released_pence"),
    "purchase.recorded": (-1, 1, "amount_pence"),
    "purchase.refunded": (0, -1, "amount_pence"),
}
_TOTALS = frozenset({"family.budget_allocated", "family.budget_adjusted"})
BALANCE_EVENT_TYPES = _TOTALS | frozenset(_SUMS)


def fold(envelopes: Iterable[Envelope]) -> dict[date, Balance]:
    """The balances that a sequence of facts adds up to, by period start (pure).

    The same rules as :func:`apply`: reporting answers ``as_of`` questions with it, and the
    tests hold the SQL projection to it.
    """
    totals: dict[date, list[int]] = {}
    ends: dict[date, date] = {}
    for envelope in envelopes:
        if envelope.type not in BALANCE_EVENT_TYPES:
            continue
        data = envelope.data
        start = date.fromisoformat(data["period_start"])
        ends[start] = date.fromisoformat(data["period_end"])
        row = totals.setdefault(start, [0, 0, 0])
        if envelope.type in _TOTALS:
            row[0] = int(data["period_allocated_pence"])
            continue
        held, spent, field = _SUMS[envelope.type]
        amount = int(data[field])
        row[1] += held * amount
        row[2] += spent * amount
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


async def apply(conn: Connection, envelope: Envelope) -> None:
    """Apply one event to the balances (events of other types are ignored)."""
    if envelope.type not in BALANCE_EVENT_TYPES:
        return
    data = envelope.data
    assert envelope.family_id is not None
    key = (envelope.pilot_id, envelope.family_id, date.fromisoformat(data["period_start"]))
    await conn.execute(_ENSURE, *key, date.fromisoformat(data["period_end"]))
    if envelope.type in _TOTALS:
        await conn.execute(_SET_ALLOCATED, *key, data["period_allocated_pence"])
        return
    held, spent, field = _SUMS[envelope.type]
    amount = int(data[field])
    await conn.execute(_ADD, *key, held * amount, spent * amount)


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
        return Balance(
            period_start=period_start,
            period_end=period_end,
            allocated_pence=0,
            committed_pence=0,
            spent_pence=0,
        )
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
