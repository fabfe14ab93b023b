"""Reporting's HTTP queries and responses (the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, WithJsonSchema

from services.reporting.uptake import Figures
from shared.contracts import PUBLISHED
from shared.core.events import Envelope, Frozen
from shared.core.types import Moment

__all__ = [
    "BalanceQuery",
    "BalanceView",
    "DeliveryList",
    "DeliveryQuery",
    "DeliveryView",
    "HistoryView",
    "NewSubscriptionView",
    "ReplayBody",
    "ReplayView",
    "StatementQuery",
    "SubscriptionBody",
    "SubscriptionList",
    "SubscriptionView",
    "UptakeQuery",
    "UptakeView",
]

EVENT_TYPES = tuple(sorted(event.event_type for event in PUBLISHED.events))


def _published(event_type: str) -> str:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"no event of type {event_type!r} is published")
    return event_type


EventType = Annotated[
    str, AfterValidator(_published), WithJsonSchema({"type": "string", "enum": list(EVENT_TYPES)})
]
DeliveryStatus = Literal["pending", "delivered", "dead"]


Clock = Literal["record", "business"]


class BalanceQuery(BaseModel):
    """``as_of``: answer from the facts of up to this moment (RFC 3339), on ``clock``."""

    model_config = ConfigDict(extra="forbid")

    as_of: Moment | None = None
    clock: Clock = Field(
        default="record",
        description="Which time as_of is of: record, the facts the ledger had recorded by "
        "then; business, the facts that happened by then, as their occurred_at says (a "
        "migration's backdated history counts from when it happened).",
    )


class BalanceView(Frozen):
    """A family's money in the period containing now (or ``as_of``)."""

    pilot_id: str
    family_id: str
    period_start: date
    period_end: date
    allocated_pence: int = Field(description="Allocations and adjustments for the period.")
    committed_pence: int = Field(description="Approved holds not yet spent or released.")
    spent_pence: int = Field(description="Purchases minus refunds.")
    available_pence: int = Field(description="allocated - committed - spent.")
    as_of: datetime
    clock: Clock = Field(description="Which time as_of is of (record or business).")


class HistoryView(Frozen):
    """Every event of the family from every service, in the order it was recorded."""

    pilot_id: str
    family_id: str
    events: tuple[Envelope, ...]


class UptakeQuery(BaseModel):
    """``suppress_small_cells``: counts of 1 to 4 families as "<5", and what rests on them
    hidden, as publication needs (:func:`services.reporting.uptake.suppress`)."""

    model_config = ConfigDict(extra="forbid")

    suppress_small_cells: bool = False


class StatementQuery(BaseModel):
    """``include_purposes``: show what each purchase was for, as the worker wrote it. The
    worker's choice, made as they show the page to the family."""

    model_config = ConfigDict(extra="forbid")

    include_purposes: bool = False


class UptakeView(Frozen):
    """A pilot's uptake and evaluation figures, overall and per arm where it randomises."""

    pilot_id: str
    as_of: datetime
    all: Figures
    arms: dict[str, Figures] = Field(description="Per arm (treatment, control) when randomised.")


class SubscriptionBody(BaseModel):
    """A case system's webhook: where to send which of the pilot's events."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(
        description="Where each event is POSTed (https in production; http on a private network).",
        max_length=2000,
    )
    event_types: tuple[EventType, ...] = Field(
        min_length=1, max_length=len(EVENT_TYPES), description="The event types to send."
    )


class SubscriptionView(Frozen):
    """A webhook subscription (its secret is shown only when it is made)."""

    subscription_id: UUID
    pilot_id: str
    url: str
    event_types: tuple[str, ...]
    created_at: datetime
    created_by: str
    removed_at: datetime | None = Field(
        description="Set once removed: nothing more is recorded or sent, and the secret is erased."
    )


class NewSubscriptionView(SubscriptionView):
    """A new subscription with its signing secret, shown this once and never again."""

    secret: str = Field(
        description="Standard Webhooks secret (whsec_ and base64): verify each delivery's "
        "webhook-signature with it."
    )


class SubscriptionList(Frozen):
    """A pilot's webhook subscriptions, oldest first."""

    subscriptions: tuple[SubscriptionView, ...]


class DeliveryQuery(BaseModel):
    """Which deliveries: after a position (0 from the start), of a status, at most ``limit``."""

    model_config = ConfigDict(extra="forbid")

    after: int = Field(default=0, ge=0, le=2**62)
    status: DeliveryStatus | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class DeliveryView(Frozen):
    """One event for one subscription: where it stands."""

    position: int = Field(
        description="Its place in the subscription's deliveries; replay starts from one."
    )
    event_id: UUID = Field(description="Also the webhook-id header: deduplicate on it.")
    event_type: str
    family_id: str | None
    status: DeliveryStatus = Field(
        description="pending (waiting, or retrying with back-off), delivered (a 2xx), or "
        "dead (still failing after the retry window, 24 hours by default)."
    )
    attempts: int
    next_attempt_at: datetime | None = Field(
        description="When a pending delivery is tried next (null: as soon as it can be)."
    )
    delivered_at: datetime | None
    last_error: str | None


class DeliveryList(Frozen):
    """A page of a subscription's deliveries, oldest first; ask again after the last one."""

    deliveries: tuple[DeliveryView, ...]


class ReplayBody(BaseModel):
    """Send again every delivery from this position on, in order."""

    model_config = ConfigDict(extra="forbid")

    from_position: int = Field(ge=1, le=2**62)


class ReplayView(Frozen):
    """How many deliveries were set to be sent again."""

    replayed: int
