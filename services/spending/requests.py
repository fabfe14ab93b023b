"""The spend request aggregate: request, withdraw, purchases, refunds, close.

Stream ``request:<pilot_id>:<request_id>``. Approval decides on requests in its own
service; the handler passes approval's decision, as spending has consumed it, into the
commands that depend on it (purchases and closing need an approved amount). The events are
spending's contract (:mod:`shared.contracts.spending`); one function per command decides
them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import Field

from shared.contracts.spending import (
    REGISTRY,
    REQUEST_STREAM,
    PurchaseMethod,
    PurchaseRecorded,
    PurchaseRefunded,
    RequestClosed,
    SpendRequested,
    SpendWithdrawn,
)
from shared.core.deciders import Decider
from shared.core.errors import ConflictError, NotFoundError, UnprocessableError
from shared.core.events import DomainEvent, Frozen
from shared.core.problems import ProblemCode

__all__ = [
    "DECIDER",
    "CloseRequest",
    "Command",
    "Decision",
    "RecordPurchase",
    "RefundPurchase",
    "RequestSpend",
    "RequestState",
    "Status",
    "WithdrawRequest",
    "decide",
    "evolve",
    "initial_state",
    "status_of",
]

Status = Literal[
    "submitted",
    "awaiting_approval",
    "approved",
    "rejected",
    "withdrawn",
    "partially_spent",
    "spent",
    "closed",
]


class Decision(Frozen):
    """Approval's decision on a request, as spending has consumed it."""

    outcome: Literal["referred", "approved", "rejected"]
    approved_pence: int = 0
    decided_at: datetime | None = None


# Commands


class RequestSpend(Frozen):
    """A worker asks to spend money with a family."""

    request_id: UUID
    family_id: str
    team: str
    amount_pence: int
    category: str
    purpose: str = Field(description="Sealed free text.")
    requested_by: str
    family_involved: bool
    needed_by: date | None
    pilot_version: int
    allocation_version: int
    period_start: date
    period_end: date


class WithdrawRequest(Frozen):
    """The request is no longer wanted; only before any purchase."""

    reason: str
    decision: Decision | None


class RecordPurchase(Frozen):
    """Money was spent against an approved request."""

    purchase_id: UUID
    amount_pence: int
    purchased_on: date
    method: PurchaseMethod
    vendor: str | None
    receipt_ref: str | None
    decision: Decision | None


class RefundPurchase(Frozen):
    """Money came back from a purchase."""

    refund_id: UUID
    purchase_id: UUID
    amount_pence: int
    reason: str


class CloseRequest(Frozen):
    """Nothing more will be bought: the unspent part of the approval is released."""

    decision: Decision | None


Command = RequestSpend | WithdrawRequest | RecordPurchase | RefundPurchase | CloseRequest


# State


class RequestState(Frozen):
    """What decisions about a request need."""

    request: SpendRequested | None = None
    withdrawn: bool = False
    closed: bool = False
    purchases: dict[UUID, int] = Field(default_factory=dict)
    refunds: dict[UUID, int] = Field(default_factory=dict)  # purchase id -> refunded

    def require(self) -> SpendRequested:
        """The request, or NotFoundError."""
        if self.request is None:
            raise NotFoundError("no such spend request")
        return self.request

    @property
    def purchased_pence(self) -> int:
        """Every purchase, refunds not deducted."""
        return sum(self.purchases.values())

    @property
    def spent_pence(self) -> int:
        """Purchases minus refunds."""
        return self.purchased_pence - sum(self.refunds.values())


def initial_state() -> RequestState:
    """A request before it is made."""
    return RequestState()


def evolve(state: RequestState, event: DomainEvent) -> RequestState:
    """The request after one event."""
    if isinstance(event, SpendRequested):
        return state.model_copy(update={"request": event})
    if isinstance(event, SpendWithdrawn):
        return state.model_copy(update={"withdrawn": True})
    if isinstance(event, PurchaseRecorded):
        return state.model_copy(
            update={"purchases": {**state.purchases, event.purchase_id: event.amount_pence}}
        )
    if isinstance(event, PurchaseRefunded):
        refunded = state.refunds.get(event.purchase_id, 0) + event.amount_pence
        return state.model_copy(update={"refunds": {**state.refunds, event.purchase_id: refunded}})
    if isinstance(event, RequestClosed):
        return state.model_copy(update={"closed": True})
    return state


def status_of(state: RequestState, decision: Decision | None) -> Status:  # noqa: PLR0911 - a status per case
    """The request's status, from its own events and approval's decision."""
    if state.withdrawn:
        return "withdrawn"
    if state.closed:
        return "closed"
    if decision is None:
        return "submitted"
    if decision.outcome == "referred":
        return "awaiting_approval"
    if decision.outcome == "rejected":
        return "rejected"
    if state.purchased_pence == 0:
        return "approved"
    if state.purchased_pence < decision.approved_pence:
        return "partially_spent"
    return "spent"


# A request that is over answers which way it ended.
_REFUSED_AS: dict[str, ProblemCode] = {
    "withdrawn": "request_withdrawn",
    "closed": "request_closed",
    "rejected": "request_rejected",
}


def _approved(state: RequestState, decision: Decision | None, doing: str) -> int:
    status = status_of(state, decision)
    if status in {"withdrawn", "closed"}:
        raise ConflictError(f"the request is {status}", code=_REFUSED_AS[status])
    if decision is None or decision.outcome != "approved":
        raise UnprocessableError(
            f"cannot {doing}: the request is {status}, not approved", code="not_approved"
        )
    return decision.approved_pence


def _request(state: RequestState, command: RequestSpend) -> list[DomainEvent]:
    if state.request is not None:
        raise ConflictError("this request already exists", code="already_requested")
    return [SpendRequested(**command.model_dump())]


def _withdraw(state: RequestState, command: WithdrawRequest) -> list[DomainEvent]:
    request = state.require()
    status = status_of(state, command.decision)
    if status in {"withdrawn", "closed", "rejected"}:
        raise ConflictError(f"the request is {status}", code=_REFUSED_AS[status])
    if state.purchases:
        raise UnprocessableError(
            "a request with purchases cannot be withdrawn; close it instead",
            code="already_purchased",
        )
    return [SpendWithdrawn(request_id=request.request_id, reason=command.reason)]


def _purchase(state: RequestState, command: RecordPurchase) -> list[DomainEvent]:
    request = state.require()
    approved = _approved(state, command.decision, "record a purchase")
    if state.purchased_pence + command.amount_pence > approved:
        raise UnprocessableError(
            f"purchases would total {state.purchased_pence + command.amount_pence} pence, "
            f"above the {approved} pence approved",
            code="exceeds_approved",
        )
    return [
        PurchaseRecorded(
            request_id=request.request_id,
            category=request.category,
            period_start=request.period_start,
            period_end=request.period_end,
            **command.model_dump(exclude={"decision"}),
        )
    ]


def _refund(state: RequestState, command: RefundPurchase) -> list[DomainEvent]:
    request = state.require()
    purchased = state.purchases.get(command.purchase_id)
    if purchased is None:
        raise NotFoundError("no such purchase on this request")
    refunded = state.refunds.get(command.purchase_id, 0) + command.amount_pence
    if refunded > purchased:
        raise UnprocessableError(
            f"refunds would total {refunded} pence, above the {purchased} pence purchase",
            code="exceeds_purchase",
        )
    return [
        PurchaseRefunded(
            request_id=request.request_id,
            category=request.category,
            period_start=request.period_start,
            period_end=request.period_end,
            **command.model_dump(),
        )
    ]


def _close(state: RequestState, command: CloseRequest) -> list[DomainEvent]:
    request = state.require()
    _approved(state, command.decision, "close")
    return [RequestClosed(request_id=request.request_id, purchased_pence=state.purchased_pence)]


_RULES: dict[type[Frozen], Callable[[RequestState, Any], list[DomainEvent]]] = {
    RequestSpend: _request,
    WithdrawRequest: _withdraw,
    RecordPurchase: _purchase,
    RefundPurchase: _refund,
    CloseRequest: _close,
}


def decide(state: RequestState, command: Command) -> list[DomainEvent]:
    """The events a command produces, or the error that refuses it."""
    return _RULES[type(command)](state, command)


DECIDER = Decider(REQUEST_STREAM, initial_state, evolve, decide, REGISTRY)
