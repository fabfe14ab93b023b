"""The balance fold: what each event moves, and that any interleaving of the topics adds up
the same (allocation's own events keep their order: each sets the period's total)."""

from __future__ import annotations

import random
from datetime import date
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.contracts.balances import Balance, fold
from shared.core.events import Envelope
from tests.unit.test_uptake import event

PERIOD: dict[str, Any] = {"period_start": "2026-01-01", "period_end": "2026-12-31"}
EXPECTED = Balance(
    period_start=date(2026, 1, 1),
    period_end=date(2026, 12, 31),
    allocated_pence=9_000,
    committed_pence=3_000 + 2_000 - 2_500 - 500,
    spent_pence=2_500 - 1_000,
)


def allocation_events() -> list[Envelope]:
    return [
        event("family.budget_allocated", "f", 2, period_allocated_pence=10_000, **PERIOD),
        event("family.budget_adjusted", "f", 3, period_allocated_pence=9_000, **PERIOD),
    ]


def other_events() -> list[Envelope]:
    return [
        event("decision.approved", "f", request_id="r1", approved_pence=3_000, **PERIOD),
        event("decision.approved", "f", request_id="r2", approved_pence=2_000, **PERIOD),
        event("purchase.recorded", "f", request_id="r1", amount_pence=2_500, **PERIOD),
        event("decision.hold_released", "f", request_id="r1", released_pence=500, **PERIOD),
        event("purchase.refunded", "f", request_id="r1", amount_pence=1_000, **PERIOD),
        event("family.budget_disclosed", "f", 4),  # moves no money
    ]


def test_each_event_moves_the_balance_as_documented() -> None:
    """Allocations set the total; approvals hold; purchases turn holds into spend; releases
    and refunds give back."""
    assert fold([*allocation_events(), *other_events()]) == {date(2026, 1, 1): EXPECTED}
    assert EXPECTED.available_pence == 9_000 - 2_000 - 1_500


@given(st.randoms(use_true_random=False))
def test_any_interleaving_of_the_topics_gives_the_same_balance(chance: random.Random) -> None:
    """Shuffle the summed facts and merge allocation's (in their own order) anywhere."""
    others = other_events()
    chance.shuffle(others)
    merged: list[Envelope] = []
    allocations = allocation_events()
    for item in others:
        while allocations and chance.random() < 0.4:
            merged.append(allocations.pop(0))
        merged.append(item)
    merged += allocations
    assert fold(merged) == {date(2026, 1, 1): EXPECTED}
