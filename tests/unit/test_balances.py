"""The balance fold: what each event moves, and that every order of the facts adds up the
same (each adds to the period's figures; none sets them)."""

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
    allocated_pence=10_000 - 1_000 + 500 - 500,
    committed_pence=3_000 + 2_000 - 2_500 - 500,
    spent_pence=2_500 - 1_000,
)


def events() -> list[Envelope]:
    return [
        event("family.budget_allocated", "f", 2, amount_pence=10_000, **PERIOD),
        event("family.budget_adjusted", "f", 3, delta_pence=-1_000, **PERIOD),  # before cuts
        event("family.budget_adjusted", "f", 4, delta_pence=500, **PERIOD),
        event("family.budget_reduction_requested", "f", 5, amount_pence=400, **PERIOD),  # no move
        event("decision.budget_reduced", "f", amount_pence=500, **PERIOD),
        event("decision.budget_reduction_refused", "f", amount_pence=9_999, **PERIOD),
        event("decision.approved", "f", request_id="r1", approved_pence=3_000, **PERIOD),
        event("decision.approved", "f", request_id="r2", approved_pence=2_000, **PERIOD),
        event("purchase.recorded", "f", request_id="r1", amount_pence=2_500, **PERIOD),
        event("decision.hold_released", "f", request_id="r1", released_pence=500, **PERIOD),
        event("purchase.refunded", "f", request_id="r1", amount_pence=1_000, **PERIOD),
        event("family.budget_disclosed", "f", 4),  # moves no money
    ]


def test_each_event_moves_the_balance_as_documented() -> None:
    """Allocations and top-ups add, accepted cuts take away; approvals hold; purchases turn
    holds into spend; releases and refunds give back."""
    assert fold(events()) == {date(2026, 1, 1): EXPECTED}
    assert EXPECTED.available_pence == 9_000 - 2_000 - 1_500


@given(st.randoms(use_true_random=False))
def test_every_order_of_the_facts_gives_the_same_balance(chance: random.Random) -> None:
    """However the topics interleave, and whichever order each is read in, the sums agree."""
    shuffled = events()
    chance.shuffle(shuffled)
    assert fold(shuffled) == {date(2026, 1, 1): EXPECTED}
