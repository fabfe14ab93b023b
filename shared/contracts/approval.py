"""The contract of ``ledger.approval``: decisions on spend requests and the holds they place,
and on cuts to a family's budget.

Approval publishes these events; spending reads the outcome of each request, allocation the
outcome of each cut, and every balance (allocation's, reporting's, approval's own) sums the
holds and the cuts. A change to an event's
shape is a new ``schema_version`` with an upcaster.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from uuid import UUID

from pydantic import Field

from shared.core.events import DomainEvent, EventRegistry
from shared.core.topics import TopicContract

__all__ = [
    "CONTRACT",
    "DECISION_STREAM",
    "REDUCTION_STREAM",
    "REGISTRY",
    "TOPIC",
    "BudgetReduced",
    "BudgetReductionRefused",
    "DecisionMade",
    "HoldReleased",
    "ReductionDecided",
    "RequestApproved",
    "RequestReferred",
    "RequestRejected",
]

TOPIC = "ledger.approval"
DECISION_STREAM = "decision"
"""The category of decisions' streams, ``decision:<pilot_id>:<request_id>``."""
REDUCTION_STREAM = "reduction"
"""The category of decided cuts' streams, ``reduction:<pilot_id>:<reduction_id>``."""


class DecisionMade(DomainEvent):
    """What every decision on a request says: whose, how much, under which policy, when."""

    request_id: UUID
    family_id: str
    amount_pence: int
    policy_version: int
    requested_at: datetime
    received_at: datetime | None = Field(
        default=None,
        description="When approval recorded the request, on the clock decided_at is read "
        "from: the time to decide is decided_at less this, one clock's two readings. None "
        "in decisions recorded before it was kept.",
    )
    decided_at: datetime
    decided_by: str = Field(description="The manager, or 'policy' for an automatic decision.")
    period_start: date
    period_end: date


class RequestReferred(DecisionMade):
    """The request needs a manager of the family's team."""

    event_type = "decision.referred"
    team: str


class RequestApproved(DecisionMade):
    """The request is approved: a hold of ``approved_pence`` on the family's balance."""

    event_type = "decision.approved"
    approved_pence: int
    rule: Literal["auto_tier", "manager"]
    note: str | None = None


class RequestRejected(DecisionMade):
    """The request is refused."""

    event_type = "decision.rejected"
    reason_code: Literal["insufficient_funds", "manager"]
    available_pence: int | None = None
    reason: str | None = Field(default=None, description="Sealed free text (manager's reason).")


class HoldReleased(DomainEvent):
    """What was approved and not bought returns to the family's available balance."""

    event_type = "decision.hold_released"
    request_id: UUID
    released_pence: int
    cause: Literal["closed", "withdrawn"]
    period_start: date
    period_end: date


class ReductionDecided(DomainEvent):
    """What every decision on a budget cut says: which cut, of how much, in which period."""

    reduction_id: UUID
    amount_pence: int
    period_start: date
    period_end: date
    decided_at: datetime
    available_pence: int = Field(description="The period's available balance after the decision.")


class BudgetReduced(ReductionDecided):
    """The cut is accepted: the period's allocation falls by ``amount_pence``."""

    event_type = "decision.budget_reduced"


class BudgetReductionRefused(ReductionDecided):
    """The cut is refused: what is held and spent leaves less available than the cut."""

    event_type = "decision.budget_reduction_refused"
    reason_code: Literal["insufficient_funds"] = "insufficient_funds"


REGISTRY = EventRegistry(
    (
        RequestReferred,
        RequestApproved,
        RequestRejected,
        HoldReleased,
        BudgetReduced,
        BudgetReductionRefused,
    )
)

CONTRACT = TopicContract(TOPIC, REGISTRY, frozenset({DECISION_STREAM, REDUCTION_STREAM}))
"""What ``ledger.approval`` carries: these events, on decisions' and cuts' streams."""
