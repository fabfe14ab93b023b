"""The decision aggregate: how a spend request is decided, and its hold released.

Stream ``decision:<pilot_id>:<request_id>``. The pilot's policy version in force when the
request was made judges it: within an ``auto`` tier and affordable, approved at once (a
hold for the full amount); not affordable, rejected (``insufficient_funds``); otherwise
referred to a manager of the family's team, who approves (affordability checked again) or
rejects. Closing or withdrawing an approved request releases what was not bought. The
events are approval's contract (:mod:`shared.contracts.approval`).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from uuid import UUID

from pydantic import Field

from shared.contracts.allocation import ApprovalTier
from shared.contracts.allocation import approver_for as tiers_approver
from shared.contracts.approval import (
    DECISION_STREAM,
    REGISTRY,
    HoldReleased,
    RequestApproved,
    RequestReferred,
    RequestRejected,
)
from shared.core.deciders import Decider
from shared.core.errors import ConflictError, ForbiddenError, UnprocessableError
from shared.core.events import DomainEvent, Frozen

__all__ = [
    "DECIDER",
    "Command",
    "DecideAutomatically",
    "DecideByManager",
    "DecisionState",
    "Policy",
    "ReleaseHold",
    "RequestFacts",
    "approver_for",
    "decide",
    "evolve",
    "initial_state",
]


class Policy(Frozen):
    """The part of a pilot's configuration that decides requests."""

    version: int
    tiers: tuple[ApprovalTier, ...] = ()


def approver_for(policy: Policy, amount_pence: int) -> Literal["auto", "manager"]:
    """The first tier the amount fits in decides; above the last tier, a manager."""
    return tiers_approver(policy.tiers, amount_pence)


class RequestFacts(Frozen):
    """What approval knows of a request from spending's event."""

    request_id: UUID
    family_id: str
    team: str
    amount_pence: int
    requested_by: str
    requested_at: datetime
    received_at: datetime | None  # approval's clock; None if recorded before it was kept
    period_start: date
    period_end: date


# Commands


class DecideAutomatically(Frozen):
    """Apply the policy to a request as it arrives."""

    request: RequestFacts
    policy: Policy
    available_pence: int
    decided_at: datetime


class DecideByManager(Frozen):
    """A manager approves or rejects a referred request."""

    request: RequestFacts
    approve: bool
    manager: str
    manager_team: str | None
    note: str | None = Field(description="Sealed free text.")
    policy_version: int
    available_pence: int
    withdrawn: bool
    decided_at: datetime


class ReleaseHold(Frozen):
    """Spending closed or withdrew the request: release what was approved and not bought."""

    request: RequestFacts
    purchased_pence: int
    cause: Literal["closed", "withdrawn"]


Command = DecideAutomatically | DecideByManager | ReleaseHold

# State


class DecisionState(Frozen):
    """Where a request stands with approval."""

    status: Literal["new", "referred", "approved", "rejected", "released"] = "new"
    approved_pence: int = 0


def initial_state() -> DecisionState:
    """A request approval has not decided."""
    return DecisionState()


def evolve(state: DecisionState, event: DomainEvent) -> DecisionState:
    """The decision after one event."""
    if isinstance(event, RequestReferred):
        return state.model_copy(update={"status": "referred"})
    if isinstance(event, RequestApproved):
        return state.model_copy(
            update={"status": "approved", "approved_pence": event.approved_pence}
        )
    if isinstance(event, RequestRejected):
        return state.model_copy(update={"status": "rejected"})
    if isinstance(event, HoldReleased):
        return state.model_copy(update={"status": "released"})
    return state


def _facts(
    request: RequestFacts, policy_version: int, decided_at: datetime, by: str
) -> dict[str, object]:
    return {
        "request_id": request.request_id,
        "family_id": request.family_id,
        "amount_pence": request.amount_pence,
        "policy_version": policy_version,
        "requested_at": request.requested_at,
        "received_at": request.received_at,
        "decided_at": decided_at,
        "decided_by": by,
        "period_start": request.period_start,
        "period_end": request.period_end,
    }


def decide(state: DecisionState, command: Command) -> list[DomainEvent]:
    """The events a command produces, or the error that refuses it."""
    if isinstance(command, DecideAutomatically):
        return _decide_automatically(state, command)
    if isinstance(command, DecideByManager):
        return _decide_by_manager(state, command)
    return _release_hold(state, command)


def _release_hold(state: DecisionState, command: ReleaseHold) -> list[DomainEvent]:
    if state.status != "approved":
        return []  # nothing is held: a request never approved, or already released
    released = state.approved_pence - command.purchased_pence
    return [
        HoldReleased(
            request_id=command.request.request_id,
            released_pence=max(0, released),
            cause=command.cause,
            period_start=command.request.period_start,
            period_end=command.request.period_end,
        )
    ]


def _decide_automatically(state: DecisionState, command: DecideAutomatically) -> list[DomainEvent]:
    if state.status != "new":
        return []  # decided already (a redelivered request)
    request, policy = command.request, command.policy
    facts = _facts(request, policy.version, command.decided_at, "policy")
    if request.amount_pence > command.available_pence:
        return [
            RequestRejected(
                reason_code="insufficient_funds", available_pence=command.available_pence, **facts
            )
        ]
    if approver_for(policy, request.amount_pence) == "auto":
        return [RequestApproved(approved_pence=request.amount_pence, rule="auto_tier", **facts)]
    return [RequestReferred(team=request.team, **facts)]


def _decide_by_manager(state: DecisionState, command: DecideByManager) -> list[DomainEvent]:
    request = command.request
    if command.manager_team != request.team:
        raise ForbiddenError("this request belongs to another team", code="forbidden_team")
    if command.manager == request.requested_by:
        raise ForbiddenError("a manager cannot decide their own request", code="self_approval")
    if command.withdrawn:
        raise ConflictError("the request was withdrawn", code="request_withdrawn")
    if state.status != "referred":
        raise ConflictError(
            f"the request is not awaiting a manager (it is {state.status})", code="not_pending"
        )
    facts = _facts(request, command.policy_version, command.decided_at, command.manager)
    if not command.approve:
        return [RequestRejected(reason_code="manager", reason=command.note, **facts)]
    if request.amount_pence > command.available_pence:
        raise UnprocessableError(
            f"the family has {command.available_pence} pence available, less than the "
            f"{request.amount_pence} pence requested",
            code="insufficient_funds",
        )
    return [
        RequestApproved(
            approved_pence=request.amount_pence, rule="manager", note=command.note, **facts
        )
    ]


DECIDER = Decider(DECISION_STREAM, initial_state, evolve, decide, REGISTRY)
