"""The reduction aggregate: whether a cut to a family's budget is affordable.

Stream ``reduction:<pilot_id>:<reduction_id>``, one decision each. Allocation records the
cut an admin asked for (``family.budget_reduction_requested``); approval decides it with
the period's balance row locked, as it decides holds, so a cut and a hold are never both
judged against the same ``available``. Accepted only if what is available covers the cut.
The events are approval's contract (:mod:`shared.contracts.approval`).
"""

from __future__ import annotations

from datetime import datetime

from shared.contracts.allocation import BudgetReductionRequested
from shared.contracts.approval import (
    REDUCTION_STREAM,
    REGISTRY,
    BudgetReduced,
    BudgetReductionRefused,
)
from shared.core.deciders import Decider
from shared.core.events import DomainEvent, Frozen

__all__ = ["DECIDER", "DecideReduction", "ReductionState", "decide", "evolve", "initial_state"]


class DecideReduction(Frozen):
    """Judge a requested cut against the period's available balance (locked)."""

    reduction: BudgetReductionRequested
    available_pence: int
    decided_at: datetime


class ReductionState(Frozen):
    """Whether the cut was decided."""

    decided: bool = False


def initial_state() -> ReductionState:
    """A cut not yet decided."""
    return ReductionState()


def evolve(state: ReductionState, event: DomainEvent) -> ReductionState:
    """The cut after one event."""
    if isinstance(event, BudgetReduced | BudgetReductionRefused):
        return ReductionState(decided=True)
    return state


def decide(state: ReductionState, command: DecideReduction) -> list[DomainEvent]:
    """Accept the cut if the balance covers it, else refuse; a decided cut stays decided."""
    if state.decided:
        return []
    cut = command.reduction
    facts = {
        "reduction_id": cut.reduction_id,
        "amount_pence": cut.amount_pence,
        "period_start": cut.period_start,
        "period_end": cut.period_end,
        "decided_at": command.decided_at,
    }
    if cut.amount_pence <= command.available_pence:
        return [BudgetReduced(**facts, available_pence=command.available_pence - cut.amount_pence)]
    return [BudgetReductionRefused(**facts, available_pence=command.available_pence)]


DECIDER = Decider(REDUCTION_STREAM, initial_state, evolve, decide, REGISTRY)
