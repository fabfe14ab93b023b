"""The family decider: given events, when a command, then events or an error."""

from __future__ import annotations

from datetime import date
from uuid import UUID

import pytest
from hypothesis import given as hypothesis_given
from hypothesis import strategies as st

from services.allocation import families
from shared.contracts import allocation as contract
from shared.contracts.periods import (
    ALWAYS,
    Period,
    PeriodLength,
    lengths_after,
    period_containing,
)
from shared.core.errors import (
    ConflictError,
    NotFoundError,
    PolicyViolationError,
    UnprocessableError,
)
from shared.core.events import DomainEvent

LENGTHS = (PeriodLength(since=ALWAYS, months=12),)
CONFIG = contract.PilotConfig(
    name="Wigan", period_months=12, family_cap_pence=400_000, categories=("other",)
)
ID = UUID(int=1)
ENROLLED = contract.FamilyEnrolled(
    family_id="f",
    team="t",
    worker="w",
    enrolled_on=date(2026, 4, 1),
    stratum=None,
    arm="treatment",
    pilot_version=1,
)


def given(*events: DomainEvent) -> families.FamilyState:
    state = families.initial_state()
    for event in events:
        state = families.evolve(state, event)
    return state


def allocate(
    amount: int,
    today: date = date(2026, 6, 1),
    start: date | None = None,
    end: date | None = None,
    reduced: families.Reduced | None = None,
) -> families.AllocateBudget:
    return families.AllocateBudget(
        allocation_id=ID,
        amount_pence=amount,
        period_start=start,
        period_end=end,
        note=None,
        today=today,
        config=CONFIG,
        period_lengths=LENGTHS,
        pilot_version=1,
        reduced=reduced or {},
    )


def allocated(
    amount: int, total: int, start: date = date(2026, 4, 1), end: date = date(2027, 3, 31)
) -> contract.BudgetAllocated:
    return contract.BudgetAllocated(
        allocation_id=ID,
        amount_pence=amount,
        period_start=start,
        period_end=end,
        note=None,
        pilot_version=1,
        period_allocated_pence=total,
    )


def test_enrolment_then_again_is_a_conflict() -> None:
    """A family is enrolled once."""
    command = families.EnrolFamily(**ENROLLED.model_dump())
    assert families.decide(given(), command) == [ENROLLED]
    with pytest.raises(ConflictError):
        families.decide(given(ENROLLED), command)


def test_allocation_goes_to_the_current_period() -> None:
    """Without a period, the allocation goes to the period containing today."""
    assert families.decide(given(ENROLLED), allocate(1000)) == [allocated(1000, 1000)]


def test_allocations_accumulate_up_to_the_cap() -> None:
    """A period's allocations may reach the cap, not pass it."""
    state = given(ENROLLED, allocated(300_000, 300_000))
    assert families.decide(state, allocate(100_000)) == [allocated(100_000, 400_000)]
    with pytest.raises(PolicyViolationError) as refused:
        families.decide(state, allocate(100_001))
    assert refused.value.code == "exceeds_family_cap"


def test_each_period_has_its_own_cap() -> None:
    """The next period starts afresh."""
    state = given(ENROLLED, allocated(400_000, 400_000))
    events = families.decide(state, allocate(400_000, today=date(2027, 4, 1)))
    assert events == [allocated(400_000, 400_000, date(2027, 4, 1), date(2028, 3, 31))]


def test_named_period_must_be_a_period_of_the_family() -> None:
    """A period starts on the enrolment date or a whole number of periods after."""
    with pytest.raises(UnprocessableError):
        families.decide(given(ENROLLED), allocate(1, start=date(2026, 5, 1)))
    with pytest.raises(UnprocessableError):
        families.decide(
            given(ENROLLED), allocate(1, start=date(2026, 4, 1), end=date(2026, 12, 31))
        )


def adjust(delta: int, reduced: families.Reduced | None = None) -> families.AdjustBudget:
    return families.AdjustBudget(
        adjustment_id=ID,
        delta_pence=delta,
        reason="r",
        period_start=None,
        today=date(2026, 6, 1),
        config=CONFIG,
        period_lengths=LENGTHS,
        reduced=reduced or {},
    )


def test_a_cut_is_only_requested_here() -> None:
    """Allocation records a cut for approval to decide; it does not lower the allocation."""
    state = given(ENROLLED, allocated(300_000, 300_000))
    [event] = families.decide(state, adjust(-100_000))
    assert event == contract.BudgetReductionRequested(
        reduction_id=ID,
        amount_pence=100_000,
        reason="r",
        period_start=date(2026, 4, 1),
        period_end=date(2027, 3, 31),
    )
    assert families.evolve(state, event).allocated == state.allocated


def test_a_cut_larger_than_the_allocation_is_refused_at_once() -> None:
    """What approval would refuse anyway is refused here, counting accepted cuts."""
    state = given(ENROLLED, allocated(300_000, 300_000))
    families.decide(state, adjust(-300_000))
    with pytest.raises(PolicyViolationError) as refused:
        families.decide(state, adjust(-300_001))
    assert refused.value.code == "exceeds_allocation"
    with pytest.raises(PolicyViolationError):
        families.decide(state, adjust(-200_001, reduced={date(2026, 4, 1): 100_000}))


def test_a_top_up_is_capped_net_of_accepted_cuts() -> None:
    """A top-up applies at once; the cap counts what approval's accepted cuts took away."""
    state = given(ENROLLED, allocated(300_000, 300_000))
    [event] = families.decide(state, adjust(100_000))
    assert isinstance(event, contract.BudgetAdjusted)
    assert event.period_allocated_pence == 400_000
    with pytest.raises(PolicyViolationError):
        families.decide(state, adjust(100_001))
    [event] = families.decide(state, adjust(150_000, reduced={date(2026, 4, 1): 50_000}))
    assert isinstance(event, contract.BudgetAdjusted)
    assert event.period_allocated_pence == 400_000
    [event] = families.decide(state, allocate(150_000, reduced={date(2026, 4, 1): 50_000}))
    assert isinstance(event, contract.BudgetAllocated)
    assert event.period_allocated_pence == 400_000


def test_exit_records_the_balance_and_stops_allocations() -> None:
    """An exited family gets no new money, and cannot exit twice."""
    state = given(ENROLLED, allocated(300_000, 300_000))
    exit_ = families.ExitFamily(
        reason="closed",
        exited_on=date(2026, 9, 1),
        today=date(2026, 9, 1),
        config=CONFIG,
        period_lengths=LENGTHS,
        spend={date(2026, 4, 1): families.Spend(committed_pence=10_000, spent_pence=50_000)},
        reduced={date(2026, 4, 1): 20_000},
    )
    [event] = families.decide(state, exit_)
    assert isinstance(event, contract.FamilyExited)
    assert event.allocated_pence == 280_000
    assert event.available_pence == 220_000
    state = families.evolve(state, event)
    with pytest.raises(UnprocessableError):
        families.decide(state, allocate(1))
    with pytest.raises(ConflictError):
        families.decide(state, exit_)


def test_control_families_get_no_budget_but_outcomes() -> None:
    """The control arm is for comparison: outcomes yes, money no."""
    state = given(ENROLLED.model_copy(update={"arm": "control"}))
    with pytest.raises(UnprocessableError):
        families.decide(state, allocate(1))
    outcome = families.RecordOutcome(outcome="entered_care", occurred_on=date(2026, 8, 1))
    assert families.decide(state, outcome) == [
        contract.OutcomeRecorded(outcome="entered_care", occurred_on=date(2026, 8, 1))
    ]


def test_unknown_family_is_not_found() -> None:
    """Commands on a family never enrolled are refused."""
    with pytest.raises(NotFoundError):
        families.decide(given(), allocate(1))


@hypothesis_given(
    enrolled=st.dates(date(2020, 1, 1), date(2030, 12, 31)),
    months=st.integers(1, 24),
    offset=st.integers(0, 3000),
)
def test_periods_tile_time_from_enrolment(enrolled: date, months: int, offset: int) -> None:
    """Every day after enrolment lies in exactly one period, which starts on a period boundary."""
    day = date.fromordinal(enrolled.toordinal() + offset)
    lengths = (PeriodLength(since=ALWAYS, months=months),)
    period = period_containing(enrolled, lengths, day)
    assert period.start <= day <= period.end
    following = period_containing(enrolled, lengths, date.fromordinal(period.end.toordinal() + 1))
    assert following.start.toordinal() == period.end.toordinal() + 1
    assert period_containing(enrolled, lengths, period.start) == period


@hypothesis_given(
    enrolled=st.dates(date(2020, 1, 1), date(2030, 12, 31)),
    changes=st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 24)), min_size=1, max_size=4),
    first=st.integers(1, 24),
    days=st.lists(st.integers(0, 4000), min_size=2, max_size=6),
)
def test_a_change_of_period_months_never_opens_an_overlapping_period(
    enrolled: date, changes: list[tuple[int, int]], first: int, days: list[int]
) -> None:
    """However period_months changes over time, every day after enrolment lies in exactly
    one period, periods follow each other without gap or overlap, and a period that began
    before a change keeps the length it began with."""
    lengths: tuple[PeriodLength, ...] = (PeriodLength(since=ALWAYS, months=first),)
    for offset, months in sorted(changes):
        lengths = lengths_after(lengths, months, date.fromordinal(enrolled.toordinal() + offset))
    for offset in days:
        day = date.fromordinal(enrolled.toordinal() + offset)
        period = period_containing(enrolled, lengths, day)
        assert period.start <= day <= period.end
        after = period_containing(enrolled, lengths, date.fromordinal(period.end.toordinal() + 1))
        assert after.start.toordinal() == period.end.toordinal() + 1
        assert period_containing(enrolled, lengths, period.start) == period
        began_under = max((x for x in lengths if x.since <= period.start), key=lambda x: x.since)
        assert months_of(period) == began_under.months


def months_of(period: Period) -> int:
    """How many calendar months a period spans, from its start to the day after its end."""
    following = date.fromordinal(period.end.toordinal() + 1)
    return (following.year - period.start.year) * 12 + following.month - period.start.month
