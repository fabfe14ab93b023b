"""The family aggregate: enrolment, budget periods, allocations, adjustments, exit, outcomes.

Stream ``family:<pilot_id>:<family_id>``. A family's budget periods run from its enrolment
date in steps of the pilot's ``period_months``; allocations and adjustments belong to one
period, and the pilot's ``family_cap_pence`` bounds each period's total. A cut is only
requested here: approval, which guards what is available against holds, accepts or refuses
it (:mod:`shared.contracts.balances` says why that is safe), so the state keeps what
allocation gave each period and the handler passes in the cuts it has heard were accepted.
The events are
allocation's contract (:mod:`shared.contracts.allocation`); one function per command
decides them.

Free text (notes, reasons) arrives here already sealed (:mod:`shared.core.personal`): the
decider carries it, never reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any
from uuid import UUID

from pydantic import Field

from shared.contracts.allocation import (
    FAMILY_STREAM,
    REGISTRY,
    Arm,
    BudgetAdjusted,
    BudgetAllocated,
    BudgetDisclosed,
    BudgetReductionRequested,
    DisclosureMethod,
    ErasureBasis,
    FamilyEnrolled,
    FamilyExited,
    Outcome,
    OutcomeRecorded,
    PersonalDataErased,
    PilotConfig,
)
from shared.contracts.periods import Period, PeriodLength, period_containing
from shared.core.deciders import Decider
from shared.core.errors import (
    ConflictError,
    NotFoundError,
    PolicyViolationError,
    UnprocessableError,
)
from shared.core.events import DomainEvent, Frozen

__all__ = [
    "DECIDER",
    "AdjustBudget",
    "AllocateBudget",
    "Command",
    "DiscloseBudget",
    "EnrolFamily",
    "ErasePersonalData",
    "ExitFamily",
    "FamilyState",
    "RecordOutcome",
    "Reduced",
    "Spend",
    "decide",
    "evolve",
    "initial_state",
]


# Commands: the handler loads the pilot's configuration in force and passes it in.

Reduced = dict[date, int]
"""The cuts approval accepted that allocation has heard of, by period start (pence)."""


class EnrolFamily(Frozen):
    """Enrol a family in the pilot with the arm the register gave it."""

    family_id: str
    team: str
    worker: str
    enrolled_on: date
    stratum: str | None
    arm: Arm
    pilot_version: int


class AllocateBudget(Frozen):
    """Allocate money to a family for a period (the current one unless named)."""

    allocation_id: UUID
    amount_pence: int
    period_start: date | None
    period_end: date | None
    note: str | None
    today: date
    config: PilotConfig
    period_lengths: tuple[PeriodLength, ...]
    pilot_version: int
    reduced: Reduced


class Spend(Frozen):
    """What approval and spending have committed and spent in one period, as known here."""

    committed_pence: int = 0
    spent_pence: int = 0


class AdjustBudget(Frozen):
    """Raise a period's allocation (a top-up), or ask approval to lower it (a cut)."""

    adjustment_id: UUID
    delta_pence: int
    reason: str
    period_start: date | None
    today: date
    config: PilotConfig
    period_lengths: tuple[PeriodLength, ...]
    reduced: Reduced


class ExitFamily(Frozen):
    """The family leaves the pilot: no new requests afterwards."""

    reason: str
    exited_on: date
    today: date
    config: PilotConfig
    period_lengths: tuple[PeriodLength, ...]
    spend: dict[date, Spend] = Field(description="By period start.")
    reduced: Reduced


class DiscloseBudget(Frozen):
    """The family was told what their budget is."""

    disclosed_on: date
    amount_disclosed_pence: int | None
    method: DisclosureMethod


class RecordOutcome(Frozen):
    """What happened to the family, for evaluation by arm."""

    outcome: Outcome
    occurred_on: date


class ErasePersonalData(Frozen):
    """The family's free text is to be made unreadable; amounts and history stay."""

    basis: ErasureBasis
    erased_on: date
    keys_erased: int


Command = (
    EnrolFamily
    | AllocateBudget
    | AdjustBudget
    | ExitFamily
    | DiscloseBudget
    | RecordOutcome
    | ErasePersonalData
)


# State


class FamilyState(Frozen):
    """What decisions about a family need."""

    enrolled: bool = False
    family_id: str | None = None
    team: str | None = None
    worker: str | None = None
    stratum: str | None = None
    arm: Arm | None = None
    enrolled_on: date | None = None
    exited_on: date | None = None
    exit_reason: str | None = None
    # Period start -> what allocation gave it: allocations and top-ups, before approval's cuts.
    allocated: dict[date, int] = Field(default_factory=dict)
    period_ends: dict[date, date] = Field(default_factory=dict)
    disclosures: int = 0
    outcomes: tuple[tuple[Outcome, date], ...] = ()

    def require(self) -> FamilyState:
        """The state of an enrolled family, or NotFoundError."""
        if not self.enrolled:
            raise NotFoundError("no such family in this pilot")
        return self

    @property
    def enrolment_date(self) -> date:
        """The enrolment date of an enrolled family."""
        if self.enrolled_on is None:  # pragma: no cover - guarded by require()
            raise NotFoundError("no such family in this pilot")
        return self.enrolled_on


def initial_state() -> FamilyState:
    """A family before enrolment."""
    return FamilyState()


def evolve(state: FamilyState, event: DomainEvent) -> FamilyState:
    """The family after one event."""
    if isinstance(event, FamilyEnrolled):
        return state.model_copy(
            update={
                "enrolled": True,
                "family_id": event.family_id,
                "team": event.team,
                "worker": event.worker,
                "stratum": event.stratum,
                "arm": event.arm,
                "enrolled_on": event.enrolled_on,
            }
        )
    if isinstance(event, BudgetAllocated | BudgetAdjusted):
        given = event.amount_pence if isinstance(event, BudgetAllocated) else event.delta_pence
        start = event.period_start
        return state.model_copy(
            update={
                "allocated": {**state.allocated, start: state.allocated.get(start, 0) + given},
                "period_ends": {**state.period_ends, start: event.period_end},
            }
        )
    if isinstance(event, FamilyExited):
        return state.model_copy(update={"exited_on": event.exited_on, "exit_reason": event.reason})
    if isinstance(event, BudgetDisclosed):
        return state.model_copy(update={"disclosures": state.disclosures + 1})
    if isinstance(event, OutcomeRecorded):
        return state.model_copy(
            update={"outcomes": (*state.outcomes, (event.outcome, event.occurred_on))}
        )
    return state


def _resolve_period(
    state: FamilyState,
    lengths: tuple[PeriodLength, ...],
    today: date,
    start: date | None,
    end: date | None,
) -> Period:
    enrolled_on = state.enrolment_date
    if start is None:
        if end is not None:
            raise UnprocessableError("give period_start with period_end", code="invalid_period")
        return period_containing(enrolled_on, lengths, max(today, enrolled_on))
    period = period_containing(enrolled_on, lengths, start)
    if start < enrolled_on or period.start != start:
        raise UnprocessableError(
            f"periods start on the enrolment date ({enrolled_on}) and run back to back, each "
            f"as long as the pilot's period_months when it starts; {start} is not a period "
            f"start (the period containing it starts on {period.start})",
            code="invalid_period",
        )
    if end is not None and end != period.end:
        raise UnprocessableError(
            f"the period starting {period.start} ends on {period.end}", code="invalid_period"
        )
    return period


def _allocated(state: FamilyState, reduced: Reduced, period_start: date) -> int:
    """The period's allocation as allocation knows it: what it gave, less accepted cuts."""
    return state.allocated.get(period_start, 0) - reduced.get(period_start, 0)


def _refuse_exited(state: FamilyState) -> None:
    if state.exited_on is not None:
        raise UnprocessableError(
            f"the family left the pilot on {state.exited_on}", code="family_exited"
        )


def _refuse_control(state: FamilyState) -> None:
    if state.arm == "control":
        raise UnprocessableError(
            "the family is in the control arm and has no budget", code="control_arm"
        )


def _within_cap(config: PilotConfig, total: int) -> None:
    if total > config.family_cap_pence:
        raise PolicyViolationError(
            f"the period's allocation would be {total} pence, above the family cap of "
            f"{config.family_cap_pence} pence",
            code="exceeds_family_cap",
        )


def _enrol(state: FamilyState, command: EnrolFamily) -> list[DomainEvent]:
    if state.enrolled:
        raise ConflictError("this family is already enrolled", code="already_enrolled")
    return [FamilyEnrolled(**command.model_dump())]


def _allocate(state: FamilyState, command: AllocateBudget) -> list[DomainEvent]:
    _refuse_exited(state)
    _refuse_control(state)
    period = _resolve_period(
        state, command.period_lengths, command.today, command.period_start, command.period_end
    )
    total = _allocated(state, command.reduced, period.start) + command.amount_pence
    _within_cap(command.config, total)
    return [
        BudgetAllocated(
            allocation_id=command.allocation_id,
            amount_pence=command.amount_pence,
            period_start=period.start,
            period_end=period.end,
            note=command.note,
            pilot_version=command.pilot_version,
            period_allocated_pence=total,
        )
    ]


def _adjust(state: FamilyState, command: AdjustBudget) -> list[DomainEvent]:
    _refuse_exited(state)
    _refuse_control(state)
    period = _resolve_period(
        state, command.period_lengths, command.today, command.period_start, None
    )
    total = _allocated(state, command.reduced, period.start) + command.delta_pence
    if command.delta_pence < 0:
        # Cuts already accepted may not have reached allocation, so ``total`` can only be
        # too high: a cut refused here would be refused by approval too.
        if total < 0:
            raise PolicyViolationError(
                f"the period's allocation is at most {total - command.delta_pence} pence; "
                f"a cut of {-command.delta_pence} pence would take it below zero",
                code="exceeds_allocation",
            )
        return [
            BudgetReductionRequested(
                reduction_id=command.adjustment_id,
                amount_pence=-command.delta_pence,
                reason=command.reason,
                period_start=period.start,
                period_end=period.end,
            )
        ]
    _within_cap(command.config, total)
    return [
        BudgetAdjusted(
            adjustment_id=command.adjustment_id,
            delta_pence=command.delta_pence,
            reason=command.reason,
            period_start=period.start,
            period_end=period.end,
            period_allocated_pence=total,
        )
    ]


def _exit(state: FamilyState, command: ExitFamily) -> list[DomainEvent]:
    if state.exited_on is not None:
        raise ConflictError(f"the family already left on {state.exited_on}", code="already_exited")
    if command.exited_on < state.enrolment_date:
        raise UnprocessableError(
            "a family cannot leave before it was enrolled", code="invalid_date"
        )
    current = period_containing(
        state.enrolment_date, command.period_lengths, max(command.today, state.enrolment_date)
    )
    allocated = _allocated(state, command.reduced, current.start)
    spend = command.spend.get(current.start, Spend())
    return [
        FamilyExited(
            reason=command.reason,
            exited_on=command.exited_on,
            period_start=current.start,
            period_end=current.end,
            allocated_pence=allocated,
            committed_pence=spend.committed_pence,
            spent_pence=spend.spent_pence,
            available_pence=allocated - spend.committed_pence - spend.spent_pence,
        )
    ]


def _disclose(state: FamilyState, command: DiscloseBudget) -> list[DomainEvent]:
    _refuse_control(state)
    if command.disclosed_on < state.enrolment_date:
        raise UnprocessableError("a disclosure cannot precede enrolment", code="invalid_date")
    return [BudgetDisclosed(**command.model_dump())]


def _record_outcome(state: FamilyState, command: RecordOutcome) -> list[DomainEvent]:
    if command.occurred_on < state.enrolment_date:
        raise UnprocessableError("an outcome cannot precede enrolment", code="invalid_date")
    return [OutcomeRecorded(**command.model_dump())]


def _erase(_: FamilyState, command: ErasePersonalData) -> list[DomainEvent]:
    return [PersonalDataErased(**command.model_dump())]


# Every command but enrolment is for an enrolled family (NotFoundError otherwise).
_RULES: dict[type[Frozen], Callable[[FamilyState, Any], list[DomainEvent]]] = {
    AllocateBudget: _allocate,
    AdjustBudget: _adjust,
    ExitFamily: _exit,
    DiscloseBudget: _disclose,
    RecordOutcome: _record_outcome,
    ErasePersonalData: _erase,
}


def decide(state: FamilyState, command: Command) -> list[DomainEvent]:
    """The events a command produces, or the error that refuses it."""
    if isinstance(command, EnrolFamily):
        return _enrol(state, command)
    return _RULES[type(command)](state.require(), command)


DECIDER = Decider(FAMILY_STREAM, initial_state, evolve, decide, REGISTRY)
